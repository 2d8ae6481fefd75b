"""End to end on the real embedded SmolLM2: a short LoRA run must beat the base model, and stop by itself."""

import itertools
import json
from pathlib import Path

import pytest
import torch
import yaml

from tuneforge import finetune, load_config
from tuneforge.models import load

pytestmark = pytest.mark.e2e
TICKETS = Path(__file__).resolve().parents[2] / "examples" / "data" / "tickets.jsonl"


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory, smollm2_dir):
    work = tmp_path_factory.mktemp("smollm2-run")
    (work / "tickets.jsonl").write_text("".join(itertools.islice(TICKETS.open(), 160)))
    cfg = {
        "name": "e2e", "out_dir": str(work / "runs"), "model": "smollm2-135m-instruct",
        "method": {"name": "lora", "r": 8, "alpha": 16},
        "data": {"train": str(work / "tickets.jsonl"), "split": {"validation": 0.0, "test": 0.1}},
        "training": {"max_steps": 24, "per_device_batch_size": 2, "learning_rate": 3e-3, "max_seq_length": 256,
                     "logging_steps": 4, "save_strategy": "no"},
        "eval": {"max_examples": 16, "generation": {"max_new_tokens": 8, "batch_size": 16},
                 "labels": ["billing", "technical_issue", "account_access", "shipping", "refund", "cancellation",
                            "product_question", "feedback"],
                 "bootstrap_samples": 1000, "forgetting": {"max_documents": 4}},
    }
    (work / "run.yaml").write_text(yaml.safe_dump(cfg))
    return finetune(load_config(work / "run.yaml"))


def test_run_directory_and_evaluation(tuned_run):
    run = tuned_run.run_dir
    assert tuned_run.global_step == 24
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["model"] == "smollm2-135m-instruct" and manifest["tokens_per_second"] > 0
    assert (run / "eval" / "report.html").is_file()
    saved = json.loads((run / "eval" / "metrics.json").read_text())["metrics"]
    assert saved["accuracy"]["tuned"] == tuned_run.eval.metrics["accuracy"].tuned


def test_tuned_beats_base_with_a_confident_margin(tuned_run):
    metrics = tuned_run.eval.metrics
    assert tuned_run.eval.examples == 16
    # Answer loss: the base model answers in sentences, so the bare label is unlikely to it; a few
    # steps make it the expected answer. Measured: 4.50 -> 0.71, CI of the change [-4.33, -3.37].
    loss = metrics["loss"]
    assert loss.diff < -1.0, (loss.base, loss.tuned)
    assert loss.diff_ci[1] < -0.5, loss.diff_ci
    # Accuracy over the 8 labels: the base rarely names one, the tuned model does. Measured: 0.06 -> 0.56,
    # CI [+0.25, +0.75]; 16 steps at 1e-3 reached only 0.19 (CI [-0.125, +0.375]) and failed this check.
    accuracy = metrics["accuracy"]
    assert accuracy.diff >= 0.25, (accuracy.base, accuracy.tuned)
    assert accuracy.diff_ci[0] > 0, accuracy.diff_ci


def test_tuned_generations_stop_at_the_end_of_turn_token(tuned_run):
    loaded = load(tuned_run.run_dir)
    tok, model = loaded.tokenizer, loaded.model.eval()
    end_of_turn = tok.convert_tokens_to_ids("<|im_end|>")
    rows = [json.loads(l) for l in (tuned_run.run_dir / "data" / "test.jsonl").read_text().splitlines()][:4]
    tok.padding_side = "left"
    prompts = [tok.apply_chat_template(r["messages"][:-1], add_generation_prompt=True, tokenize=False) for r in rows]
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=48, do_sample=False, pad_token_id=tok.pad_token_id)
    for row in out[:, enc["input_ids"].shape[1]:].tolist():
        assert end_of_turn in row, tok.decode(row)
        # A label is a few tokens: the answer ends long before the limit instead of rambling on.
        assert row.index(end_of_turn) < 16, tok.decode(row)
