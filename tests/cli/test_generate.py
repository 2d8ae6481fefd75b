"""`tuneforge generate` and `tuneforge chat` on the tiny model, in-process."""

import io
import json

import pytest
import yaml

from tuneforge.cli.main import main


# The random tiny model answers every prompt with newlines (empty once stripped), so a test of what
# `generate` prints needs a model with known answers: the tiny model taught these two by heart.
ANSWERS = {"hello": "hi there", "where is my parcel": "in transit"}


@pytest.fixture(scope="module")
def memorised_run(tiny_model_dir, tmp_path_factory):
    from tuneforge import finetune, load_config

    work = tmp_path_factory.mktemp("memorised")
    chats = [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": a}]} for p, a in ANSWERS.items()]
    (work / "chats.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats))
    cfg = {"name": "memorised", "out_dir": str(work / "runs"), "model": str(tiny_model_dir), "method": {"name": "full"},
           "data": {"train": str(work / "chats.jsonl"), "split": {"validation": 0.0, "test": 0.0}},
           "training": {"max_steps": 40, "per_device_batch_size": 2, "learning_rate": 1e-2, "lr_scheduler": "constant",
                        "warmup_ratio": 0.0, "save_strategy": "no", "max_seq_length": 128, "precision": "fp32"},
           "eval": {"enabled": False}}
    (work / "run.yaml").write_text(yaml.safe_dump(cfg))
    return finetune(load_config(work / "run.yaml")).run_dir


def test_generate_answers_each_prompt(memorised_run, capsys):
    prompts = list(ANSWERS)
    code = main(["generate", str(memorised_run), "-p", prompts[0], "-p", prompts[1], "--max-new-tokens", "8"])
    out = capsys.readouterr().out
    assert code == 0
    # Each prompt is echoed and followed by its own answer, complete, in order, and nothing after it
    # (the end-of-turn token stopped generation well before 8 tokens).
    assert out.strip().splitlines() == ["> hello", "hi there", "> where is my parcel", "in transit"]


def test_generate_one_prompt_prints_only_the_answer(memorised_run, capsys):
    assert main(["generate", str(memorised_run), "-p", "where is my parcel", "--max-new-tokens", "8"]) == 0
    assert capsys.readouterr().out.strip() == "in transit"


def test_chat_reads_turns_until_exit(tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n/reset\nhi again\n/exit\n"))
    code = main(["chat", str(tiny_model_dir), "--max-new-tokens", "3", "--temperature", "0"])
    out = capsys.readouterr().out
    assert code == 0 and out.count("model> ") == 2


def test_chat_ends_on_end_of_input(tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["chat", str(tiny_model_dir)]) == 0


def test_every_command_has_help(capsys):
    from tuneforge.cli.main import COMMANDS

    for name in COMMANDS:
        try:
            code = main([name, "--help"])
        except SystemExit as exc:  # pragma: no cover - typer may exit for groups
            code = exc.code
        assert code == 0, name
        assert "Usage" in capsys.readouterr().out
