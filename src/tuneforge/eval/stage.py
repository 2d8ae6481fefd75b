"""The evaluation stage: score the tuned model and its baseline on the same examples, then write the report.

``run()`` reads top to bottom: check inputs → pick models → generate and score
each model → forgetting check → paired bootstrap → changed examples → files.
``score()`` is the light path the trainer calls for validation metrics.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.config.schema import EvalConfig, GenerationConfig
from tuneforge.errors import EvalError
from tuneforge.eval.checks import check_examples, check_references, resolve_metrics
from tuneforge.eval.compare import bootstrap_indices, changed_examples, paired_bootstrap, single_bootstrap
from tuneforge.eval.forgetting import compare_perplexity, document_nll, load_reference_texts, reference_source
from tuneforge.eval.generate import Generations, generate_answers
from tuneforge.eval.length import context_length, resolve_generation
from tuneforge.eval.likelihood import LabelScores, score_labels
from tuneforge.eval.loss import answer_nll
from tuneforge.eval.report import save_outputs
from tuneforge.eval.result import LIKELIHOOD_TIMING, EvalResult, MetricComparison
from tuneforge.eval.scoring import LIKELIHOOD_METRICS, LOSS_METRICS, Scored, score_outputs

log = logging.getLogger("tuneforge.eval")

UNGENERATED = (*LOSS_METRICS, *LIKELIHOOD_METRICS)
"""Metrics scored by forward passes alone: asking only for these generates nothing."""

NO_TEST_ROWS = "eval skipped: no test rows (set data.test or data.split.test)"
"""What a run with eval enabled but an empty test split says (console and manifest ``eval_skipped``)."""


@dataclass(frozen=True)
class EvalModel:
    """A model as evaluated: the base of a PEFT model is the same object with its adapter switched off."""

    label: str
    model: Any
    tokenizer: Any
    adapter_off: bool = False

    def active(self) -> contextlib.AbstractContextManager:
        return self.model.disable_adapter() if self.adapter_off else contextlib.nullcontext()


def _is_peft(model: Any) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def _name(loaded: Any) -> str:
    if loaded.run is not None:
        return loaded.run.root.name
    return Path(str(loaded.adapter_path or loaded.base_path)).name


def _base_of(tuned: Any) -> EvalModel | None:
    """The starting model of ``tuned``: its adapter switched off, or loaded from ``base_path``.

    A PEFT model is evaluated twice in one copy (``disable_adapter()``): cheaper than a second load.
    A plain model with no run and no adapter is its own base, so there is nothing to compare.
    """
    if _is_peft(tuned.model):
        return EvalModel("base", tuned.model, tuned.tokenizer, adapter_off=True)
    if tuned.run is None and tuned.adapter_path is None:
        return None
    from tuneforge.models import load_model

    model, tokenizer, _ = load_model(tuned.base_path)
    return EvalModel("base", model, tokenizer)


def _baseline(cfg: EvalConfig, tuned: Any, given: Any | None) -> EvalModel | None:
    if given is not None:
        return EvalModel(cfg.baseline if cfg.baseline == "base" else _name(given), given.model, given.tokenizer)
    if cfg.baseline is None:
        return None
    if cfg.baseline == "base":
        base = _base_of(tuned)
        if base is None:
            log.warning("%s is a plain model, not a fine-tune: no base to compare with", _name(tuned))
        return base
    from tuneforge.models import load

    other = load(cfg.baseline)
    return EvalModel(_name(other), other.model, other.tokenizer)


@dataclass(frozen=True)
class _Outputs:
    """One model's scores and what produced them."""

    scored: Scored
    generations: Generations | None
    loss_cut: int = 0
    likelihood: LabelScores | None = None


class _Progress:
    """Answers generated so far over every model, sent to the caller's ``progress`` as one dict:
    ``{"phase", "done", "total", "examples", "models", "elapsed_s"}`` (the dashboard shows it with an ETA)."""

    def __init__(self, callback: Callable[[dict[str, Any]], None], examples: int, models: int):
        self.callback, self.examples, self.models, self.started = callback, examples, models, time.perf_counter()
        self.report("starting", 0)

    def report(self, phase: str, done: int) -> None:
        elapsed = round(time.perf_counter() - self.started, 2)
        self.callback({"phase": phase, "done": done, "total": self.examples * self.models, "examples": self.examples,
                       "models": self.models, "elapsed_s": elapsed})

    def side(self, offset: int, label: str) -> Callable[[int, int], None]:
        return lambda done, _: self.report(f"generating ({label})", offset + done)


