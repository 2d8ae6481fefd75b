"""What an evaluation returns and writes to ``metrics.json``: :class:`EvalResult` and its parts.

The result round-trips through JSON (:meth:`EvalResult.to_dict` /
:meth:`EvalResult.from_dict`), which is how ``tuneforge report`` re-renders a
report without running a model again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.eval.compare import CONFIDENCE, ChangedExamples
from tuneforge.eval.forgetting import ForgettingResult

SCHEMA_VERSION = 1
LIKELIHOOD_TIMING = "label likelihood"
"""``EvalResult.timing`` key suffix of label scoring (``"tuned label likelihood"``), beside generation's ``"tuned"``."""


def _num(x: Any) -> Any:
    # JSON has no NaN; null reads back as "not available".
    return None if isinstance(x, float) and not math.isfinite(x) else x


def _pair(x: Any) -> tuple[float, float] | None:
    return (float("nan") if x[0] is None else x[0], float("nan") if x[1] is None else x[1]) if x else None


@dataclass(frozen=True)
class MetricComparison:
    """One metric: tuned value, baseline value, difference and 95% intervals (``None`` without a baseline)."""

    name: str
    tuned: float
    tuned_ci: tuple[float, float]
    higher_is_better: bool = True
    base: float | None = None
    base_ci: tuple[float, float] | None = None
    diff: float | None = None
    diff_ci: tuple[float, float] | None = None
    n: int | None = None
    """Examples the value is computed over (loss: those with an answer token; ``None`` in old reports)."""

    @property
    def verdict(self) -> str:
        """``better`` / ``worse`` when the interval of the difference excludes 0, else ``no clear change``."""
        if self.diff_ci is None or any(math.isnan(x) for x in self.diff_ci):
            return "n/a"
        lo, hi = self.diff_ci
        if lo > 0 or hi < 0:
            up = lo > 0
            return "better" if up == self.higher_is_better else "worse"
        return "no clear change"

    def to_dict(self) -> dict:
        return {
            "tuned": _num(self.tuned), "tuned_ci": [_num(x) for x in self.tuned_ci],
            "base": _num(self.base), "base_ci": [_num(x) for x in self.base_ci] if self.base_ci else None,
            "diff": _num(self.diff), "diff_ci": [_num(x) for x in self.diff_ci] if self.diff_ci else None,
            "higher_is_better": self.higher_is_better, "verdict": self.verdict, "n": self.n,
        }

    @classmethod
    def from_dict(cls, name: str, data: dict) -> "MetricComparison":
        nan = float("nan")
        return cls(
            name=name, tuned=nan if data["tuned"] is None else data["tuned"], tuned_ci=_pair(data["tuned_ci"]),
            higher_is_better=data.get("higher_is_better", True),
            base=data.get("base"), base_ci=_pair(data.get("base_ci")),
            diff=data.get("diff"), diff_ci=_pair(data.get("diff_ci")), n=data.get("n"),
        )


def many(count: int, total: int) -> bool:
    """More than a handful: over 2 rows, or over 1% of them (any cut row of a small set counts)."""
    return count > 2 or (total > 0 and count / total > 0.01)


