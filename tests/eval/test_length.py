"""Generation length from the task, answers cut at the limit, and test rows never dropped for length.

The long-label tests use the tiny model trained for a few seconds to answer two
labels of 28+ tokens, so an 8-token cap (the old quickstart setting) really cuts them.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.eval.conftest import ticket
from tuneforge.config.schema import EvalConfig, GenerationConfig
from tuneforge.errors import EvalError
from tuneforge.eval import run
from tuneforge.eval.generate import render_prompts, stop_token_ids
from tuneforge.eval.length import MARGIN, STOP_TOKENS, answer_budget, prompt_budget, resolve_generation
from tuneforge.models import LoadedModel, load_model

LONG = ["apple_pay_or_google_pay_refund_request", "card_declined_at_the_checkout_terminal"]
QUIET = {"baseline": None, "forgetting": {"enabled": False}, "bootstrap_samples": 100}


def chat(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


LABELLED = [chat("Refund my Apple Pay purchase", LONG[0]), chat("My card was declined in the shop", LONG[1])]


@pytest.fixture(scope="module")
def label_model(tiny_model_dir) -> LoadedModel:
    """The tiny model, trained until it answers each prompt of LABELLED with its long label."""
    from tuneforge.data import tokenize_example
    from tuneforge.data.pack import Collator

    torch.manual_seed(0)
    model, tok, _ = load_model(str(tiny_model_dir))
    batch = Collator(tok.pad_token_id, packed=False)([tokenize_example(e, tok, max_seq_length=256) for e in LABELLED])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(200):
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    return LoadedModel(model, tok, str(tiny_model_dir))


def test_answer_budget_is_the_longest_reference_or_label(tiny_tokenizer):
    first, second = (len(tiny_tokenizer(label, add_special_tokens=False)["input_ids"]) for label in LONG)
    assert 8 < first < second  # the old fixed cap would cut both
    assert answer_budget(tiny_tokenizer, ["billing"], LONG) == second + STOP_TOKENS + MARGIN  # labels count too
    assert answer_budget(tiny_tokenizer, LONG[:1]) == first + STOP_TOKENS + MARGIN
    # A value the user sets is kept as it is.
    assert resolve_generation(GenerationConfig(max_new_tokens=3), tiny_tokenizer, LONG).max_new_tokens == 3
    assert resolve_generation(GenerationConfig(), tiny_tokenizer, LONG).max_new_tokens == second + 5


def test_derived_length_scores_long_labels(label_model, tmp_path):
    cfg = EvalConfig(labels=[*LONG, "billing"], **QUIET)
    result = run(cfg, tuned=label_model, examples=LABELLED, out_dir=tmp_path)
    assert result.settings["max_new_tokens_from"] == "derived"
    assert result.settings["generation"]["max_new_tokens"] > len(label_model.tokenizer(LONG[0])["input_ids"])
    assert result.metrics["accuracy"].tuned == 1.0 and result.metrics["exact_match"].tuned == 1.0
    assert result.truncated == {"tuned": 0} and not result.warnings()
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [r["tuned_output"] for r in rows] == LONG and not any(r["tuned_truncated"] for r in rows)


def test_forced_small_cap_reports_answers_as_truncated(label_model, tmp_path):
    cfg = EvalConfig(labels=[*LONG, "billing"], generation={"max_new_tokens": 8}, **QUIET)
    result = run(cfg, tuned=label_model, examples=LABELLED, out_dir=tmp_path)
    assert result.settings["max_new_tokens_from"] == "config" and result.settings["generation"]["max_new_tokens"] == 8
    assert result.metrics["accuracy"].tuned == 0.0  # 'apple_pay_' matches no label
    assert result.truncated == {"tuned": 2}
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert all(r["tuned_truncated"] for r in rows) and rows[0]["tuned_output"] != LONG[0]
    report = (tmp_path / "report.md").read_text()
    assert "2 of 2 tuned answers hit max_new_tokens=8 without a stop token" in report
    assert "raise eval.generation.max_new_tokens or leave it unset" in report
    assert json.loads((tmp_path / "metrics.json").read_text())["truncated"] == {"tuned": 2}


def test_every_test_row_is_evaluated_whatever_its_length(tiny_model_dir, tickets, tmp_path):
    model, tok, _ = load_model(str(tiny_model_dir))
    context = model.config.max_position_embeddings
    longer_than_training = ticket("word " * 100, "refund")           # > max_seq_length=64, fits the context
    longer_than_context = ticket("word " * (context + 100), "billing")
    examples = [*tickets[:2], longer_than_training, longer_than_context]
    cfg = EvalConfig(metrics=["loss", "exact_match"], generation={"max_new_tokens": 4, "batch_size": 4}, **QUIET)
    result = run(cfg, tuned=LoadedModel(model, tok, str(tiny_model_dir)), examples=examples, out_dir=tmp_path,
                 max_seq_length=64)

    assert result.examples == 4 and result.metrics["exact_match"].n == 4
    assert result.metrics["loss"].n == 4 and result.settings["loss_examples_skipped"] == 0
    assert result.prompts_truncated == {"tuned": 1} and result.loss_truncated == 1
    assert any("prompts were longer than the model's context" in w for w in result.warnings())
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [r.get("prompt_truncated", False) for r in rows] == [False, False, False, True]
    # The long prompt was cut from the left: the answer is what the model says after its last tokens.
    ids = tok(render_prompts(tok, [longer_than_context])[0], return_tensors="pt", add_special_tokens=False)["input_ids"]
    assert ids.shape[1] > context - 4
    out = model.generate(ids[:, -(context - 4):], max_new_tokens=4, do_sample=False,
                         eos_token_id=stop_token_ids(tok, model), pad_token_id=tok.pad_token_id)
    assert rows[3]["tuned_output"] == tok.decode(out[0, context - 4:], skip_special_tokens=True).strip()
    assert "| exact_match | 4 |" in (tmp_path / "report.md").read_text()


def test_generation_budget_must_leave_room_for_a_prompt(tiny_model_dir):
    model, _, _ = load_model(str(tiny_model_dir))
    assert prompt_budget(model, 24) == model.config.max_position_embeddings - 24
    with pytest.raises(EvalError, match="leaves no room for a prompt"):
        prompt_budget(model, model.config.max_position_embeddings)


def test_json_references_get_json_metrics_by_default(tiny_model_dir, tmp_path):
    model, tok, _ = load_model(str(tiny_model_dir))
    tuned = LoadedModel(model, tok, str(tiny_model_dir))
    refs = [{"city": "Paris", "day": "monday"}, {"city": "Oslo", "time": "9:00"}, {"name": "Ann"}]
    examples = [chat(f"Extract the slots from message {i}", json.dumps(r)) for i, r in enumerate(refs)]
    result = run(EvalConfig(**QUIET), tuned=tuned, examples=examples, out_dir=tmp_path / "json")
    assert list(result.metrics) == ["loss", "perplexity", "exact_match", "json_validity",
                                    "json_field_precision", "json_field_recall", "json_field_f1"]
    assert all(mc.n == 3 for mc in result.metrics.values())
    # One reference that is not a JSON object: back to the free-text defaults.
    mixed = [*examples, chat("Say hi", "hello there")]
    result = run(EvalConfig(**QUIET), tuned=tuned, examples=mixed, out_dir=tmp_path / "text")
    assert "json_validity" not in result.metrics and "token_f1" in result.metrics
