"""resolve_target: one answer to "what does this path point at" for every command."""

import json

import pytest
import yaml

from tuneforge import ModelError
from tuneforge.models import resolve_target


def test_each_kind_is_recognised(tmp_path, tiny_model_dir):
    assert resolve_target("smollm2-135m-instruct").kind == "alias"
    assert resolve_target("some-org/some-model").kind == "hub"
    model = resolve_target(tiny_model_dir)
    assert (model.kind, model.path, model.weights) == ("model", tiny_model_dir, tiny_model_dir)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_target(gguf).kind == "gguf"
    adapter = tmp_path / "adapter-only"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_model_dir)}))
    assert resolve_target(adapter).kind == "adapter"
    run = tmp_path / "runs" / "r"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text("{}")
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "r"}))
    found = resolve_target(run)
    assert found.kind == "run" and found.weights == run / "adapter" and found.run.root == run


def test_what_is_not_loadable_is_a_clear_error(tmp_path, monkeypatch):
    unfinished = tmp_path / "runs" / "unfinished"
    unfinished.mkdir(parents=True)
    (unfinished / "config.yaml").write_text("name: unfinished\n")
    with pytest.raises(ModelError, match="has no trained weights yet"):
        resolve_target(unfinished)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "w.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelError, match="neither a run directory.*holds w.gguf"):
        resolve_target(tmp_path / "junk")
    with pytest.raises(ModelError, match="model path not found: ./nowhere"):
        resolve_target("./nowhere")
    # Shaped like a hub id, but its first part is a local folder: a typo of a local path.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError, match="model path not found: runs/typo"):
        resolve_target("runs/typo")
