"""Hostile model folders and run directories: custom code, pickle weights, swapped files.

A run folder or model downloaded from elsewhere must not run code on this machine
because its files ask for it: custom modelling code needs --trust-remote-code,
pickle-based weights need model.allow_pickle, and pinned digests must match.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from tests.serve.conftest import save_lora_adapter
from tuneforge.cli.main import main
from tuneforge.config.schema import ModelConfig
from tuneforge.errors import ModelError, SecurityError
from tuneforge.models import load, load_model
from tuneforge.security.model_files import file_sha256

_EVIL_CODE = '''
from pathlib import Path
from transformers import LlamaConfig, LlamaForCausalLM

Path({marker!r}).write_text("custom code ran")


class EvilConfig(LlamaConfig):
    model_type = "tuneforge_evil"


class EvilForCausalLM(LlamaForCausalLM):
    config_class = EvilConfig
'''


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "10000")  # rich would wrap long error lines (paths) on a narrow terminal


@pytest.fixture
def evil_run(tmp_path, tiny_model_dir):
    """A run whose config.yaml says trust_remote_code: true, over a model folder whose auto_map imports evil.py."""
    from tuneforge.config import load_config

    marker = tmp_path / "marker.txt"
    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "evil-model"))
    config = json.loads((model / "config.json").read_text())
    config.update(model_type="tuneforge_evil", architectures=["EvilForCausalLM"],
                  auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilForCausalLM"})
    (model / "config.json").write_text(json.dumps(config))
    (model / "evil.py").write_text(_EVIL_CODE.format(marker=str(marker)))
    run = tmp_path / "evil-run"
    save_lora_adapter(tiny_model_dir, run / "adapter", seed=1)
    adapter_cfg = json.loads((run / "adapter" / "adapter_config.json").read_text())
    adapter_cfg["base_model_name_or_path"] = str(model)
    (run / "adapter" / "adapter_config.json").write_text(json.dumps(adapter_cfg))
    cfg = load_config(data={"model": {"name_or_path": str(model), "trust_remote_code": True},
                            "data": {"train": "x.jsonl"}})
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return run, marker


@pytest.mark.parametrize("argv", [
    ["generate", "{run}", "-p", "hi"],
    ["chat", "{run}"],
    ["merge", "{run}", "-o", "{tmp}/merged"],
    ["export", "{run}", "--format", "hf", "-o", "{tmp}/export"],
    ["serve", "{run}", "--no-auth", "--port", "{port}"],
    ["eval", "{run}", "--data", "{tmp}/test.jsonl", "--baseline", "none"],
])
def test_stored_trust_remote_code_is_ignored(evil_run, tmp_path, capsys, argv):
    import socket

    run, marker = evil_run
    with socket.socket() as probe:  # a free port, so serve gets as far as loading the model
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "test.jsonl").write_text(json.dumps({"prompt": "hi", "completion": "there"}) + "\n")
    code = main([a.format(run=run, tmp=tmp_path, port=port) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and not marker.exists()
    assert "--trust-remote-code" in err and "evil.EvilForCausalLM" in err and "Traceback" not in err


def test_python_api_ignores_stored_trust_remote_code(evil_run):
    run, marker = evil_run
    with pytest.raises(ModelError, match="never runs a model's code unless"):
        load(run)
    with pytest.raises(ModelError, match="--trust-remote-code"):
        load(run / "adapter")  # the adapter folder names the same base
    assert not marker.exists()


def test_flag_runs_the_code_and_warns(evil_run, capsys):
    run, marker = evil_run
    assert main(["generate", str(run), "-p", "hi", "--max-new-tokens", "2", "--trust-remote-code"]) == 0
    assert marker.read_text() == "custom code ran"
    assert "warning: --trust-remote-code" in capsys.readouterr().err


# ----------------------------------------------------------------------------- pickle weights


def _pickle_only_model(src: Path, dst: Path, payload=None) -> Path:
    """A copy of a model folder whose weights are pytorch_model.bin (a pickle), optionally a hostile one."""
    from safetensors.torch import load_file

    dst = Path(shutil.copytree(src, dst))
    state = load_file(dst / "model.safetensors")
    (dst / "model.safetensors").unlink()
    torch.save(payload if payload is not None else state, dst / "pytorch_model.bin")
    return dst


class _RunsCode:
    """Unpickling this calls os.system: what a hostile .bin file does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"echo pwned > {self.marker}",)


