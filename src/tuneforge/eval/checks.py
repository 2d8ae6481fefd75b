"""Check evaluation inputs before any model runs, and pick the metrics that fit the data.

Every problem is an :class:`~tuneforge.errors.EvalError` that says what is
wrong and where (the example's position and, when the data loader recorded
it, its source file and line).
"""

from __future__ import annotations

import difflib
import json
from collections import Counter
from collections.abc import Sequence

from tuneforge.config.schema import EvalConfig
from tuneforge.errors import EvalError
from tuneforge.eval.metrics import normalize_text
from tuneforge.eval.scoring import (
    JSON_FIELD_METRICS,
    LABEL_METRICS,
    LIKELIHOOD_METRICS,
    LOSS_METRICS,
    METRIC_NAMES,
    label_index,
)

# Metrics that compare answers field by field, so every reference must be a JSON object.
_NEEDS_JSON_REFERENCE = ("json_field_accuracy", *JSON_FIELD_METRICS)

# Training formats whose canonical examples are conversations; "text" is raw text.
CHAT_FORMATS = ("alpaca", "chat", "sharegpt", "prompt_completion")


def example_kind(example: dict) -> str:
    """``"chat"`` for a conversation (``messages``), ``"text"`` for raw text (``text``)."""
    if isinstance(example.get("messages"), list):
        return "chat"
    if isinstance(example.get("text"), str):
        return "text"
    return "unknown"


def where(example: dict, index: int) -> str:
    """``example 3 (test.jsonl:4)``: the position, plus the source line the data loader recorded in ``meta``."""
    from tuneforge.data import location

    meta = example.get("meta") or {}
    return f"example {index} ({location(meta)})" if "source" in meta else f"example {index}"


def check_metric_names(requested: Sequence[str]) -> list[str]:
    """The requested metric names, de-duplicated, after checking each is known.

    Raises:
        EvalError: an unknown name (with the closest known one), or an empty list.
    """
    names = list(dict.fromkeys(n.strip() for n in requested))
    for name in names:
        if name not in METRIC_NAMES:
            close = difflib.get_close_matches(name, METRIC_NAMES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise EvalError(f"unknown metric {name!r}{hint}; known metrics: {', '.join(METRIC_NAMES)}")
    if not names:
        raise EvalError("no metrics requested")
    return names


def is_json_object(text: str) -> bool:
    """Whether ``text`` parses as a JSON object (what the json_field_* metrics compare)."""
    try:
        return isinstance(json.loads(text), dict)
    except (json.JSONDecodeError, RecursionError):
        return False


def resolve_metrics(
    requested: Sequence[str] | None, *, labels: Sequence[str] | None, kind: str,
    references: Sequence[str] | None = None,
) -> list[str]:
    """The metric names to compute: the requested ones checked, or the defaults for the data.

    Defaults: with labels, loss, perplexity, accuracy, macro_f1, their label-likelihood
    counterparts and exact_match;
    raw text, loss and perplexity; when every reference is a JSON object, loss,
    perplexity, exact_match, json_validity and field precision/recall/F1;
    otherwise loss, perplexity, exact_match, token_f1 and rouge.

    Raises:
        EvalError: an unknown metric name (with the closest valid one), a generation
            metric on raw text, or a label metric without labels.
    """
    if requested is None:
        if kind == "text":
            return list(LOSS_METRICS)
        if labels:
            return [*LOSS_METRICS, *LABEL_METRICS, *LIKELIHOOD_METRICS, "exact_match"]
        if references and all(is_json_object(ref) for ref in references):
            return [*LOSS_METRICS, "exact_match", "json_validity", *JSON_FIELD_METRICS]
        return [*LOSS_METRICS, "exact_match", "token_f1", "rouge"]
    names = check_metric_names(requested)
    if kind == "text" and (generated := [n for n in names if n not in LOSS_METRICS]):
        raise EvalError(
            f"metrics {', '.join(generated)} need prompts and reference answers, but the data is raw text; "
            "raw text supports only loss and perplexity"
        )
    if not labels and (needs := [n for n in names if n in LABEL_METRICS or n in LIKELIHOOD_METRICS]):
        raise EvalError(f"metrics {', '.join(needs)} need a label set: set eval.labels (or --labels a,b,c)")
    return names


def check_examples(examples: Sequence[dict], *, data_format: str | None = None, source: str = "the test set") -> str:
    """Check that the examples can be evaluated and return their kind (``chat`` or ``text``).

    Args:
        examples: Canonical examples (``messages`` or ``text``).
        data_format: The format the model was trained on, when known (``text`` or a chat format).
        source: Where the examples came from, for messages.

    Raises:
        EvalError: an empty set, mixed or unknown formats, a format other than training's,
            or an example without a final assistant answer.
    """
    if not examples:
        raise EvalError(f"{source} has no examples to evaluate")
    kinds = Counter(example_kind(ex) for ex in examples)
    if "unknown" in kinds:
        i = next(i for i, ex in enumerate(examples) if example_kind(ex) == "unknown")
        raise EvalError(f"{source}: {where(examples[i], i)} has neither 'messages' nor 'text'")
    if len(kinds) > 1:
        raise EvalError(f"{source} mixes conversations and raw text ({dict(kinds)}); evaluate one kind at a time")
    kind = next(iter(kinds))
    expected = "text" if data_format == "text" else "chat" if data_format in CHAT_FORMATS else None
    if expected and expected != kind:
        raise EvalError(
            f"{source} is {'raw text' if kind == 'text' else 'conversations'} but the model was trained on "
            f"{data_format!r} data ({'raw text' if expected == 'text' else 'conversations'}); "
            "give a test file in the training format"
        )
    if kind == "chat":
        for i, ex in enumerate(examples):
            msgs = ex["messages"]
            if not msgs or msgs[-1].get("role") != "assistant" or not str(msgs[-1].get("content") or "").strip():
                raise EvalError(
                    f"{source}: {where(ex, i)} has no reference answer (its last message must be a non-empty "
                    "assistant turn)"
                )
            if len(msgs) < 2:
                raise EvalError(f"{source}: {where(ex, i)} has an answer but no prompt before it")
    return kind


def check_references(
    examples: Sequence[dict], references: Sequence[str], cfg: EvalConfig, metrics: Sequence[str],
    source: str = "the test set",
) -> None:
    """Check reference answers against the label set and, for JSON field accuracy, that they are JSON objects.

    Raises:
        EvalError: naming the references outside ``eval.labels`` (with counts), or the
            first example whose reference is not a JSON object.
    """
    if cfg.labels:
        known = label_index(cfg.labels, cfg.normalize)
        if len(known) < len(cfg.labels):
            raise EvalError(f"eval.labels {cfg.labels} has labels that are equal after normalisation {cfg.normalize}")
        outside = Counter(ref for ref in references if normalize_text(ref, cfg.normalize) not in known)
        if outside:
            shown = ", ".join(f"{ref!r} ({n}x)" for ref, n in outside.most_common(10))
            more = f" and {len(outside) - 10} more" if len(outside) > 10 else ""
            raise EvalError(
                f"{source}: {sum(outside.values())} reference answers are not in eval.labels {cfg.labels}: "
                f"{shown}{more}"
            )
    needs_json = [n for n in metrics if n in _NEEDS_JSON_REFERENCE]
    if needs_json:
        for i, (ex, ref) in enumerate(zip(examples, references)):
            if not is_json_object(ref):
                raise EvalError(
                    f"{source}: {where(ex, i)} has a reference that is not a JSON object, which "
                    f"{', '.join(needs_json)} need: {ref[:80]!r}"
                )
