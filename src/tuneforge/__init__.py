"""tuneforge: fine-tune large language models end to end.

The whole path is one call, :func:`finetune`; each stage is its own package
(``tuneforge.data``, ``tuneforge.train``, ``tuneforge.eval``, ``tuneforge.export``,
``tuneforge.serve``) with a ``run()``-style entry point.

Example:
    >>> from tuneforge import finetune, load_config
    >>> result = finetune(load_config("examples/quickstart.yaml"))
"""

from tuneforge.config import RunConfig, load_config
from tuneforge.errors import (
    ConfigError,
    DataError,
    EvalError,
    ExportError,
    ModelError,
    RunDirError,
    SecurityError,
    TrainingError,
    TuneforgeError,
)

__version__ = "0.1.0"


def finetune(config, *, resume: bool = False, console=None, callbacks=()):
    """Run the whole path for a config: data, training, evaluation. See :func:`tuneforge.train.finetune`.

    The same arguments as :func:`tuneforge.train.finetune` (``console``: where progress and tables go;
    ``callbacks``: extra ``transformers.TrainerCallback`` objects), so code written against either works.
    """
    from tuneforge.train.pipeline import finetune as _finetune

    return _finetune(config, resume=resume, console=console, callbacks=callbacks)


__all__ = [
    "ConfigError", "DataError", "EvalError", "ExportError", "ModelError", "RunConfig", "RunDirError", "SecurityError",
    "TrainingError", "TuneforgeError", "__version__", "finetune", "load_config",
]
