"""`tuneforge score` on a tiny reward-model run: pairs give accuracy with a CI, completions one score each."""

from __future__ import annotations

import json

from tuneforge.cli.main import main

from ..conftest import REWARD_MARK, write_separable_pairs


def test_score_pairs_prints_accuracy_and_writes_one_row_per_pair(reward_run, tmp_path, capsys):
    pairs = write_separable_pairs(tmp_path / "held.jsonl", n=24, seed=7)
    out = tmp_path / "scores.jsonl"
    assert main(["score", str(reward_run), "--data", str(pairs), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["line"] for r in rows] == list(range(1, 25))
    assert all(r["correct"] == (r["chosen_reward"] > r["rejected_reward"]) for r in rows)
    assert sum(r["correct"] for r in rows) >= 20  # unseen pairs, ranked by the marker
    err = capsys.readouterr().err
    accuracy = sum(r["correct"] for r in rows) / 24
    assert f"pairwise_accuracy {accuracy:.3f} (95% CI [" in err and "n=24; chance 0.5)" in err
    assert "scored 24 pairs" in err


def test_score_completions_prints_one_reward_per_row(reward_run, tmp_path, capsys):
    data = tmp_path / "completions.jsonl"
    rows = [{"prompt": "Classify the ticket: my invoice 5 shows the wrong amount", "completion": c}
            for c in (f"{REWARD_MARK} billing", "billing")]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["score", str(reward_run), "--data", str(data)]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [p["line"] for p in printed] == [1, 2] and printed[0]["reward"] > printed[1]["reward"]


def test_score_errors_name_what_and_where(reward_run, tiny_model_dir, tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"
    assert main(["score", str(reward_run), "--data", str(missing)]) == 2
    assert f"data file not found: {missing}" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": 3, "rejected": "c"\n')
    assert main(["score", str(reward_run), "--data", str(bad)]) == 2
    assert f"{bad}:2: not valid JSON" in capsys.readouterr().err
    text = tmp_path / "text.jsonl"
    text.write_text('{"text": "just text"}\n')
    assert main(["score", str(reward_run), "--data", str(text)]) == 2
    assert f"{text}:1: nothing to score" in capsys.readouterr().err
    good = write_separable_pairs(tmp_path / "p.jsonl", n=4)
    assert main(["score", str(tiny_model_dir), "--data", str(good)]) == 2
    assert "is not a reward model (it is a model of a causal language model)" in capsys.readouterr().err
