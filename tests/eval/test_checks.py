"""Bad evaluation inputs give a clear EvalError that says what and where; default metrics fit the data."""

from __future__ import annotations

import json
import re

import pytest

from tests.eval.conftest import LABELS, ticket
from tuneforge.config.schema import EvalConfig, ForgettingConfig
from tuneforge.errors import EvalError
from tuneforge.eval import run, score
from tuneforge.eval.checks import check_examples, check_references, resolve_metrics
from tuneforge.eval.forgetting import ForgettingResult, load_reference_texts
from tuneforge.models import LoadedModel


@pytest.fixture(scope="module")
def plain(tiny_model_dir):
    from tuneforge.models import load_model

    model, tok, path = load_model(str(tiny_model_dir))
    return LoadedModel(model, tok, path)


@pytest.mark.parametrize(
    "requested, labels, kind, expected",
    [
        (None, LABELS, "chat", ["loss", "perplexity", "accuracy", "macro_f1", "label_validity", "label_likelihood_accuracy",
                                "label_likelihood_macro_f1", "exact_match"]),
        (None, None, "text", ["loss", "perplexity"]),
        (None, None, "chat", ["loss", "perplexity", "exact_match", "token_f1", "rouge"]),
        (["bleu", "chrf", "bleu"], None, "chat", ["bleu", "chrf"]),
    ],
)
def test_default_metrics(requested, labels, kind, expected):
    assert resolve_metrics(requested, labels=labels, kind=kind) == expected


def test_likelihood_metrics_need_labels():
    with pytest.raises(EvalError, match="label_likelihood_accuracy need a label set"):
        resolve_metrics(["label_likelihood_accuracy"], labels=None, kind="chat")


def test_json_references_default_to_json_metrics():
    json_refs = ['{"city": "Paris"}', ' {"a": {"b": 1}} ']
    assert resolve_metrics(None, labels=None, kind="chat", references=json_refs) == [
        "loss", "perplexity", "exact_match", "json_validity", "json_field_precision", "json_field_recall", "json_field_f1",
    ]
    # Every reference must be an object: a list or one plain answer keeps the free-text defaults.
    for refs in (['{"city": "Paris"}', "Paris"], ["[1, 2]"]):
        assert "json_validity" not in resolve_metrics(None, labels=None, kind="chat", references=refs)
    assert "accuracy" in resolve_metrics(None, labels=["a"], kind="chat", references=json_refs)  # labels win


@pytest.mark.parametrize(
    "requested, labels, kind, message",
    [
        (["acuracy"], None, "chat", "unknown metric 'acuracy' (did you mean 'accuracy'?)"),
        (["rouge"], None, "text", "raw text supports only loss and perplexity"),
        (["macro_f1"], None, "chat", "need a label set"),
        ([], None, "chat", "no metrics requested"),
    ],
)
def test_bad_metric_requests(requested, labels, kind, message):
    with pytest.raises(EvalError, match=re.escape(message)):
        resolve_metrics(requested, labels=labels, kind=kind)


def test_empty_test_set(plain):
    with pytest.raises(EvalError, match="has no examples"):
        score(plain.model, plain.tokenizer, [], EvalConfig())


def test_raw_text_when_trained_on_chat(plain, tmp_path):
    with pytest.raises(EvalError, match=r"raw text but the model was trained on 'chat' data"):
        run(EvalConfig(), tuned=plain, examples=[{"text": "hello"}], out_dir=tmp_path, data_format="chat")
    with pytest.raises(EvalError, match=r"conversations but the model was trained on 'text' data"):
        check_examples([ticket("a", "billing")], data_format="text")
    assert not (tmp_path / "metrics.json").exists()  # refused before any model ran


def test_missing_reference_names_the_example():
    no_answer = {"messages": [{"role": "user", "content": "hi"}], "meta": {"source": "test.jsonl", "line": 7}}
    with pytest.raises(EvalError, match=r"example 1 \(test.jsonl:7\) has no reference answer"):
        check_examples([ticket("a", "billing"), no_answer])
    empty = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]}
    with pytest.raises(EvalError, match="example 0 has no reference answer"):
        check_examples([empty])
    answer_only = {"messages": [{"role": "assistant", "content": "hi"}]}
    with pytest.raises(EvalError, match="no prompt"):
        check_examples([answer_only])


