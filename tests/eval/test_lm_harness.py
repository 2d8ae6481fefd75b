"""`tuneforge lm-eval`: lm-evaluation-harness on a local task built from a run's held-out split."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

pytest.importorskip("lm_eval", reason="lm-evaluation-harness (pip install 'tuneforge[interop]')")


@pytest.fixture
def cli():
    from tuneforge.cli.main import main

    return main


@pytest.fixture
def run_copy(lora_run, tmp_path):
    """A private copy of the eval LoRA run: lm-eval writes merged/ and eval/lm_eval/ into it."""
    return shutil.copytree(lora_run, tmp_path / "tickets")


def _answer_with_tuned_outputs(run) -> list[str]:
    """Replace each reference with what the tuned (merged) model answers in ``tuneforge eval``'s own generation."""
    from tuneforge.config.schema import GenerationConfig
    from tuneforge.eval.generate import generate_answers
    from tuneforge.export import merge
    from tuneforge.models import load_model

    model, tokenizer, _ = load_model(str(merge(run)))
    rows = [json.loads(line) for line in (run / "data" / "test.jsonl").read_text().splitlines()]
    answers = generate_answers(model.eval(), tokenizer, rows, GenerationConfig(max_new_tokens=8, batch_size=1)).texts
    for row, answer in zip(rows, answers):
        row["messages"][-1]["content"] = answer
    (run / "data" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return answers


def test_lm_eval_sees_what_tuneforge_eval_sees(run_copy):
    """lm-eval's greedy answers equal tuneforge's on every example: same prompt text, stop token and stripping."""
    from tuneforge.eval.lm_harness import run_lm_eval

    answers = _answer_with_tuned_outputs(run_copy)
    result = run_lm_eval(run_copy, batch_size=1, max_gen_toks=8)
    assert result.task.examples == len(answers) == 6
    assert result.scores["tuned"] == 1.0, result.table()
    # The base model (adapter off) answers differently on at least one ticket.
    assert result.scores["base"] < 1.0
    assert "| tuned | 1.000 |" in result.table()

    folder = run_copy / "eval" / "lm_eval"
    config = yaml.safe_load((folder / "tuneforge_heldout.yaml").read_text())
    assert config["dataset_path"] == "json" and config["output_type"] == "generate_until"
    assert config["generation_kwargs"]["until"] == ["<|im_end|>"]
    rows = [json.loads(line) for line in (folder / "tuneforge_heldout.jsonl").read_text().splitlines()]
    assert rows[0]["prompt"].startswith("<|im_start|>system\nClassify the support ticket")
    assert rows[0]["prompt"].endswith("<|im_start|>assistant\n")
    saved = json.loads(result.results_path.read_text())
    assert saved["models"]["tuned"].endswith("merged") and set(saved["results"]) == {"base", "tuned"}


def test_lm_eval_cli(cli, run_copy, capsys):
    assert cli(["lm-eval", str(run_copy), "--max-examples", "2", "--max-gen-toks", "4"]) == 0
    out = capsys.readouterr().out
    assert "lm-eval exact_match (2 held-out examples)" in out and "| base |" in out and "| tuned |" in out
    assert "tuneforge_heldout.yaml" in out


def test_lm_eval_bad_inputs(cli, run_copy, tmp_path, capsys):
    assert cli(["lm-eval", str(tmp_path / "nope")]) == 2
    assert "is not a run directory" in capsys.readouterr().err
    (run_copy / "data" / "test.jsonl").unlink()
    assert cli(["lm-eval", str(run_copy)]) == 2
    assert "no held-out examples at" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": []}\nnot json\n')
    assert cli(["lm-eval", str(run_copy), "--data", str(bad)]) == 2
    assert "bad.jsonl line 2: not valid JSON" in capsys.readouterr().err