def score_model(
    side: EvalModel, examples: Sequence[dict], references: list[str] | None, names: list[str], cfg: EvalConfig,
    gen: GenerationConfig, *, seed: int, progress: Callable[[int, int], None] | None = None,
) -> _Outputs:
    generations, nll, cut, likelihood = None, None, 0, None
    with side.active():
        if any(n not in UNGENERATED for n in names):
            generations = generate_answers(side.model, side.tokenizer, examples, gen, seed=seed, progress=progress)
        if any(n in LIKELIHOOD_METRICS for n in names):
            likelihood = score_labels(side.model, side.tokenizer, examples, cfg.labels)
        if any(n in LOSS_METRICS for n in names):
            # The model's context, not training's max_seq_length: every test row is scored.
            nll, cut = answer_nll(side.model, side.tokenizer, examples, limit=context_length(side.model))
    texts = generations.texts if generations else None
    likely = likelihood.predicted if likelihood else None
    return _Outputs(score_outputs(names, texts, references, cfg, nll=nll, likely=likely), generations, cut, likelihood)


def shared_generation(cfg: EvalConfig, sides: Sequence[EvalModel | None], references: list[str] | None,
                names: Sequence[str]) -> GenerationConfig:
    """One decoding budget for every model, so they are compared on equal terms.

    A derived budget is the largest over the models' tokenizers (a baseline may tokenize differently).
    """
    if cfg.generation.max_new_tokens is not None or all(n in UNGENERATED for n in names):
        return cfg.generation
    resolved = [resolve_generation(cfg.generation, s.tokenizer, references, cfg.labels) for s in sides if s is not None]
    return max(resolved, key=lambda g: g.max_new_tokens)


def prepare_examples(examples: Sequence[dict], cfg: EvalConfig, metrics: Sequence[str] | None, data_format: str | None,
             source: str) -> tuple[list[dict], str, list[str], list[str] | None]:
    """The examples to evaluate (first ``cfg.max_examples``), checked: ``(examples, kind, metric names, references)``."""
    examples = list(examples[: cfg.max_examples] if cfg.max_examples else examples)
    kind = check_examples(examples, data_format=data_format, source=source)
    references = None
    if kind == "chat":
        from tuneforge.data import reference

        references = [reference(ex) for ex in examples]
    names = resolve_metrics(metrics if metrics is not None else cfg.metrics, labels=cfg.labels, kind=kind,
                            references=references)
    if references is not None:
        check_references(examples, references, cfg, names, source)
    return examples, kind, names, references


def score(
    model: Any, tokenizer: Any, examples: list[dict], cfg: EvalConfig, *, metrics: list[str] | None = None,
    max_seq_length: int = 1024, seed: int = 42,
) -> dict[str, float]:
    """Aggregate metrics of one model on examples: the trainer's validation metrics.

    Uses ``cfg.metrics`` (or ``metrics``), ``labels``, ``normalize``, ``generation`` and
    ``max_examples`` (so validation during training can be capped); no baseline, no files.
    An unset ``generation.max_new_tokens`` is derived from these examples' references.
    ``max_seq_length`` is kept for callers; loss covers each example up to the model's context.
    Keys are metric names without the ``eval_`` prefix; ``rouge`` adds ``rouge1``,
    ``rouge2``, ``rougeL`` and ``rouge`` (= ``rougeL``) so ``early_stopping.metric: eval_rouge`` works.

    Raises:
        EvalError: the examples or metric names do not fit (see :func:`tuneforge.eval.checks.check_examples`).

    Example:
        >>> score(model, tokenizer, val_examples, cfg.eval, metrics=["exact_match"])
        {'exact_match': 0.42}
    """
    examples, _, names, references = prepare_examples(examples, cfg, metrics, None, "the validation set")
    side = EvalModel("tuned", model, tokenizer)
    gen = shared_generation(cfg, [side], references, names)
    values = score_model(side, examples, references, names, cfg, gen, seed=seed).scored.values()
    if "rougeL" in values:
        values["rouge"] = values["rougeL"]
    return values


