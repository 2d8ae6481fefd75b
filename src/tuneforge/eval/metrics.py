"""Task metrics as pure functions of strings: normalisation, exact match, labels, token F1, JSON, ROUGE, BLEU, chrF.

Each function scores one example (or, for macro-F1, label arrays) and knows
nothing about models. :mod:`tuneforge.eval.scoring` turns them into
per-example statistics that the paired bootstrap can resample.

ROUGE comes from ``rouge_score`` and BLEU/chrF from ``sacrebleu``; they are
never reimplemented here. Macro-F1 is computed from confusion counts by hand
because scikit-learn is not a dependency, and the bootstrap needs a version
that runs on label-index arrays thousands of times anyway.
"""

from __future__ import annotations

import json
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

# SQuAD order: lower-case, drop punctuation, drop articles, then fix whitespace.
NORMALIZE_ORDER = ("lower", "punctuation", "articles", "whitespace", "strip")
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.IGNORECASE)
_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n(.*)\n```$", re.DOTALL)
_MISSING = object()


def _is_punctuation(char: str) -> bool:
    # string.punctuation is SQuAD's set (ASCII, includes symbols like $ and +); the
    # Unicode "P*" categories add punctuation of other scripts (« », 、, ¿).
    return char in string.punctuation or unicodedata.category(char).startswith("P")


def normalize_text(text: str, steps: Sequence[str]) -> str:
    """Normalise an answer SQuAD-style before comparing it.

    The steps run in a fixed order (lower, punctuation, articles, whitespace,
    strip) whatever order they are listed in, so a config cannot change meaning
    by reordering.

    Args:
        text: The answer.
        steps: Any of ``lower``, ``strip``, ``punctuation``, ``articles``, ``whitespace``.

    Returns:
        The normalised text.

    Example:
        >>> normalize_text("  The Answer: Paris! ", ["lower", "punctuation", "articles", "whitespace", "strip"])
        'answer paris'
    """
    wanted = set(steps)
    if "lower" in wanted:
        text = text.lower()
    if "punctuation" in wanted:
        text = "".join(c for c in text if not _is_punctuation(c))  # deleted, as SQuAD does: "don't" -> "dont"
    if "articles" in wanted:
        text = _ARTICLES.sub(" ", text)
    if "whitespace" in wanted:
        text = " ".join(text.split())
    if "strip" in wanted:
        text = text.strip()
    return text


def exact_match(prediction: str, reference: str, steps: Sequence[str]) -> float:
    """1.0 when prediction and reference are equal after normalisation, else 0.0."""
    return float(normalize_text(prediction, steps) == normalize_text(reference, steps))


def token_f1(prediction: str, reference: str, steps: Sequence[str]) -> float:
    """SQuAD token-level F1 between the normalised, whitespace-split prediction and reference.

    Two empty answers score 1.0, one empty answer scores 0.0 (as in the SQuAD script).
    """
    pred = normalize_text(prediction, steps).split()
    ref = normalize_text(reference, steps).split()
    if not pred or not ref:
        return float(pred == ref)
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def parse_label(answer: str, labels: Sequence[str], steps: Sequence[str]) -> str | None:
    """Read a generated answer as one of a closed set of labels.

    First an exact match after normalisation; else the one label that occurs
    in the answer as whole words (a label that is part of a longer matching
    label, like ``positive`` in ``very positive``, yields to it); else ``None``
    (unparseable: the caller counts it wrong and reports it).

    Example:
        >>> parse_label("The category is Billing.", ["billing", "refund"], ["lower", "punctuation", "whitespace"])
        'billing'
    """
    norm_answer = normalize_text(answer, steps)
    norm = {label: normalize_text(label, steps) for label in labels}
    for label, text in norm.items():
        if text == norm_answer:
            return label
    found = [
        label for label, text in norm.items()
        if text and re.search(rf"(?<!\w){re.escape(text)}(?!\w)", norm_answer)
    ]
    found = [a for a in found if not any(a != b and norm[a] in norm[b] for b in found)]
    return found[0] if len(found) == 1 else None


def macro_f1(predicted: np.ndarray, reference: np.ndarray) -> float:
    """Macro-averaged F1 over label indices; ``-1`` in ``predicted`` marks an unparseable answer.

    Classes are those present in the references or predictions (scikit-learn's
    default); an unparseable answer is a false negative of its true class and
    no class's false positive. F1 per class is ``2tp / (2tp + fp + fn)``.

    Args:
        predicted: Integer label indices of the answers (``-1`` = unparseable).
        reference: Integer label indices of the references.

    Example:
        >>> macro_f1(np.array([0, -1, 1, 0]), np.array([0, 0, 1, 1]))  # (0.5 + 2/3) / 2
        0.5833333333333333
    """
    predicted, reference = np.asarray(predicted), np.asarray(reference)
    classes = np.union1d(reference, predicted[predicted >= 0])
    scores = []
    for c in classes:
        tp = np.sum((predicted == c) & (reference == c))
        fp = np.sum((predicted == c) & (reference != c))
        fn = np.sum((predicted != c) & (reference == c))
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def parse_json(text: str) -> tuple[bool, Any]:
    """Parse a generated answer as JSON; a surrounding Markdown code fence is allowed.

    Returns:
        ``(True, value)`` when it parses, else ``(False, None)``.
    """
    text = text.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        return True, json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return False, None


def json_validity(prediction: str) -> float:
    """1.0 when the answer parses as JSON (see :func:`parse_json`), else 0.0."""
    return float(parse_json(prediction)[0])


def _field(obj: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(obj, dict) or key not in obj:
            return _MISSING
        obj = obj[key]
    return obj


def _same_value(a: Any, b: Any, steps: Sequence[str]) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return normalize_text(a, steps) == normalize_text(b, steps)
    return a == b


def json_field_accuracy(prediction: str, reference: dict, fields: Sequence[str] | None, steps: Sequence[str]) -> float:
    """Fraction of fields whose predicted value equals the reference value.

    Fields may be dotted paths into nested objects (``address.city``); without
    ``fields`` every top-level key of the reference counts. Strings compare after
    normalisation (as exact match does), other values by JSON equality; a field
    absent on both sides matches. An answer that is not a JSON object scores 0.

    Args:
        prediction: The generated answer.
        reference: The reference, already parsed into a JSON object.
        fields: Field names to compare, or ``None`` for all reference keys.
        steps: Normalisation steps for string values.
    """
    keys = list(fields) if fields else sorted(reference)
    ok, predicted = parse_json(prediction)
    if not ok or not isinstance(predicted, dict) or not keys:
        return 0.0
    return sum(_same_value(_field(predicted, k), _field(reference, k), steps) for k in keys) / len(keys)


def json_field_counts(
    prediction: str, reference: dict, fields: Sequence[str] | None, steps: Sequence[str]
) -> tuple[int, int, int]:
    """Field-level ``(correct, predicted, reference)`` counts, for slot-extraction precision/recall/F1.

    A field is predicted when the answer (a JSON object) has it, expected when the
    reference has it, and correct when both have it with equal values (strings
    after normalisation). Without ``fields`` the fields are the top-level keys of
    each side; with ``fields`` (dotted paths allowed) only those are counted. An
    answer that is not a JSON object predicts no field, so it costs recall only.

    Example:
        >>> json_field_counts('{"city": "Paris", "day": "mon"}', {"city": "paris", "time": "9"}, None, ["lower"])
        (1, 2, 2)
    """
    ok, predicted = parse_json(prediction)
    predicted = predicted if ok and isinstance(predicted, dict) else {}
    keys = list(fields) if fields else sorted(set(predicted) | set(reference))
    have = [k for k in keys if _field(predicted, k) is not _MISSING]
    want = [k for k in keys if _field(reference, k) is not _MISSING]
    correct = sum(_same_value(_field(predicted, k), _field(reference, k), steps) for k in have if k in want)
    return correct, len(have), len(want)


def precision_recall_f1(correct: float, predicted: float, expected: float) -> tuple[float, float, float]:
    """Micro precision, recall and F1 from summed counts (0 where undefined, as scikit-learn's zero_division=0)."""
    precision = correct / predicted if predicted else 0.0
    recall = correct / expected if expected else 0.0
    f1 = 2 * correct / (predicted + expected) if predicted + expected else 0.0
    return precision, recall, f1


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def rouge_f(predictions: Sequence[str], references: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-example ROUGE-1/2/L F-measures from ``rouge_score`` (Porter stemming on).

    Returns:
        ``{"rouge1": array, "rouge2": array, "rougeL": array}``, one value per example in [0, 1].
    """
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    rows = [scorer.score(ref, pred) for pred, ref in zip(predictions, references)]
    return {t: np.array([r[t].fmeasure for r in rows], dtype=float) for t in ROUGE_TYPES}


def sacrebleu_metric(name: str) -> Any:
    """A fresh ``sacrebleu`` metric object: ``bleu`` (BLEU-4, 13a tokenizer) or ``chrf`` (chrF2)."""
    from sacrebleu.metrics import BLEU, CHRF

    return {"bleu": BLEU, "chrf": CHRF}[name]()


def corpus_statistics(name: str, predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per-sentence sufficient statistics of BLEU or chrF (n-gram matches, totals, lengths).

    Summing rows and scoring the sum gives the corpus score; this is how
    ``sacrebleu.significance`` resamples, and how our paired bootstrap recomputes the
    corpus metric exactly on every resample.
    """
    metric = sacrebleu_metric(name)
    return np.array(metric._extract_corpus_statistics(list(predictions), [list(references)]), dtype=float)


def corpus_score_from_statistics(name: str, stats: np.ndarray, metric: Any | None = None) -> float:
    """Corpus BLEU or chrF (0-100, sacrebleu's scale) from summed per-sentence statistics."""
    metric = metric or sacrebleu_metric(name)
    return float(metric._compute_score_from_stats(stats.sum(axis=0)).score)


def sentence_scores(name: str, predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per-example sentence BLEU (effective order, so short answers are not all 0) or chrF, for display."""
    from sacrebleu.metrics import BLEU, CHRF

    metric = BLEU(effective_order=True) if name == "bleu" else CHRF()
    return np.array([metric.sentence_score(p, [r]).score for p, r in zip(predictions, references)], dtype=float)
