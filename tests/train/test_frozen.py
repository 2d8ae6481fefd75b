"""training.frozen_weights: the frozen base held in bf16 gives the same training step as bf16 autocast over
fp32 weights, restores the exact fp32 weights afterwards, and is refused where it cannot apply."""

import copy
import json

import pytest
import torch

from tuneforge import finetune, load_config
from tuneforge.config.schema import RunConfig
from tuneforge.errors import ConfigError
from tuneforge.models import load
from tuneforge.rundir import RunDir
from tuneforge.train.estimate import BatchShape, estimate_memory, model_shape
from tuneforge.train.frozen import bf16_frozen_weights, frozen_linears, use_bf16_frozen


def _cfg(**sections) -> RunConfig:
    raw = {"model": "tiny", "data": {"train": "x.jsonl"}, "method": {"name": "lora"}, **sections}
    return RunConfig.model_validate(raw)


def _adapted(tiny_model_dir, method: str):
    from tuneforge import methods

    model = load(tiny_model_dir).model
    return methods.apply(model, _cfg(method={"name": method}).method)


def _step(model, ids):
    torch.manual_seed(0)  # the same dropout masks
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]


@pytest.mark.parametrize("method", ["lora", "ia3", "bottleneck"])
def test_a_training_step_is_bit_identical_and_the_fp32_weights_come_back_exactly(tiny_model_dir, method):
    model = _adapted(tiny_model_dir, method)
    reference = copy.deepcopy(model)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    ids = torch.randint(3, 200, (2, 24), generator=torch.Generator().manual_seed(1))
    want_loss, want_grads = _step(reference, ids)

    layers = frozen_linears(model)
    with bf16_frozen_weights(model) as held:
        assert held == sum(m.weight.numel() for m in layers) > 0
        assert all(m.weight.dtype == torch.bfloat16 for m in layers)
        embedding = model.get_input_embeddings().weight
        assert embedding.dtype == torch.float32  # the residual stream stays fp32
        loss, grads = _step(model, ids)
    assert torch.equal(loss, want_loss)
    assert len(grads) == len(want_grads) and all(torch.equal(a, b) for a, b in zip(grads, want_grads))
    after = dict(model.named_parameters())
    assert all(after[name].dtype == before[name].dtype and torch.equal(after[name].detach(), before[name]) for name in before)


def test_the_weights_come_back_when_training_fails(tiny_model_dir):
    model = _adapted(tiny_model_dir, "lora")
    before = [m.weight.detach().clone() for m in frozen_linears(model)]
    with pytest.raises(RuntimeError, match="boom"):
        with bf16_frozen_weights(model):
            raise RuntimeError("boom")
    assert all(torch.equal(m.weight, w) for m, w in zip(frozen_linears(model), before))


def test_nothing_changes_when_not_enabled(tiny_model_dir):
    model = _adapted(tiny_model_dir, "lora")
    with bf16_frozen_weights(model, enabled=False) as held:
        assert held == 0 and all(m.weight.dtype == torch.float32 for m in frozen_linears(model))


def test_auto_resolves_by_method_precision_encryption_and_launcher(monkeypatch):
    assert use_bf16_frozen(_cfg(), "bf16")
    assert not use_bf16_frozen(_cfg(), "fp32")  # auto on a CPU without native bf16
    assert not use_bf16_frozen(_cfg(method={"name": "dora"}), "bf16")  # DoRA's weight norm reads the base weight
    assert not use_bf16_frozen(_cfg(method={"name": "full"}), "bf16")
    assert not use_bf16_frozen(_cfg(training={"objective": "dpo"}), "bf16")
    assert not use_bf16_frozen(_cfg(training={"frozen_weights": "fp32"}), "bf16")
    assert use_bf16_frozen(_cfg(method={"name": "dora"}, training={"frozen_weights": "bf16"}), "bf16")  # asked for
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert not use_bf16_frozen(_cfg(), "bf16")
    with pytest.raises(ConfigError, match="training.frozen_weights 'bf16': FSDP"):
        use_bf16_frozen(_cfg(training={"frozen_weights": "bf16"}), "bf16")


def test_bf16_asked_for_where_auto_resolved_to_fp32_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"frozen_weights 'bf16': training.precision 'auto' resolved to fp32"):
        use_bf16_frozen(_cfg(training={"frozen_weights": "bf16"}), "fp32")


@pytest.mark.parametrize("sections, why", [
    ({"method": {"name": "full"}}, "method.name 'full' trains every weight"),
    ({"training": {"objective": "dpo"}}, "objectives sft and distill"),
    ({"training": {"precision": "fp32"}}, "training.precision is 'fp32'"),
    ({"security": {"encrypt": True, "key_env": "K"}}, "unencrypted temporary file"),
])
def test_bf16_where_it_cannot_apply_is_refused_naming_the_field(sections, why):
    training = {"frozen_weights": "bf16", **sections.pop("training", {})}
    with pytest.raises(ValueError, match="training.frozen_weights 'bf16'") as info:
        _cfg(training=training, **sections)
    assert why in str(info.value)


def test_the_estimate_counts_frozen_weights_at_two_bytes_without_autocast_copies(tiny_model_dir):
    model = _adapted(tiny_model_dir, "lora")
    shape = model_shape(model)
    frozen = sum(m.weight.numel() for m in frozen_linears(model))
    assert shape.frozen_matmul_parameters == frozen > 0
    batch = BatchShape(2, 64, 10, masked=True)
    plain = estimate_memory(shape, batch, precision="bf16", gradient_checkpointing=False)
    held = estimate_memory(shape, batch, precision="bf16", gradient_checkpointing=False, bf16_frozen=True)
    assert plain.parameters - held.parameters == frozen * 4  # 2 bytes of fp32 saved, and the 2-byte copy
    assert held.activations == plain.activations


def test_a_run_trains_the_same_with_the_frozen_base_in_bf16(run_config):
    """Whole tiny runs, bf16 autocast: the same loss at every step and the same adapter, bit for bit."""
    from safetensors.torch import load_file

    runs = {}
    for setting in ("fp32", "bf16"):
        cfg = load_config(run_config(f"frozen-{setting}", training={
            "precision": "bf16", "frozen_weights": setting, "max_steps": 4, "logging_steps": 1}))
        result = finetune(cfg)
        paths = RunDir(result.run_dir)
        losses = [r["loss"] for r in map(json.loads, paths.metrics.read_text().splitlines()) if "loss" in r]
        manifest = json.loads(paths.manifest.read_text())
        runs[setting] = (losses, load_file(paths.adapter / "adapter_model.safetensors"), manifest)
    (fp32_losses, fp32_adapter, fp32_manifest), (bf16_losses, bf16_adapter, bf16_manifest) = runs["fp32"], runs["bf16"]
    assert len(fp32_losses) == 4 and bf16_losses == fp32_losses
    assert fp32_adapter.keys() == bf16_adapter.keys()
    assert all(torch.equal(fp32_adapter[k], bf16_adapter[k]) for k in fp32_adapter)
    assert (fp32_manifest["frozen_weights"], bf16_manifest["frozen_weights"]) == ("fp32", "bf16")
    assert bf16_manifest["estimated_peak_mb"] <= fp32_manifest["estimated_peak_mb"]
