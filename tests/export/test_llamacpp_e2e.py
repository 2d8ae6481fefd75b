"""End to end on a tuned SmolLM2-135M-Instruct: its GGUF runs in llama.cpp as it runs in transformers."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import yaml

pytest.importorskip("llama_cpp", reason="llama-cpp-python (pip install 'tuneforge[interop]') runs the GGUF")
pytestmark = pytest.mark.e2e

TICKETS = Path(__file__).resolve().parents[2] / "examples" / "data" / "tickets.jsonl"
LABELS = ["billing", "technical_issue", "account_access", "shipping", "refund", "cancellation", "product_question",
          "feedback"]


def tuned_ticket_run(work: Path, *, steps: int, rows: int = 400) -> Path:
    """A short LoRA run of SmolLM2 on the bundled tickets; returns the run directory."""
    from tuneforge import finetune, load_config

    (work / "tickets.jsonl").write_text("".join(itertools.islice(TICKETS.open(), rows)))
    cfg = {
        "name": "tickets", "out_dir": str(work / "runs"), "model": "smollm2-135m-instruct",
        "method": {"name": "lora", "r": 16, "alpha": 32},
        "data": {"train": str(work / "tickets.jsonl"), "split": {"validation": 0.0, "test": 0.1}},
        "training": {"max_steps": steps, "per_device_batch_size": 2, "learning_rate": 1e-3, "max_seq_length": 256,
                     "logging_steps": 10, "save_strategy": "no"},
        "eval": {"enabled": False, "labels": LABELS},
    }
    (work / "run.yaml").write_text(yaml.safe_dump(cfg))
    return finetune(load_config(work / "run.yaml")).run_dir


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory):
    return tuned_ticket_run(tmp_path_factory.mktemp("llamacpp-e2e"), steps=40)


def test_tuned_smollm2_in_llama_cpp(tuned_run, tmp_path):
    from tuneforge.data import prompt_messages, reference
    from tuneforge.export import check_llamacpp, run

    result = run(tuned_run, fmt="gguf", quant="f16")
    # The built-in prompts: f16 agrees with transformers on the first 16 greedy tokens of each
    # (or first differs on a measured near-tie, named in the table).
    assert result.llamacpp.explained, result.llamacpp.table()
    assert result.modelfile_problems == []

    rows = [json.loads(line) for line in (tuned_run / "data" / "test.jsonl").read_text().splitlines()][:4]
    report = check_llamacpp(tuned_run / "merged", result.files[0], [prompt_messages(r) for r in rows],
                            chat=prompt_messages(rows[0]), chat_max_tokens=16)
    assert all(c.same_prompt_tokens for c in report.checks)
    assert report.explained, report.table()
    chat = report.chat
    # A chat completion through the GGUF's own template ends at <|im_end|> and answers with a label.
    assert chat.same_prompt and chat.stop == ["<|im_end|>"]
    assert chat.stopped_at_end_of_turn, chat
    assert chat.answer.strip() == chat.reference_answer.strip()
    assert chat.answer.strip() in LABELS, (chat.answer, reference(rows[0]))
