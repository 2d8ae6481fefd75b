"""Run folders written file by file, in the shapes tuneforge writes them (for the dashboard's tests and bench).

The eval files come from the real :class:`~tuneforge.eval.result.EvalResult` and
:class:`~tuneforge.data.report.DataReport` serialisers, so a change of their format shows up here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tuneforge.data.report import DataReport
from tuneforge.eval.compare import ChangedExamples
from tuneforge.eval.result import EvalResult, MetricComparison

LABELS = ["billing", "technical_issue", "shipping", "refund"]


def prediction(i: int) -> dict:
    """Example ``i``: base and tuned right or wrong in a repeating pattern; every 7th base answer unparseable."""
    reference = LABELS[i % len(LABELS)]
    base_right, tuned_right = i % 3 == 0, i % 5 != 1
    base_label = None if i % 7 == 6 else (reference if base_right else LABELS[(i + 1) % len(LABELS)])
    return {
        "index": i,
        "prompt": [{"role": "system", "content": "Route the ticket."},
                   {"role": "user", "content": f"Ticket {i}: my order {1000 + i} <b>needs</b> help"}],
        "reference": reference,
        "base_output": f"This ticket is about {base_label or 'something'}.", "base_truncated": False,
        "base_label": base_label, "base_scores": {"accuracy": float(base_right and base_label is not None)},
        "tuned_output": reference if tuned_right else LABELS[(i + 2) % len(LABELS)], "tuned_truncated": False,
        "tuned_label": reference if tuned_right else LABELS[(i + 2) % len(LABELS)],
        "tuned_scores": {"accuracy": float(tuned_right)},
    }


def write_run(
    runs_dir: Path, name: str, *, state: str | None = "finished", predictions: int = 40, metrics_steps: int = 10,
    error: str | None = None, pid: int | None = None, loss_scale: float = 3.0,
) -> Path:
    """A run folder with config, data report, metrics.jsonl, eval/metrics.json, predictions and (unless
    ``state`` is None, an old run) status.json; a ``finished`` or old run also gets manifest.json."""
    run = Path(runs_dir) / name
    (run / "eval").mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(
        f"name: {name}\nmodel:\n  name_or_path: tiny-random\nmethod:\n  name: lora\n", encoding="utf-8")
    if state is not None:
        status = {"state": state, "objective": "sft", "pid": pid or os.getpid(), "updated": 0, "error": error}
        (run / "status.json").write_text(json.dumps(status), encoding="utf-8")
    if state in (None, "finished"):
        (run / "manifest.json").write_text(json.dumps({"model": "tiny-random", "method": "lora", "wall_seconds": 12.5}))
    report = DataReport()
    source = report.source("tickets.jsonl")
    source.rows_read, source.rows_kept = 120, 110
    for line in range(10):
        report.drop("tickets.jsonl", "duplicate", f"tickets.jsonl:{line + 3}", f"duplicate row {line}")
    report.write(run / "data_report.json")
    append_metrics(run, range(1, metrics_steps + 1), loss_scale)
    rows = [prediction(i) for i in range(predictions)]
    with open(run / "eval" / "predictions.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    base = [r["base_scores"]["accuracy"] for r in rows]
    tuned = [r["tuned_scores"]["accuracy"] for r in rows]
    changed = ChangedExamples(
        "accuracy", [i for i in range(len(rows)) if tuned[i] > base[i]], [i for i in range(len(rows)) if tuned[i] < base[i]])
    mean = lambda xs: sum(xs) / max(1, len(xs))  # noqa: E731
    result = EvalResult(
        metrics={"accuracy": MetricComparison(
            "accuracy", mean(tuned), (0.7, 0.9), base=mean(base), base_ci=(0.1, 0.3),
            diff=mean(tuned) - mean(base), diff_ci=(0.4, 0.6), n=len(rows))},
        examples=len(rows), tuned_name=name, baseline_name="base", changed=changed,
        unparseable={"base": sum(r["base_label"] is None for r in rows), "tuned": 0},
    )
    (run / "eval" / "metrics.json").write_text(json.dumps(result.to_dict()), encoding="utf-8")
    return run


def append_metrics(run: Path, steps, loss_scale: float = 3.0) -> None:
    """Append one training log line per step (and a validation line every 5th), as MetricsLogCallback does;
    the loss falls as ``loss_scale / step``."""
    with open(Path(run) / "metrics.jsonl", "a", encoding="utf-8") as f:
        for step in steps:
            f.write(json.dumps({"step": step, "epoch": step / 100, "loss": loss_scale / step, "learning_rate": 2e-4 * (1 - step / 200),
                                "tokens_per_second": 300.0 + step}) + "\n")
            if step % 5 == 0:
                f.write(json.dumps({"step": step, "epoch": step / 100, "eval_loss": loss_scale * 1.07 / step}) + "\n")
