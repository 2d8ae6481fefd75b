"""Every command that loads a run or model offers --trust-remote-code (and nothing turns it on by default)."""

from __future__ import annotations

import pytest

from tuneforge.cli.main import main


@pytest.mark.parametrize("command", ["generate", "chat", "merge", "export", "serve", "eval"])
def test_commands_offer_the_flag(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main([command, "--help"]) == 0
    assert "--trust-remote-code" in capsys.readouterr().out


def test_stored_flag_does_not_reach_the_model_config(tmp_path, tiny_model_dir, caplog):
    """load() passes the caller's flag, not the run's, down to transformers (the warning shows which was used)."""
    import yaml

    from tests.serve.conftest import save_lora_adapter
    from tuneforge.config import load_config
    from tuneforge.models import load

    run = tmp_path / "run"
    save_lora_adapter(tiny_model_dir, run / "adapter", seed=1)
    cfg = load_config(data={"model": {"name_or_path": str(tiny_model_dir), "trust_remote_code": True},
                            "data": {"train": "x.jsonl"}})
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    with caplog.at_level("WARNING", logger="tuneforge.models"):
        load(run)  # the tiny Llama needs no custom code, so it loads either way
        assert "trust_remote_code is on" not in caplog.text
        load(run, trust_remote_code=True)
        assert "trust_remote_code is on" in caplog.text
