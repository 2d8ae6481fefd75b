"""`tuneforge validate` checks a config and its data without training."""

import json

import yaml

from tuneforge.cli.main import main


def test_validate_prints_the_data_report(tmp_path, tiny_model_dir, capsys):
    data = tmp_path / "chat.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]}
            for i in range(20)]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n" + json.dumps(rows[0]) + "\n{not json\n")
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"model": str(tiny_model_dir), "data": {"train": str(data), "on_bad_rows": "skip"}}))
    report = tmp_path / "report.json"
    assert main(["validate", str(cfg), "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "config OK" in out and "data OK" in out
    # The memory and time estimate for this machine, by component.
    assert "estimated peak memory" in out and "activations saved for backward" in out and "time per epoch" in out
    written = json.loads(report.read_text())
    assert "duplicate" in json.dumps(written) and "malformed" in json.dumps(written)
    # With a time budget, the steps it should allow (capped by max_steps).
    assert main(["validate", str(cfg), "--set", "training.max_time=5m", "--set", "training.max_steps=7"]) == 0
    assert "estimated steps in the time budget (training.max_time): 7 " in capsys.readouterr().out


def test_validate_stops_on_a_malformed_row_with_file_and_line(tmp_path, tiny_model_dir, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n{oops\n')
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"model": str(tiny_model_dir), "data": {"train": str(data)}}))
    assert main(["validate", str(cfg)]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err
