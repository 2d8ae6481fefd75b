"""Hyperparameter search over whole runs, on optuna.

Each trial is a real run (``tuneforge.finetune``) under ``out_dir/<study>/<name>-t<number>``; the
study lives in an optuna RDB storage (SQLite under ``out_dir/<study>/`` by default, or a shared
PostgreSQL/MySQL URL), which is what lets a killed search resume and several workers share it.
"""

from tuneforge.search.study import TuneResult, tune

__all__ = ["TuneResult", "tune"]
