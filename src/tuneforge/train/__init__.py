"""Training: the run context, the recipe registry, shared steps, the Trainer subclass, callbacks, the manifest."""

from tuneforge.train.pipeline import finetune
from tuneforge.train.result import FinetuneResult

__all__ = ["FinetuneResult", "finetune"]
