"""Base, each stage and the final model of a multi-stage run, on the same held-out examples.

Every model is scored on the same examples with one decoding budget, then paired
bootstrap intervals (one index matrix for all, so every comparison is paired)
give each model's difference from the base and from the stage before it: what
each stage added or broke. The forgetting check runs per model against the base.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.config.schema import EvalConfig
from tuneforge.errors import EvalError
from tuneforge.eval.compare import bootstrap_indices
from tuneforge.eval.forgetting import ForgettingResult, compare_perplexity, document_nll, load_reference_texts, reference_source
from tuneforge.eval.plots import plot_runs
from tuneforge.eval.result import MetricComparison, fmt, fmt_ci
from tuneforge.eval.stage import EvalModel, compare_scores, prepare_examples, score_model, shared_generation


@dataclass
class ChainComparison:
    """Per model (``base`` first, then each stage): its metrics vs the base, vs the model before, its forgetting."""

    examples: int
    vs_base: dict[str, dict[str, MetricComparison]]
    vs_previous: dict[str, dict[str, MetricComparison]]
    forgetting: dict[str, ForgettingResult] = field(default_factory=dict)
    forgetting_skipped: str | None = None

    @property
    def models(self) -> list[str]:
        return list(self.vs_base)

    def to_dict(self) -> dict[str, Any]:
        return {
            "examples": self.examples,
            "vs_base": {m: {n: c.to_dict() for n, c in cs.items()} for m, cs in self.vs_base.items()},
            "vs_previous": {m: {n: c.to_dict() for n, c in cs.items()} for m, cs in self.vs_previous.items()},
            "forgetting": {m: f.to_dict() for m, f in self.forgetting.items()},
            "forgetting_skipped": self.forgetting_skipped,
        }

    def markdown(self, plot: str | None = None) -> list[str]:
        """The comparison as report lines: one table per metric, one row per model."""
        lines = [f"Held-out examples: {self.examples}, the same for every model. Δ: paired-bootstrap difference "
                 "with its 95% interval; a verdict only where the interval excludes 0.", ""]
        names = list(dict.fromkeys(n for cs in self.vs_base.values() for n in cs))
        for name in names:
            lines += [f"### {name}", "", "| model | value (95% CI) | Δ vs base | Δ vs previous stage |", "|---|---|---|---|"]
            for model in self.models:
                mc, prev = self.vs_base[model].get(name), self.vs_previous.get(model, {}).get(name)
                if mc is None:
                    continue
                lines.append(f"| {model} | {fmt(mc.tuned)} {fmt_ci(mc.tuned_ci)} | {_delta(mc)} | {_delta(prev)} |")
            lines.append("")
        if self.forgetting:
            lines += ["### Forgetting (general-text perplexity vs base)", "",
                      "| model | perplexity | rise | 95% CI of Δ ppl | flagged |", "|---|---|---|---|---|"]
            for model, f in self.forgetting.items():
                lines.append(f"| {model} | {f.tuned_perplexity:.2f} (base {f.base_perplexity:.2f}) | {f.rise:+.1%} | "
                             f"{fmt_ci(f.ci)} | {'yes' if f.flagged else 'no'} |")
            lines.append("")
        elif self.forgetting_skipped:
            lines += [f"Forgetting check skipped: {self.forgetting_skipped}", ""]
        if plot:
            lines += [f"![Each stage on the same examples]({plot})", ""]
        return lines


def _delta(mc: MetricComparison | None) -> str:
    if mc is None or mc.diff is None:
        return "-"
    verdict = mc.verdict
    return f"{fmt(mc.diff, signed=True)} {fmt_ci(mc.diff_ci)}" + (f" **{verdict}**" if verdict in ("better", "worse") else "")


def compare_chain(
    models: Sequence[tuple[str, Any]], examples: list[dict], cfg: EvalConfig, *, seed: int, max_seq_length: int,
    data_format: str | None = None, plot_path: Path | None = None,
) -> ChainComparison:
    """Score every model on ``examples`` and compare each with the base and with the model before it.

    Args:
        models: ``(label, load)`` pairs in chain order, the base first; ``load()`` returns a
            :class:`tuneforge.models.LoadedModel`. Models are loaded one at a time and dropped after scoring.
        examples: The held-out examples (canonical chat rows).
        cfg: The ``eval:`` section (metrics, labels, decoding, bootstrap, forgetting).
        plot_path: Where to draw the per-model bars (skipped without matplotlib).

    Raises:
        EvalError: the examples do not fit the metrics (see :func:`tuneforge.eval.checks.check_examples`).
    """
    if len(models) < 2:
        raise EvalError("a chain comparison needs the base and at least one stage")
    examples, _, names, references = prepare_examples(examples, cfg, None, data_format, "the first stage's test split")
    texts, skipped = None, None
    if cfg.forgetting.enabled:
        try:
            texts = load_reference_texts(cfg.forgetting)
        except EvalError as exc:
            skipped = str(exc)
    gen, scored, nll = None, {}, {}
    for label, load in models:
        loaded = load()
        side = EvalModel(label, loaded.model, loaded.tokenizer)
        gen = gen or shared_generation(cfg, [side], references, names)  # one budget, from the base's tokenizer
        scored[label] = score_model(side, examples, references, names, cfg, gen, seed=seed).scored
        if texts is not None:
            nll[label] = document_nll(loaded.model, loaded.tokenizer, texts, max_seq_length=max_seq_length)
        del loaded, side
    indices = bootstrap_indices(len(examples), cfg.bootstrap_samples, seed)
    labels = list(scored)
    base = labels[0]
    vs_base = {base: compare_scores(None, scored[base], indices)}
    vs_previous = {}
    for previous, label in zip(labels, labels[1:]):
        vs_base[label] = compare_scores(scored[base], scored[label], indices)
        vs_previous[label] = compare_scores(scored[previous], scored[label], indices)
    forgetting = {
        label: compare_perplexity(nll[base], nll[label], cfg.forgetting, source=str(reference_source(cfg.forgetting)),
                                  samples=cfg.bootstrap_samples, seed=seed)
        for label in labels[1:] if label in nll
    }
    if plot_path is not None:
        plot_runs(vs_base, plot_path)
    return ChainComparison(len(examples), vs_base, vs_previous, forgetting, skipped)
