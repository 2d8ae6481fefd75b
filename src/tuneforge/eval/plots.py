"""PNG plots for the report: training/validation loss curves, base-vs-tuned bars, runs side by side.

matplotlib runs on the Agg backend (no display needed) through an explicit
``Figure``, so no global pyplot state is touched. It is an optional extra
(``tuneforge[plots]``): without it every plot function returns ``None`` and the
report is written without images, saying why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
import importlib.util
import logging
from pathlib import Path

from tuneforge.eval.jsonl import parse_json_lines
from tuneforge.eval.result import MetricComparison


log = logging.getLogger("tuneforge.eval")

NO_PLOTS = "plots skipped: matplotlib is not installed (pip install 'tuneforge[plots]')"


def plots_available() -> bool:
    """Whether matplotlib (the ``plots`` extra) is installed."""
    return importlib.util.find_spec("matplotlib") is not None


def _figure(width: float, height: float):
    """A Figure on the Agg canvas, or ``None`` (logged) when matplotlib is missing."""
    if not plots_available():
        log.warning(NO_PLOTS)
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def read_metrics_log(path: Path) -> list[dict]:
    """The training log ``metrics.jsonl``: one JSON object per line, each with ``step``.

    Raises:
        EvalError: a line is not a JSON object with an integer ``step`` (names file and line).
    """
    return parse_json_lines(Path(path).read_text(encoding="utf-8"), path, require={"step": int})


def plot_loss_curves(rows: Sequence[dict], path: Path) -> Path | None:
    """Training ``loss`` and validation ``eval_loss`` against step; ``None`` when the log has neither."""
    series = {
        key: [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        for key in ("loss", "eval_loss")
    }
    if not any(series.values()):
        return None
    fig = _figure(7, 4)
    if fig is None:
        return None
    ax = fig.add_subplot()
    for key, label, style in (("loss", "training loss", "-"), ("eval_loss", "validation loss", "o-")):
        if series[key]:
            steps, values = zip(*series[key])
            ax.plot(steps, values, style, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Loss curves")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")
    return Path(path)


def _err(value: float, ci: tuple[float, float] | None) -> tuple[float, float]:
    # matplotlib wants distances below/above the bar, never negative.
    if ci is None or any(math.isnan(v) for v in ci) or math.isnan(value):
        return 0.0, 0.0
    return max(value - ci[0], 0.0), max(ci[1] - value, 0.0)


def plot_metric_bars(metrics: Mapping[str, MetricComparison], path: Path, *, base_label: str = "base") -> Path | None:
    """One panel per metric (scales differ: loss vs accuracy vs BLEU): base and tuned bars with 95% CI error bars."""
    if not metrics:
        return None
    cols = min(len(metrics), 4)
    rows = math.ceil(len(metrics) / cols)
    fig = _figure(3.2 * cols, 3.0 * rows)
    if fig is None:
        return None
    for k, (name, mc) in enumerate(metrics.items()):
        ax = fig.add_subplot(rows, cols, k + 1)
        bars = [(base_label, mc.base, mc.base_ci, "#9aa5b1")] if mc.base is not None else []
        bars.append(("tuned", mc.tuned, mc.tuned_ci, "#2f6fdf"))
        for x, (label, value, ci, color) in enumerate(bars):
            lo, hi = _err(value, ci)
            ax.bar(x, value, color=color, yerr=[[lo], [hi]], capsize=6)
        ax.set_xticks(range(len(bars)), [b[0] for b in bars])
        arrow = "higher is better" if mc.higher_is_better else "lower is better"
        ax.set_title(f"{name}\n({arrow})", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Base vs tuned (error bars: 95% bootstrap CI)")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return Path(path)


def plot_runs(runs: Mapping[str, Mapping[str, MetricComparison]], path: Path) -> Path | None:
    """Several runs side by side: one panel per metric, one bar per run (tuned value, 95% CI)."""
    names = list(dict.fromkeys(n for metrics in runs.values() for n in metrics))
    if not names:
        return None
    cols = min(len(names), 3)
    rows = math.ceil(len(names) / cols)
    fig = _figure(max(3.5, 1.2 * len(runs)) * cols, 3.4 * rows)
    if fig is None:
        return None
    for k, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, k + 1)
        for x, (run, metrics) in enumerate(runs.items()):
            mc = metrics.get(name)
            if mc is not None:
                lo, hi = _err(mc.tuned, mc.tuned_ci)
                ax.bar(x, mc.tuned, yerr=[[lo], [hi]], capsize=5, color=f"C{x % 10}")
        ax.set_xticks(range(len(runs)), list(runs), rotation=20, ha="right", fontsize=8)
        ax.set_title(name, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Runs compared (error bars: 95% bootstrap CI)")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return Path(path)
