"""End to end on the real embedded SmolLM2: a short LoRA run, then the tuned model must stop by itself."""

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
        "training": {"max_steps": 16, "per_device_batch_size": 2, "learning_rate": 1e-3, "max_seq_length": 256,
                     "logging_steps": 4, "save_strategy": "no"},
        "eval": {"max_examples": 8, "generation": {"max_new_tokens": 8, "batch_size": 8},
                 "labels": ["billing", "technical_issue", "account_access", "shipping", "refund", "cancellation",
                            "product_question", "feedback"],
                 "bootstrap_samples": 200, "forgetting": {"max_documents": 4}},
    }
    (work / "run.yaml").write_text(yaml.safe_dump(cfg))
    return finetune(load_config(work / "run.yaml"))


def test_run_directory_and_evaluation(tuned_run):
    run = tuned_run.run_dir
    assert tuned_run.global_step == 16
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["model"] == "smollm2-135m-instruct" and manifest["tokens_per_second"] > 0
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert "accuracy" in json.dumps(metrics)
    assert (run / "eval" / "report.html").is_file()


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