def run(
    cfg: EvalConfig, *, tuned: Any, examples: list[dict], out_dir: Path, baseline: Any | None = None,
    data_format: str | None = None, metrics_log: Path | None = None, seed: int = 42, max_seq_length: int = 1024,
    data_source: str | None = None, progress: Callable[[dict[str, Any]], None] | None = None, sealer: Any = None,
) -> EvalResult:
    """Evaluate a tuned model against its baseline and write the report into ``out_dir``.

    ``cfg.enabled`` is the trainer's switch (evaluate at the end of ``tuneforge train``);
    a direct call always evaluates. ``cfg.max_examples`` keeps the first N examples.

    Args:
        cfg: The ``eval:`` section (metrics, labels, normalisation, baseline, decoding, bootstrap, forgetting).
        tuned: A :class:`tuneforge.models.LoadedModel`. A PEFT model's base is evaluated by
            switching its adapter off (no second copy); a full fine-tune must carry ``run``
            (or ``adapter_path``) so its base is loaded from ``base_path``.
        examples: Canonical test examples (chat with a final assistant answer, or raw text).
        out_dir: Where report.md, report.html, metrics.json, predictions.jsonl and the plots go.
        baseline: A loaded baseline model; ``None`` resolves ``cfg.baseline`` (``base``, a model, or null).
        data_format: The training data format, so a test set of another kind is refused.
        metrics_log: The training ``metrics.jsonl`` for the loss-curve plot.
        seed: Seeds sampling and the bootstrap.
        max_seq_length: Training's longest sequence, recorded in the report and used by the forgetting
            check. Test examples are never dropped for it: generation and loss use the model's context
            (a longer prompt is cut from the left and counted).
        data_source: A name for the examples' origin, shown in the report.
        progress: Called as answers are generated with ``{"phase", "done", "total", "examples", "models",
            "elapsed_s"}``; ``done`` and ``total`` count every model's answers (the tuned model's, then the baseline's).
        sealer: Writes the report files (a :class:`tuneforge.security.Sealer`; default: that of the
            run ``out_dir`` is in, encrypting when the run is encrypted).

    Returns:
        The :class:`EvalResult` (also written to ``out_dir/metrics.json``).

    Raises:
        EvalError: inputs that do not fit (empty set, wrong format, missing references, labels, metric names).
    """
    source = data_source or "the test set"
    examples, kind, names, references = prepare_examples(examples, cfg, None, data_format, source)
    texts = load_reference_texts(cfg.forgetting) if cfg.forgetting.enabled and cfg.forgetting.data else None
    tuned_side = EvalModel(_name(tuned), tuned.model, tuned.tokenizer)
    base_side = _baseline(cfg, tuned, baseline)

    gen = shared_generation(cfg, [tuned_side, base_side], references, names)
    models = 1 + (base_side is not None)
    tracker = _Progress(progress, len(examples), models) if progress and any(n not in UNGENERATED for n in names) else None
    outputs = {"tuned": score_model(tuned_side, examples, references, names, cfg, gen, seed=seed,
                                     progress=tracker and tracker.side(0, tuned_side.label))}
    if base_side is not None:
        outputs["base"] = score_model(base_side, examples, references, names, cfg, gen, seed=seed,
                                       progress=tracker and tracker.side(len(examples), base_side.label))
    tuned_scored, base_scored = outputs["tuned"].scored, outputs["base"].scored if "base" in outputs else None

    forgetting, skipped = None, None
    if cfg.forgetting.enabled:
        forgetting, skipped = _forgetting(cfg, tuned, tuned_side, base_side, texts, seed, max_seq_length)

    comparisons = compare_scores(base_scored, tuned_scored, bootstrap_indices(len(examples), cfg.bootstrap_samples, seed))
    changed = None
    by = next((n for n in ("accuracy", "exact_match") if n in tuned_scored.metrics), None)
    if base_scored is not None and by:
        changed = changed_examples(by, base_scored.metrics[by].per_example, tuned_scored.metrics[by].per_example)
    loss_skipped = (
        int((tuned_scored.metrics["loss"].stats[:, 1] == 0).sum()) if "loss" in tuned_scored.metrics else None
    )
    generated = {side: o.generations for side, o in outputs.items() if o.generations is not None}

    result = EvalResult(
        metrics=comparisons, examples=len(examples), tuned_name=tuned_side.label,
        baseline_name=base_side.label if base_side else None, changed=changed,
        unparseable={k: o.scored.unparseable for k, o in sorted(outputs.items()) if o.scored.labels is not None},
        forgetting=forgetting, forgetting_skipped=skipped,
        truncated={k: sum(g.truncated) for k, g in sorted(generated.items())},
        prompts_truncated={k: sum(g.prompt_truncated) for k, g in sorted(generated.items())},
        loss_truncated=outputs["tuned"].loss_cut,
        timing=_timing(outputs),
        settings={
            "data": source, "kind": kind, "metrics": names, "labels": cfg.labels, "normalize": list(cfg.normalize),
            "json_fields": cfg.json_fields, "generation": gen.model_dump(), "seed": seed,
            "max_new_tokens_from": "config" if cfg.generation.max_new_tokens is not None else "derived",
            "bootstrap_samples": cfg.bootstrap_samples, "max_seq_length": max_seq_length,
            "loss_examples_skipped": loss_skipped,
        },
    )
    rows = _prediction_rows(examples, kind, references, outputs, cfg.labels)
    return save_outputs(result, rows, Path(out_dir), metrics_log=metrics_log, sealer=sealer)


