"""Encrypted weights: adapters, full models and merges load in memory with the key; exports need --decrypt."""

from __future__ import annotations


import pytest
import torch

from tuneforge import finetune, load_config
from tuneforge.cli.main import main
from tuneforge.models import load
from tuneforge.models.sealed import ADAPTER_WEIGHTS, MODEL_WEIGHTS, load_state
from tuneforge.rundir import RunDir
from tuneforge.security.crypto import is_encrypted

from tests.security.conftest import KEY_ENV, encrypted_config, new_key


def _logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer("hello world", return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).logits


def test_adapter_is_encrypted_and_loads_with_the_key(run_key):
    run = run_key
    assert is_encrypted(run.adapter / ADAPTER_WEIGHTS)
    state = load_state(run.adapter / ADAPTER_WEIGHTS)
    assert state and all("lora_" in name for name in state)
    loaded = load(run.root)
    params = dict(loaded.model.named_parameters())
    for name, tensor in state.items():  # every trained tensor is in the loaded model, unchanged
        match = [p for n, p in params.items() if n.replace(".default", "") == name]
        assert match and torch.equal(match[0].detach(), tensor), name
    assert any(t.abs().sum() > 0 for n, t in state.items() if "lora_B" in n)  # trained, not the zero init


def test_generate_reads_an_encrypted_run(run_key, capsys):
    assert main(["generate", str(run_key.root), "-p", "where is my parcel", "--max-new-tokens", "3"]) == 0


def test_generate_without_the_key_names_the_file(encrypted_run, monkeypatch, capsys):
    run, _, _ = encrypted_run
    monkeypatch.delenv(KEY_ENV, raising=False)
    assert main(["generate", str(run.root), "-p", "hi", "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert "adapter_model.safetensors is encrypted" in err and "Traceback" not in err


def test_eval_of_an_encrypted_run_writes_encrypted_predictions(run_key, encrypted_run, tmp_path, monkeypatch):
    out = tmp_path / "eval-again"
    assert main(["eval", str(run_key.root), "--max-examples", "2", "--baseline", "none", "--output", str(out)]) == 0
    assert is_encrypted(out / "predictions.jsonl") and is_encrypted(out / "report.md")
    (out / "report.md").unlink()
    monkeypatch.setenv("TUNEFORGE_KEY", encrypted_run[2])  # outside its run, the key comes from the environment
    assert main(["report", str(out)]) == 0  # re-rendered outside its run: still encrypted
    assert is_encrypted(out / "report.md")


def test_merge_stays_encrypted_and_matches_the_adapter(run_key, encrypted_run, tmp_path, monkeypatch):
    out = tmp_path / "merged"
    assert main(["merge", str(run_key.root), "-o", str(out)]) == 0
    assert is_encrypted(out / MODEL_WEIGHTS)
    monkeypatch.setenv("TUNEFORGE_KEY", encrypted_run[2])  # outside its run, the key comes from the environment
    merged = load(out)
    adapter = load(run_key.root, merge=True)
    assert torch.allclose(_logits(merged.model, merged.tokenizer), _logits(adapter.model, adapter.tokenizer), atol=1e-5)


def test_export_needs_decrypt_and_then_writes_plaintext(run_key, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", str(run_key.root), "-o", str(out)]) == 2
    assert "is encrypted" in capsys.readouterr().err and "--decrypt" not in str(out) and not out.exists()
    assert main(["export", str(run_key.root), "-o", str(out), "--decrypt"]) == 0
    assert not is_encrypted(out / MODEL_WEIGHTS) and not is_encrypted(out / "adapter" / ADAPTER_WEIGHTS)
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(str(out)) is not None


def test_full_fine_tune_is_encrypted_and_reloads(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv(KEY_ENV, new_key())
    cfg = load_config(encrypted_config(tmp_path, tiny_model_dir, name="full", method={"name": "full"},
                                       eval={"enabled": False},
                                       training={"max_steps": 2, "per_device_batch_size": 2, "max_seq_length": 96,
                                                 "precision": "fp32", "save_strategy": "no", "learning_rate": 1e-3}))
    run = RunDir(finetune(cfg).run_dir)
    assert is_encrypted(run.model / MODEL_WEIGHTS)
    state = load_state(run.model / MODEL_WEIGHTS)
    loaded = load(run.root)
    own = loaded.model.state_dict()
    assert all(torch.equal(own[n], t) for n, t in state.items())
    base = load(str(tiny_model_dir))
    assert not torch.allclose(_logits(loaded.model, loaded.tokenizer), _logits(base.model, base.tokenizer))


def test_lm_eval_refuses_an_encrypted_run(run_key):
    from tuneforge.errors import EvalError
    from tuneforge.eval.lm_harness import run_lm_eval

    with pytest.raises(EvalError, match="is encrypted .* lm-eval reads plaintext files only"):
        run_lm_eval(run_key.root)
    assert not (run_key.eval / "lm_eval").exists()


def test_serve_loads_an_encrypted_run_and_an_encrypted_extra_adapter(run_key, tiny_model_dir):
    from tuneforge.serve import load_engine

    engine = load_engine(run_key.root, adapters={"again": run_key.root})
    assert engine.names == ["enc", "again"]
    state = load_state(run_key.adapter / ADAPTER_WEIGHTS)
    params = dict(engine.model.named_parameters())
    name = next(n for n in state if "lora_B" in n)
    served = next(p for n, p in params.items() if n.replace(".again", "") == name)
    assert torch.equal(served.detach().cpu(), state[name])
