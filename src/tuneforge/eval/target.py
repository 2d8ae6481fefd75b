"""Evaluate what a user points at: a run directory or a model, with command-line style overrides.

``evaluate()`` is the Python function behind ``tuneforge eval``: it finds the
run's config, test split and training log, applies the overrides, loads the
model and calls :func:`tuneforge.eval.run`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tuneforge.config.schema import EvalConfig
from tuneforge.errors import DataError, EvalError
from tuneforge.eval.checks import check_metric_names, example_kind
from tuneforge.eval.result import EvalResult
from tuneforge.eval.stage import NO_TEST_ROWS, run
from tuneforge.rundir import RunDir
from tuneforge.security.at_rest import Sealer, read_text

KEEP = "config"
"""``baseline`` default of :func:`evaluate`: keep what the run's config (or the default config) says."""


def _training_format(cfg, run_dir: RunDir) -> str | None:
    formats = {src.format for src in cfg.data.train}
    if len(formats) == 1 and (fmt := formats.pop()) != "auto":
        return fmt
    # Auto-detected: the run's own test split shows what the data turned into.
    if run_dir.test_split.is_file() and read_text(run_dir.test_split).strip():
        held_out = _held_out(run_dir.test_split, cfg.training.objective)
        if held_out:
            return "text" if example_kind(held_out[0]) == "text" else "chat"
    return None


def _held_out(path: Path, objective: str) -> list[dict]:
    """A run's stored split; a preference run's rows are scored on their prompts with the chosen answer as reference."""
    from tuneforge.data import load_examples
    from tuneforge.data.preferences import reference_examples

    return reference_examples(load_examples(str(path), objective=objective))


def load_test_file(path: str | Path, data_cfg: Any | None = None) -> list[dict]:
    """Read a test file the way training read its data, so prompts render exactly as in training.

    With a run's ``data:`` section, the file gets the run's ``field_map`` and format (those of
    ``data.test`` sources first, then ``data.train``; the first that fits the file is used, then
    plain auto-detection), its ``system_prompt`` and its text cleaning (unicode, whitespace, PII
    redaction). No row is dropped: a row cleaning would drop is evaluated as written.

    Raises:
        DataError: the file cannot be read in any of those ways (the first error is raised).
    """
    from tuneforge.config.schema import DatasetSource
    from tuneforge.data import Kept, clean_example, load_examples

    if data_cfg is None:
        return load_examples(str(path))
    ways = [(src.format, src.field_map) for src in (*data_cfg.test, *data_cfg.train) if src.field_map]
    ways += [(src.format, {}) for src in (*data_cfg.test, *data_cfg.train)] + [("auto", {})]
    first_error: DataError | None = None
    for fmt, field_map in dict.fromkeys((f, tuple(m.items())) for f, m in ways):
        try:
            examples = load_examples(DatasetSource(path=str(path), format=fmt, field_map=dict(field_map)),
                                     system_prompt=data_cfg.system_prompt)
            break
        except DataError as exc:
            first_error = first_error or exc
    else:
        raise first_error
    cleaned = (clean_example(ex, data_cfg.clean) for ex in examples)
    return [c.example if isinstance(c, Kept) else ex for c, ex in zip(cleaned, examples)]


def evaluate(
    target: str | Path,
    *,
    data: str | Path | None = None,
    baseline: str | None = KEEP,
    metrics: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    max_examples: int | None = None,
    output: str | Path | None = None,
    trust_remote_code: bool = False,
) -> EvalResult:
    """Evaluate a run or a model on a test set and write the report.

    Args:
        target: A run directory, an adapter folder, a model folder, a ``.gguf`` or an alias.
        data: Test file (any format ``tuneforge.data.load_examples`` reads), read with the run's
            field_map, system prompt and cleaning (:func:`load_test_file`). Default: the run's test split.
        baseline: ``"base"``, ``"none"``/``None``, or a run/model to compare with; default: the config's.
        metrics: Metric names overriding ``eval.metrics``.
        labels: Label set overriding ``eval.labels``.
        max_examples: Evaluate at most this many examples.
        output: Report folder; default ``RUN/eval`` for a run, else ``./eval-<name>``.
        trust_remote_code: Let the tuned model and a model baseline run the Python code they ship
            (``auto_map``); never taken from a stored run's config.

    Raises:
        EvalError: no test data, or inputs that do not fit (see :func:`tuneforge.eval.run`).

    Example:
        >>> evaluate("runs/tickets", baseline="base", max_examples=100).summary_table()
    """
    from tuneforge.models import load, resolve_target

    target = Path(target)
    run_dir = resolve_target(target).run
    cfg, data_format, seed, max_seq_length, metrics_log, run_cfg = EvalConfig(), None, 42, 1024, None, None
    if run_dir is not None:
        from tuneforge.config.load import load_config

        run_cfg = load_config(run_dir.config)
        cfg, seed, max_seq_length = run_cfg.eval, run_cfg.training.seed, run_cfg.training.max_seq_length
        data_format = _training_format(run_cfg, run_dir)
        metrics_log = run_dir.metrics if run_dir.metrics.is_file() else None

    updates: dict = {}
    if metrics is not None:
        updates["metrics"] = check_metric_names(metrics)
    if labels is not None:
        updates["labels"] = list(labels)
    if max_examples is not None:
        updates["max_examples"] = max_examples
    if baseline != KEEP:
        updates["baseline"] = None if baseline in (None, "none") else baseline
    cfg = EvalConfig.model_validate({**cfg.model_dump(), **updates})

    if data is None:
        if run_dir is None:
            raise EvalError(f"{target} is not a run directory, so there is no test split: give --data FILE")
        if not run_dir.test_split.is_file():
            raise EvalError(
                f"run {target} has no test split ({run_dir.test_split} is missing; data.split.test was 0?): "
                "give --data FILE"
            )
        data = run_dir.test_split
        if not read_text(data).strip():
            raise EvalError(f"run {target} has an empty test split ({data}): {NO_TEST_ROWS}; or give --data FILE")
        # written by training: already mapped, prompted and cleaned
        examples = _held_out(data, run_cfg.training.objective if run_cfg is not None else "sft")
    else:
        examples = load_test_file(data, run_cfg.data if run_cfg is not None else None)
    tuned = load(target, trust_remote_code=trust_remote_code)
    other = None
    if cfg.baseline not in (None, "base"):  # loaded here so the flag reaches it too
        other = load(cfg.baseline, trust_remote_code=trust_remote_code)
    name = run_dir.root.name if run_dir else target.name or str(target)
    out_dir = Path(output) if output else run_dir.eval if run_dir else Path(f"eval-{name}")
    # An encrypted run's predictions stay encrypted wherever the report goes.
    sealer = Sealer.for_run(run_dir.root) if run_dir else None
    in_run = run_dir is not None and out_dir.resolve() == run_dir.eval.resolve()
    progress = None
    if in_run:  # the dashboard's run page shows it, and follows it while this process lives
        pid = os.getpid()
        progress = lambda p: sealer.write_text(run_dir.eval_progress, json.dumps({**p, "pid": pid}))  # noqa: E731
    result = run(
        cfg, tuned=tuned, examples=examples, out_dir=out_dir, baseline=other, data_format=data_format,
        metrics_log=metrics_log, seed=seed, max_seq_length=max_seq_length, data_source=str(data), sealer=sealer,
        progress=progress,
    )
    if in_run:  # the run's model card quotes the eval table: keep it the one just written
        from tuneforge.export.card import build_model_card

        sealer.write_text(run_dir.root / "README.md", str(build_model_card(run_dir.root, run_dir.root)))
    return result