def _timing(outputs: dict[str, _Outputs]) -> dict[str, dict[str, float]]:
    """Seconds and examples/s per model: generation under the model's key, label scoring under ``KEY label likelihood``."""
    timing = {}
    for side, o in outputs.items():
        if o.generations is not None:
            g = o.generations
            timing[side] = {"seconds": g.seconds, "examples_per_second": g.examples_per_second, "new_tokens": g.new_tokens}
        if o.likelihood is not None:
            timing[f"{side} {LIKELIHOOD_TIMING}"] = {"seconds": o.likelihood.seconds,
                                                    "examples_per_second": o.likelihood.examples_per_second}
    return timing


def compare_scores(base: Scored | None, tuned: Scored, indices: Any) -> dict[str, MetricComparison]:
    """Each metric of ``tuned`` (and of ``base``, and the paired difference) with bootstrap CIs over ``indices``."""
    out = {}
    for name, tv in tuned.metrics.items():
        n = _count(tv)
        if base is None:
            out[name] = MetricComparison(name, tv.value, single_bootstrap(tv, indices), tv.higher_is_better, n=n)
        else:
            p = paired_bootstrap(base.metrics[name], tv, indices)
            out[name] = MetricComparison(name, p.tuned, p.tuned_ci, tv.higher_is_better, p.base, p.base_ci, p.diff,
                                         p.diff_ci, n=n)
    return out


def _count(values: Any) -> int:
    """Examples behind a metric: for loss, those with an answer token scored; otherwise all of them."""
    if values.name in LOSS_METRICS:
        return int((values.stats[:, 1] > 0).sum())
    return len(values.stats)


def _forgetting(cfg: EvalConfig, tuned: Any, tuned_side: EvalModel, base_side: EvalModel | None,
                texts: list[str] | None, seed: int, max_seq_length: int) -> tuple[Any, str | None]:
    base = base_side if base_side is not None and base_side.label == "base" else _base_of(tuned)
    if base is None:
        return None, "the evaluated model is a plain model, so there is no base to compare with"
    if texts is None:  # the bundled set: an install without it skips the check instead of failing the run
        try:
            texts = load_reference_texts(cfg.forgetting)
        except EvalError as exc:
            log.warning("forgetting check skipped: %s", exc)
            return None, str(exc)
    rows = {}
    for key, side in (("tuned", tuned_side), ("base", base)):
        with side.active():
            rows[key] = document_nll(side.model, side.tokenizer, texts, max_seq_length=max_seq_length)
    return compare_perplexity(rows["base"], rows["tuned"], cfg.forgetting, source=str(reference_source(cfg.forgetting)),
                              samples=cfg.bootstrap_samples, seed=seed), None


def _clean(x: Any) -> Any:
    return None if isinstance(x, float) and not math.isfinite(x) else x


def _prediction_rows(examples, kind, references, outputs: dict[str, _Outputs], labels) -> list[dict]:
    from tuneforge.data import prompt_messages

    rows = []
    for i, ex in enumerate(examples):
        row: dict[str, Any] = {"index": i}
        if kind == "chat":
            row.update(prompt=prompt_messages(ex), reference=references[i])
        else:
            row["text"] = ex["text"]
        for side in ("base", "tuned"):
            if side not in outputs:
                continue
            scored, gen = outputs[side].scored, outputs[side].generations
            if gen is not None:
                row[f"{side}_output"] = gen.texts[i]
                row[f"{side}_truncated"] = gen.truncated[i]  # cut at max_new_tokens, not finished
                if gen.prompt_truncated[i]:
                    row["prompt_truncated"] = True
            if scored.labels is not None:
                row[f"{side}_label"] = scored.labels[i]
            if outputs[side].likelihood is not None:  # the most probable label, and how probable each was
                lp = outputs[side].likelihood.logprobs[i]
                row[f"{side}_likeliest_label"] = labels[int(lp.argmax())]
                row[f"{side}_label_logprobs"] = {label: round(float(v), 4) for label, v in zip(labels, lp)}
            row[f"{side}_scores"] = {n: _clean(float(mv.per_example[i])) for n, mv in scored.metrics.items()}
        rows.append(row)
    return rows