def test_mixed_and_unknown_examples():
    with pytest.raises(EvalError, match="mixes conversations and raw text"):
        check_examples([ticket("a", "billing"), {"text": "x"}])
    with pytest.raises(EvalError, match="example 0 has neither 'messages' nor 'text'"):
        check_examples([{"prompt": "x"}])


def test_labels_that_do_not_match_references_are_named():
    cfg = EvalConfig(labels=["billing", "refund"])
    refs = ["billing", "Shipping", "shipping", "account"]
    with pytest.raises(EvalError, match=r"3 reference answers are not in eval.labels .*'Shipping' \(1x\)") as info:
        check_references([{}] * 4, refs, cfg, ["accuracy"])
    assert "'account' (1x)" in str(info.value)
    check_references([{}] * 2, ["Billing.", "refund"], cfg, ["accuracy"])  # equal after normalisation: fine
    with pytest.raises(EvalError, match="equal after normalisation"):
        check_references([{}], ["a"], EvalConfig(labels=["Refund", "refund!"]), ["accuracy"])


def test_labels_checked_through_score(plain):
    cfg = EvalConfig(labels=["billing", "refund"])
    examples = [ticket("a", "billing"), ticket("b", "shipping")]
    with pytest.raises(EvalError, match="'shipping'"):
        score(plain.model, plain.tokenizer, examples, cfg)


def test_unknown_metric_through_score(plain):
    with pytest.raises(EvalError, match="did you mean 'exact_match'"):
        score(plain.model, plain.tokenizer, [ticket("a", "billing")], EvalConfig(), metrics=["exact_mach"])


def test_json_references_must_be_objects():
    examples = [ticket("a", json.dumps({"k": 1})), ticket("b", "not json")]
    refs = [ex["messages"][-1]["content"] for ex in examples]
    with pytest.raises(EvalError, match="example 1 .*not a JSON object"):
        check_references(examples, refs, EvalConfig(), ["json_field_accuracy"])
    check_references(examples[:1], refs[:1], EvalConfig(), ["json_field_accuracy"])
    with pytest.raises(EvalError, match="json_field_f1 need"):
        check_references(examples, refs, EvalConfig(), ["json_field_f1"])


def test_forgetting_reference_file_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n\n{"txt": "no text field"}\n')
    with pytest.raises(EvalError, match=r"bad.jsonl line 3: expected a field 'text' of type str"):
        load_reference_texts(ForgettingConfig(data=str(bad)))
    bad.write_text("{not json\n")
    with pytest.raises(EvalError, match="line 1: not valid JSON"):
        load_reference_texts(ForgettingConfig(data=str(bad)))
    with pytest.raises(EvalError, match="does not exist"):
        load_reference_texts(ForgettingConfig(data=str(tmp_path / "missing.jsonl")))
    txt = tmp_path / "docs.txt"
    txt.write_text("first document\nstill first\n\nsecond\n\n\nthird\n")
    assert load_reference_texts(ForgettingConfig(data=str(txt))) == ["first document\nstill first", "second", "third"]
    assert load_reference_texts(ForgettingConfig(data=str(txt), max_documents=2)) == ["first document\nstill first",
                                                                                      "second"]


def test_bundled_reference_set_loads():
    texts = load_reference_texts(ForgettingConfig())
    assert len(texts) >= 10 and all(isinstance(t, str) and t for t in texts)


def test_forgetting_flag():
    ok = ForgettingResult("x", 3, 30, base_perplexity=10.0, tuned_perplexity=11.9, max_rise=0.2)
    bad = ForgettingResult("x", 3, 30, base_perplexity=10.0, tuned_perplexity=12.1, max_rise=0.2)
    assert ok.rise == pytest.approx(0.19) and not ok.flagged
    assert bad.flagged
    assert not ForgettingResult("x", 3, 30, 10.0, 8.0, 0.0).flagged  # perplexity fell
