"""The one exception tree of tuneforge.

Every error a user can cause derives from :class:`TuneforgeError`; the CLI
prints its message (never a traceback) and exits with code 2.

    TuneforgeError
     ├── ConfigError      a config file or override is invalid (names file, line, field)
     ├── DataError        a data file is malformed or a dataset is unusable (names file, line, field)
     ├── ModelError       a model cannot be found or loaded
     ├── EvalError        evaluation inputs do not fit the task
     ├── TrainingError    training diverged (a loss or gradient norm became inf/NaN)
     ├── ExportError      a merge or export cannot be done
     ├── RunDirError      the run directory's state forbids the request (exists, in use, differs on resume)
     └── SecurityError    keys, encryption or unsafe files
          └── AuditError  the audit log cannot be read or written (security/audit.py)
"""

from __future__ import annotations


class TuneforgeError(Exception):
    """Base class of every error tuneforge reports to a user."""


class ConfigError(TuneforgeError):
    """A config is invalid. ``problems`` holds every problem found, one per line."""

    def __init__(self, problems: list[str] | str, source: str | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        head = f"invalid config {source}" if source else "invalid config"
        if len(self.problems) == 1 and source is None:  # one problem that names its file: one line
            super().__init__(f"{head}: {self.problems[0]}")
        else:
            super().__init__(head + ":\n" + "\n".join(f"  - {p}" for p in self.problems))


class DataError(TuneforgeError):
    """A data file or dataset cannot be used as it is."""


class ModelError(TuneforgeError):
    """A model or tokenizer cannot be resolved or loaded."""


class EvalError(TuneforgeError):
    """Evaluation inputs do not fit together (format, references, labels)."""


class TrainingError(TuneforgeError):
    """Training cannot go on: ``what`` (loss, grad_norm, eval_loss) was ``value`` at ``step``.

    Raised before the optimizer applies the step, so the weights of a diverged run are
    never saved as if it had finished.
    """

    def __init__(self, what: str, value: float, step: int, learning_rate: float | None = None):
        self.what, self.value, self.step = what, value, step
        lr = f" (it is {learning_rate:g})" if learning_rate is not None else ""
        super().__init__(
            f"training diverged at step {step}: {what} is {value} (not finite); the run stopped and no weights "
            f"were saved. Lower training.learning_rate{lr}, e.g. by 10x, or check the data for extreme values"
        )


class ExportError(TuneforgeError):
    """Merging or exporting a model failed."""


class RunDirError(TuneforgeError):
    """The run directory's state forbids what was asked: it is in use, holds a different run, or has
    nothing to resume. The config itself may be perfectly valid, hence not a :class:`ConfigError`."""


class SecurityError(TuneforgeError):
    """A key, encrypted file or model file failed a security check."""
