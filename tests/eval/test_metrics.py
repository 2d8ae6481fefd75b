"""Metric functions on hand-computed cases, and the ROUGE/BLEU/chrF wrappers against the libraries."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer

from tuneforge.config.schema import EvalConfig
from tuneforge.eval import metrics as m
from tuneforge.eval.scoring import loss_values, score_outputs

ALL = ["lower", "strip", "punctuation", "articles", "whitespace"]
DEFAULT = EvalConfig().normalize  # lower, strip, punctuation, whitespace


@pytest.mark.parametrize(
    "text, steps, expected",
    [
        ("  The Answer: Paris! ", ALL, "answer paris"),
        ("  The Answer: Paris! ", ["strip"], "The Answer: Paris!"),
        ("Don't  STOP", ["lower", "punctuation"], "dont  stop"),  # punctuation is deleted, as in SQuAD
        ("an apple a day", ["articles", "whitespace"], "apple day"),
        ("¿Qué?  «sí»", ["punctuation", "whitespace"], "Qué sí"),  # Unicode punctuation too
        ("Theory", ALL, "theory"),  # 'the' inside a word is not an article
    ],
)
def test_normalize_text(text, steps, expected):
    assert m.normalize_text(text, steps) == expected


def test_normalize_order_is_fixed():
    assert m.normalize_text(" A, b ", ["strip", "punctuation", "lower", "articles", "whitespace"]) == "b"


def test_exact_match_depends_on_normalisation():
    assert m.exact_match("The answer.", "answer", ALL) == 1.0
    assert m.exact_match("The answer.", "answer", DEFAULT) == 0.0  # articles kept by default
    assert m.exact_match(" Billing ", "billing", DEFAULT) == 1.0
    assert m.exact_match(" Billing ", "billing", ["strip"]) == 0.0


def test_token_f1_hand_computed():
    # pred: the cat sat on the mat (6 tokens); ref: a cat on a mat (5); shared: cat, on, mat.
    p, r = 3 / 6, 3 / 5
    assert m.token_f1("The cat sat on the mat.", "a cat on a mat", DEFAULT) == pytest.approx(2 * p * r / (p + r))
    # With article removal: pred cat sat on mat (4), ref cat on mat (3), shared 3.
    assert m.token_f1("The cat sat on the mat.", "a cat on a mat", ALL) == pytest.approx(2 * 0.75 * 1 / 1.75)
    assert m.token_f1("", "", DEFAULT) == 1.0
    assert m.token_f1("x", "", DEFAULT) == 0.0
    assert m.token_f1("dog", "cat", DEFAULT) == 0.0
    # Repeated tokens count once per occurrence (Counter intersection).
    assert m.token_f1("yes yes yes", "yes", DEFAULT) == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("Billing", "billing"),
        ("The category is billing.", "billing"),
        ("billing or refund", None),  # two labels: ambiguous
        ("I think shipping", None),  # no label
        ("very positive!", "very positive"),  # the longer label wins over the 'positive' inside it
        ("positive", "positive"),
        ("billings", None),  # whole words only
    ],
)
def test_parse_label(answer, expected):
    labels = ["billing", "refund", "positive", "very positive"]
    assert m.parse_label(answer, labels, DEFAULT) == expected


def test_macro_f1_with_unparseable_answer():
    # refs a a b b; preds a ? b a.  a: tp1 fp1 fn1 -> 2/4; b: tp1 fp0 fn1 -> 2/3.
    assert m.macro_f1(np.array([0, -1, 1, 0]), np.array([0, 0, 1, 1])) == pytest.approx((0.5 + 2 / 3) / 2)
    assert m.macro_f1(np.array([0, 1]), np.array([0, 1])) == 1.0
    # A class predicted but never true still counts (scikit-learn's default label set).
    assert m.macro_f1(np.array([2, 0]), np.array([0, 0])) == pytest.approx((2 / 3 + 0) / 2)


def test_label_metrics_through_scoring():
    cfg = EvalConfig(labels=["a", "b"])
    scored = score_outputs(["accuracy", "macro_f1", "label_validity"], ["A", "no idea", "b.", "a"], ["a", "a", "b", "b"], cfg)
    assert scored.labels == ["a", None, "b", "a"]
    assert scored.unparseable == 1
    # label_validity: 3 of 4 answers name a label (right or wrong), per example 1, 0, 1, 1 for the bootstrap
    assert scored.values() == pytest.approx({"accuracy": 0.5, "macro_f1": (0.5 + 2 / 3) / 2, "label_validity": 0.75})
    assert scored.metrics["label_validity"].per_example.tolist() == [1.0, 0.0, 1.0, 1.0]


def test_json_field_precision_recall_f1():
    ref = {"city": "Paris", "day": "monday", "time": "9:00"}
    # 'city' right (after normalisation), 'day' wrong, 'extra' not expected, 'time' missed.
    answer = '{"city": "paris", "day": "tuesday", "extra": 1}'
    assert m.json_field_counts(answer, ref, None, DEFAULT) == (1, 3, 3)
    assert m.json_field_counts(answer, ref, ["city", "time"], DEFAULT) == (1, 1, 2)  # only the listed fields
    assert m.json_field_counts("not json", ref, None, DEFAULT) == (0, 0, 3)  # no prediction: recall only
    assert m.precision_recall_f1(1, 3, 4) == pytest.approx((1 / 3, 1 / 4, 2 / 7))
    assert m.precision_recall_f1(0, 0, 0) == (0.0, 0.0, 0.0)
    # Micro-averaged over examples: counts are summed before dividing.
    preds, refs = [answer, '{"name": "Ann"}'], [json.dumps(ref), '{"name": "ann"}']
    names = ["json_field_precision", "json_field_recall", "json_field_f1"]
    values = score_outputs(names, preds, refs, EvalConfig()).values()
    assert values["json_field_precision"] == pytest.approx(2 / 4)
    assert values["json_field_recall"] == pytest.approx(2 / 4)
    assert values["json_field_f1"] == pytest.approx(2 * 2 / 8)


def test_json_validity_and_fields():
    ref = {"name": "Ann Lee", "age": 30, "address": {"city": "Oslo"}}
    fenced = '```json\n{"name": "ann lee", "age": 31, "address": {"city": "Oslo"}}\n```'
    assert m.json_validity(fenced) == 1.0
    assert m.json_validity("{name: 1}") == 0.0
    assert m.json_validity(" [1, 2] ") == 1.0
    assert m.json_field_accuracy(fenced, ref, ["name", "age"], DEFAULT) == 0.5  # name matches after lower-casing
    assert m.json_field_accuracy(fenced, ref, ["address.city", "email"], DEFAULT) == 1.0  # email absent on both
    assert m.json_field_accuracy(fenced, ref, None, DEFAULT) == pytest.approx(2 / 3)  # all reference keys
    assert m.json_field_accuracy("not json", ref, ["name"], DEFAULT) == 0.0
    assert m.json_field_accuracy("[1]", ref, ["name"], DEFAULT) == 0.0


def test_json_field_accuracy_through_scoring():
    cfg = EvalConfig(json_fields=["a"])
    refs = [json.dumps({"a": 1}), json.dumps({"a": "x"})]
    assert score_outputs(["json_field_accuracy", "json_validity"], ['{"a": 1}', "oops"], refs, cfg).values() == {
        "json_field_accuracy": 0.5, "json_validity": 0.5,
    }


def test_rouge_matches_library_and_hand_case():
    preds = ["the cat sat on the mat", "a quick brown fox", "hello"]
    refs = ["the cat is on the mat", "the quick brown fox jumps", "goodbye"]
    ours = m.rouge_f(preds, refs)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for i, (p, r) in enumerate(zip(preds, refs)):
        lib = scorer.score(r, p)
        for t in m.ROUGE_TYPES:
            assert ours[t][i] == pytest.approx(lib[t].fmeasure)
    assert m.rouge_f(["the cat"], ["the dog"])["rouge1"][0] == pytest.approx(0.5)  # 1 of 2 unigrams both ways
    assert m.rouge_f(["same words"], ["same words"])["rougeL"][0] == 1.0


def test_bleu_and_chrf_corpus_match_sacrebleu():
    preds = ["the cat sat on the mat", "a quick brown fox jumps", "hello there general kenobi", ""]
    refs = ["the cat is on the mat", "the quick brown fox jumps over", "hello there", "nothing"]
    scored = score_outputs(["bleu", "chrf"], preds, refs, EvalConfig())
    assert scored.metrics["bleu"].value == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score)
    assert scored.metrics["chrf"].value == pytest.approx(sacrebleu.corpus_chrf(preds, [refs]).score)
    # Resampled rows re-aggregate to the corpus score of the resampled corpus.
    idx = np.array([0, 0, 2])
    bleu = scored.metrics["bleu"]
    assert bleu.aggregate(bleu.stats[idx]) == pytest.approx(
        sacrebleu.corpus_bleu([preds[i] for i in idx], [[refs[i] for i in idx]]).score
    )
    assert m.sentence_scores("bleu", ["same words here"], ["same words here"])[0] == pytest.approx(100.0)


def test_loss_and_perplexity_are_token_weighted():
    # Example 0: NLL 2.0 over 1 token; example 1: NLL 6.0 over 3 tokens; example 2 was skipped.
    values = loss_values(np.array([[2.0, 1], [6.0, 3], [0.0, 0]]))
    assert values["loss"].value == pytest.approx(8.0 / 4)
    assert values["perplexity"].value == pytest.approx(np.exp(2.0))
    assert values["loss"].per_example[:2] == pytest.approx([2.0, 2.0])
    assert np.isnan(values["loss"].per_example[2])
    assert values["loss"].higher_is_better is False and values["perplexity"].higher_is_better is False


def test_rouge_expands_to_three_metrics():
    scored = score_outputs(["exact_match", "token_f1", "rouge"], ["a b"], ["a b"], EvalConfig())
    assert list(scored.metrics) == ["exact_match", "token_f1", "rouge1", "rouge2", "rougeL"]
    assert all(v == 1.0 for v in scored.values().values())
