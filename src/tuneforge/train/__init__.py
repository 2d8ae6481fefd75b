"""Training: the fine-tuning pipeline, the Trainer subclass, callbacks and the run manifest."""

from tuneforge.train.pipeline import FinetuneResult, finetune

__all__ = ["FinetuneResult", "finetune"]
