"""The one exception tree of tuneforge.

Every error a user can cause derives from :class:`TuneforgeError`; the CLI
prints its message (never a traceback) and exits with code 2.

    TuneforgeError
     ├── ConfigError      a config file or override is invalid (names file, line, field)
     ├── DataError        a data file is malformed or a dataset is unusable (names file, line, field)
     ├── ModelError       a model cannot be found or loaded
     ├── EvalError        evaluation inputs do not fit the task
     ├── ExportError      a merge or export cannot be done
     ├── RunDirError      the run directory's state forbids the request (exists, in use, differs on resume)
     └── SecurityError    keys, encryption or unsafe files
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
        super().__init__(head + ":\n" + "\n".join(f"  - {p}" for p in self.problems))


class DataError(TuneforgeError):
    """A data file or dataset cannot be used as it is."""


class ModelError(TuneforgeError):
    """A model or tokenizer cannot be resolved or loaded."""


class EvalError(TuneforgeError):
    """Evaluation inputs do not fit together (format, references, labels)."""


class ExportError(TuneforgeError):
    """Merging or exporting a model failed."""


class RunDirError(TuneforgeError):
    """The run directory's state forbids what was asked: it is in use, holds a different run, or has
    nothing to resume. The config itself may be perfectly valid, hence not a :class:`ConfigError`."""


class SecurityError(TuneforgeError):
    """A key, encrypted file or model file failed a security check."""
