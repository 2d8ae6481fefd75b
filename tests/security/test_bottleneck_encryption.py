"""An encrypted run with bottleneck adapters: the adapter is sealed, loads back with the key, and is never merged."""

from __future__ import annotations

import pytest
import torch

from tuneforge import SecurityError, finetune, load_config
from tuneforge.cli.main import main
from tuneforge.models import load
from tuneforge.models.sealed import ADAPTER_WEIGHTS, load_state
from tuneforge.rundir import RunDir
from tuneforge.security.crypto import is_encrypted

from tests.security.conftest import KEY_ENV, encrypted_config, new_key


def test_encrypted_bottleneck_run_loads_back_with_its_key(tmp_path, tiny_model_dir, monkeypatch, capsys):
    monkeypatch.setenv(KEY_ENV, new_key())
    method = {"name": "bottleneck", "reduction_factor": 4, "placement": "pfeiffer"}
    config = encrypted_config(tmp_path, tiny_model_dir, name="enc-bn", method=method, eval={"enabled": False})
    run = RunDir(finetune(load_config(config)).run_dir)
    assert is_encrypted(run.adapter / ADAPTER_WEIGHTS)
    state = load_state(run.adapter / ADAPTER_WEIGHTS)
    assert state and all(".mlp.bottleneck_" in name for name in state)  # pfeiffer: after the MLP only
    loaded = load(run.root)
    params = {n.replace(".default", ""): p for n, p in loaded.model.named_parameters()}
    for name, tensor in state.items():  # every trained tensor is in the loaded model, unchanged
        assert torch.equal(params[name].detach(), tensor), name
    assert any(t.abs().sum() > 0 for n, t in state.items() if "bottleneck_up" in n)  # trained, not the zero init
    assert main(["merge", str(run.root)]) == 2
    assert "cannot be merged into the base weights" in " ".join(capsys.readouterr().err.split())
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(SecurityError, match="adapter_model.safetensors is encrypted"):
        load(run.root)
