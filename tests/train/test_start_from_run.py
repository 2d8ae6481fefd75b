"""A finished run as the starting model: base + its adapter merged, recorded as the parent in the manifest."""

from __future__ import annotations

import json

import pytest
import torch

from tuneforge import finetune, load_config
from tuneforge.errors import ModelError
from tuneforge.models import load, resolve
from tuneforge.models.from_run import parent_record, weights_digest
from tuneforge.rundir import RunDir


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path / "cache"))


def _logits(model, tokenizer):
    ids = tokenizer("Classify the ticket: where is my parcel 12", return_tensors="pt").input_ids
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_a_second_run_trains_on_the_first_runs_merged_weights(run_config, monkeypatch):
    first = finetune(load_config(run_config("first")))
    second_cfg = load_config(run_config("second", model=str(first.run_dir), training={"max_steps": 3}))
    import tuneforge.models.from_run as from_run
    import tuneforge.train.context as context

    recorded = []
    for module in (context, from_run):  # wherever a caller looks it up
        monkeypatch.setattr(module, "parent_record", lambda ref: recorded.append(ref) or parent_record(ref))
    second = finetune(second_cfg)
    # The parent (its weights hashed: a whole model folder after full fine-tuning) is recorded once, when the
    # run starts; the manifest copies parent.json instead of hashing again.
    assert recorded == [str(first.run_dir)]

    manifest = json.loads(RunDir(second.run_dir).manifest.read_text())
    parent = manifest["parent"]
    assert parent["run"] == str(first.run_dir.resolve()) and parent["stage"] == "first"
    assert parent["weights_sha256"] == weights_digest(RunDir(first.run_dir)) and parent["objective"] == "sft"
    assert "parent" not in json.loads(RunDir(first.run_dir).manifest.read_text())

    # The second run's base (its adapter switched off) is the first run with its adapter merged in,
    # and loading the second run (generate/eval/serve do) rebuilds base -> first merged -> second adapter.
    merged_first = load(first.run_dir, merge=True)
    expected = _logits(merged_first.model, merged_first.tokenizer)
    loaded = load(second.run_dir)
    with loaded.model.disable_adapter():
        assert torch.allclose(_logits(loaded.model, loaded.tokenizer), expected, atol=1e-5)
    assert not torch.allclose(_logits(loaded.model, loaded.tokenizer), expected, atol=1e-5)  # it trained on top
    assert resolve(str(first.run_dir)) == loaded.base_path  # one merged folder, reused


def test_an_unfinished_run_is_refused_as_a_starting_model(run_config, tmp_path):
    first = finetune(load_config(run_config("first")))
    status = RunDir(first.run_dir).status
    status.write_text(json.dumps({**json.loads(status.read_text()), "state": "failed"}))
    with pytest.raises(ModelError, match="state 'failed'.*only once it has finished"):
        resolve(str(first.run_dir))
