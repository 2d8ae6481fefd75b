"""Model resolution and loading: folders, aliases, run directories, and clear errors for what cannot load."""

import pytest

from tuneforge import ModelError
from tuneforge.cli.main import main
from tuneforge.models import load, load_model, resolve


def test_local_folder_loads(tiny_model_dir):
    model, tok, path = load_model(str(tiny_model_dir))
    assert path == str(tiny_model_dir) and tok.pad_token is not None
    assert type(model).__name__ == "LlamaForCausalLM"


def test_missing_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="model path not found: ./nowhere/model"):
        resolve("./nowhere/model")


def test_folder_without_config_mentions_its_gguf(tmp_path):
    (tmp_path / "weights.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelError, match="set model.gguf_file"):
        resolve(str(tmp_path))


def test_hub_id_offline_is_refused_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE=1 forbids downloading"):
        resolve("some-org/some-model-that-is-not-cached")


def test_run_directory_is_refused_by_resolve_but_loaded_by_load(tmp_path, tiny_model_dir):
    import yaml
    from peft import LoraConfig, get_peft_model

    from tuneforge.config import load_config

    run = tmp_path / "run"
    model, tok, _ = load_model(str(tiny_model_dir))
    peft = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    peft.save_pretrained(str(run / "adapter"))
    tok.save_pretrained(str(run / "adapter"))
    cfg = load_config(data={"model": str(tiny_model_dir), "data": {"train": "x.jsonl"}})
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    with pytest.raises(ModelError, match="is a run directory"):
        resolve(str(run))
    loaded = load(run)
    assert loaded.run is not None and loaded.adapter_path == run / "adapter"
    assert type(loaded.model).__name__ == "PeftModelForCausalLM"
    assert type(load(run, merge=True).model).__name__ == "LlamaForCausalLM"
    # An adapter folder alone works too: its base comes from adapter_config.json.
    assert load(run / "adapter").base_path == str(tiny_model_dir)


def test_generate_on_a_missing_model_exits_with_a_message(capsys):
    assert main(["generate", "./no/such/model", "-p", "hi"]) == 2
    assert "model path not found" in capsys.readouterr().err


@pytest.mark.e2e
def test_embedded_alias_is_dequantized_once_into_a_plain_folder(smollm2_dir):
    import json
    from pathlib import Path

    folder = Path(smollm2_dir)
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and (folder / "model.safetensors").is_file()
    assert resolve("smollm2-135m-instruct") == smollm2_dir  # cached: the second call is instant