def test_pickle_weights_are_refused_naming_the_file(tiny_model_dir, tmp_path, capsys):
    model = _pickle_only_model(tiny_model_dir, tmp_path / "bin-model")
    with pytest.raises(SecurityError, match=r"pytorch_model\.bin is a pickle-based weight file.*allow_pickle"):
        load_model(str(model))
    assert main(["generate", str(model), "-p", "hi"]) == 2
    assert "pytorch_model.bin" in capsys.readouterr().err


def test_allow_pickle_loads_plain_tensors(tiny_model_dir, tmp_path):
    model = _pickle_only_model(tiny_model_dir, tmp_path / "bin-model")
    loaded, _, _ = load_model(ModelConfig(name_or_path=str(model), allow_pickle=True))
    reference, _, _ = load_model(str(tiny_model_dir))
    for (name, a), (_, b) in zip(loaded.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name


def test_allow_pickle_still_refuses_code_in_the_pickle(tiny_model_dir, tmp_path):
    marker = tmp_path / "pwned"
    model = _pickle_only_model(tiny_model_dir, tmp_path / "bin-model", payload={"x": _RunsCode(marker)})
    with pytest.raises(ModelError, match="cannot load model"):
        load_model(ModelConfig(name_or_path=str(model), allow_pickle=True))
    assert not marker.exists()  # weights_only=True refused to call os.system


def test_pickle_only_adapter_is_refused(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    adapter = save_lora_adapter(tiny_model_dir, tmp_path / "adapter", seed=2)
    torch.save(load_file(adapter / "adapter_model.safetensors"), adapter / "adapter_model.bin")
    (adapter / "adapter_model.safetensors").unlink()
    with pytest.raises(SecurityError, match=r"adapter_model\.bin is a pickle-based"):
        load(adapter)


def test_safetensors_win_over_a_pickle_beside_them(tiny_model_dir, tmp_path):
    marker = tmp_path / "pwned"
    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "both"))
    torch.save({"x": _RunsCode(marker)}, model / "pytorch_model.bin")
    load_model(str(model))
    assert not marker.exists()


# ----------------------------------------------------------------------------- pinned digests


def test_sha256_pin_accepts_the_right_digest(tiny_model_dir):
    digest = file_sha256(tiny_model_dir / "model.safetensors")
    load_model(ModelConfig(name_or_path=str(tiny_model_dir), sha256=digest))
    load_model(ModelConfig(name_or_path=str(tiny_model_dir), sha256={"model.safetensors": digest.upper()}))


def test_sha256_pin_refuses_a_swapped_file(tiny_model_dir, tmp_path):
    from tuneforge.models import save_tiny_model

    digest = file_sha256(tiny_model_dir / "model.safetensors")
    swapped = save_tiny_model(tmp_path / "swapped", seed=5)  # same layout, other weights
    with pytest.raises(SecurityError, match=r"swapped/model\.safetensors: SHA-256 .* does not match"):
        load_model(ModelConfig(name_or_path=str(swapped), sha256=digest))


def test_sha256_pin_refuses_unpinned_and_missing_files(tiny_model_dir, tmp_path):
    digest = file_sha256(tiny_model_dir / "model.safetensors")
    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "extra"))
    torch.save({}, model / "pytorch_model.bin")
    with pytest.raises(SecurityError, match=r"pytorch_model\.bin is not pinned"):
        load_model(ModelConfig(name_or_path=str(model), sha256={"model.safetensors": digest}))
    with pytest.raises(SecurityError, match="one digest but the model has 2 weight files"):
        load_model(ModelConfig(name_or_path=str(model), sha256=digest))
    with pytest.raises(SecurityError, match=r"pins model-00002\.safetensors, which is not among"):
        load_model(ModelConfig(name_or_path=str(tiny_model_dir),
                               sha256={"model.safetensors": digest, "model-00002.safetensors": digest}))


def test_sha256_must_be_hex_digests():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="not a 64-character hex SHA-256"):
        ModelConfig(sha256="abc")
    with pytest.raises(ValidationError, match="empty mapping"):
        ModelConfig(sha256={})