@dataclass
class EvalResult:
    """Everything an evaluation found, and where it wrote it.

    Attributes:
        metrics: Metric name -> :class:`MetricComparison` (``rouge`` appears as rouge1/rouge2/rougeL).
        examples: Number of examples evaluated.
        tuned_name: What was evaluated (run or model name).
        baseline_name: The baseline (``base``, a run or model), or ``None``.
        changed: Examples that flipped between baseline and tuned (by accuracy or exact match).
        unparseable: Answers that matched no label, per model (classification tasks).
        forgetting: General-text perplexity before/after, or ``None`` when disabled.
        forgetting_skipped: Why the forgetting check did not run, when it did not.
        truncated: Answers that hit ``max_new_tokens`` without a stop token, per model (cut, not finished).
        prompts_truncated: Prompts longer than the model's context, cut from the left, per model.
        loss_truncated: Examples longer than the model's context, scored for loss on their last tokens.
        timing: Seconds and examples/s of generation per model (key ``tuned``, ``base``) and of
            label likelihood scoring (key ``tuned label likelihood``, ...).
        settings: The eval config, bootstrap samples and seed, data source, kind.
        paths: Files written (report.md, report.html, metrics.json, predictions.jsonl, plots).
    """

    metrics: dict[str, MetricComparison]
    examples: int
    tuned_name: str
    baseline_name: str | None = None
    changed: ChangedExamples | None = None
    unparseable: dict[str, int] = field(default_factory=dict)
    forgetting: ForgettingResult | None = None
    forgetting_skipped: str | None = None
    truncated: dict[str, int] = field(default_factory=dict)
    prompts_truncated: dict[str, int] = field(default_factory=dict)
    loss_truncated: int = 0
    timing: dict[str, dict[str, float]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def confidence(self) -> float:
        return CONFIDENCE

    def values(self, side: str = "tuned") -> dict[str, float]:
        """``{metric: value}`` of one side (``tuned`` or ``base``)."""
        return {n: getattr(mc, side) for n, mc in self.metrics.items() if getattr(mc, side) is not None}

    def summary_table(self) -> Any:
        """A ``rich`` table: metric | base | tuned | delta | 95% CI | verdict, plus the forgetting row."""
        from rich.table import Table

        table = Table(title=f"{self.tuned_name} vs {self.baseline_name or 'no baseline'} ({self.examples} examples)")
        for col in self.columns():
            table.add_column(col, justify="left" if col in ("metric", "verdict") else "right")
        for row in self.table_rows():
            table.add_row(*row)
        warnings = self.warnings()
        if warnings:  # under the numbers they qualify, so a console reader cannot miss them
            table.caption = "\n".join(f"warning: {w}" for w in warnings)
            table.caption_style = "bold yellow"
        return table

    def columns(self) -> list[str]:
        return ["metric", "n", "base", "tuned", "Δ", f"{self.confidence:.0%} CI", "verdict"]

    def table_rows(self) -> list[list[str]]:
        """The summary as rows of strings (shared by the rich table and the Markdown report)."""
        rows = [
            [n, "-" if mc.n is None else str(mc.n), fmt(mc.base), fmt(mc.tuned), fmt(mc.diff, signed=True),
             fmt_ci(mc.diff_ci), mc.verdict]
            for n, mc in self.metrics.items()
        ]
        if self.forgetting is not None:
            f = self.forgetting
            verdict = f"FLAGGED: +{f.rise:.1%} > {f.max_rise:.0%}" if f.flagged else f"ok ({f.rise:+.1%})"
            rows.append([
                "general-text perplexity", str(f.documents), fmt(f.base_perplexity), fmt(f.tuned_perplexity),
                fmt(f.tuned_perplexity - f.base_perplexity, signed=True), fmt_ci(f.ci), verdict,
            ])
        return rows

    def warnings(self) -> list[str]:
        """What makes the numbers less than they seem: answers cut by the generation limit, prompts cut to fit."""
        out = []
        limit = (self.settings.get("generation") or {}).get("max_new_tokens")
        # A derived limit already fits every reference: answers that outgrow it run past the expected answer.
        hint = ("the answers are longer than any reference; set eval.generation.max_new_tokens to let them finish"
                if self.settings.get("max_new_tokens_from") == "derived"
                else "raise eval.generation.max_new_tokens or leave it unset to derive it from the references")
        for side, count in self.truncated.items():
            if many(count, self.examples):
                out.append(f"{count} of {self.examples} {side} answers hit max_new_tokens={limit} without a stop "
                           f"token (cut, scored as given): {hint}")
        for side, count in self.prompts_truncated.items():
            if count:
                out.append(f"{count} of {self.examples} {side} prompts were longer than the model's context and "
                           "lost their first tokens")
        if self.loss_truncated:
            out.append(f"{self.loss_truncated} examples were longer than the model's context; their loss covers "
                       "their last tokens only")
        return out

    def to_dict(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "tuned": self.tuned_name,
            "baseline": self.baseline_name,
            "examples": self.examples,
            "metrics": {n: mc.to_dict() for n, mc in self.metrics.items()},
            "changed": None if self.changed is None else {
                "metric": self.changed.metric, "wrong_to_right": self.changed.wrong_to_right,
                "right_to_wrong": self.changed.right_to_wrong,
            },
            "unparseable": self.unparseable,
            "forgetting": self.forgetting.to_dict() if self.forgetting else None,
            "forgetting_skipped": self.forgetting_skipped,
            "truncated": self.truncated, "prompts_truncated": self.prompts_truncated,
            "loss_truncated": self.loss_truncated,
            "timing": self.timing,
            "settings": self.settings,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "EvalResult":
        changed = data.get("changed")
        forgetting = data.get("forgetting")
        return cls(
            metrics={n: MetricComparison.from_dict(n, d) for n, d in data["metrics"].items()},
            examples=data["examples"], tuned_name=data["tuned"], baseline_name=data.get("baseline"),
            changed=ChangedExamples(**changed) if changed else None,
            unparseable=data.get("unparseable") or {},
            forgetting=ForgettingResult.from_dict(forgetting) if forgetting else None,
            forgetting_skipped=data.get("forgetting_skipped"),
            truncated=data.get("truncated") or {}, prompts_truncated=data.get("prompts_truncated") or {},
            loss_truncated=data.get("loss_truncated") or 0,
            timing=data.get("timing") or {}, settings=data.get("settings") or {},
        )


def fmt(x: float | None, *, signed: bool = False) -> str:
    """A number for tables: 4 significant digits, ``-`` when absent."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:+.4g}" if signed else f"{x:.4g}"


def fmt_ci(ci: tuple[float, float] | None) -> str:
    return "-" if ci is None or any(math.isnan(v) for v in ci) else f"[{ci[0]:+.4g}, {ci[1]:+.4g}]"
