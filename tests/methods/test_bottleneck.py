"""Bottleneck adapters (`tuneforge.methods.bottleneck`) on the tiny Llama: start, train, save, load, refuse to merge.

The tiny model has 2 decoder layers of hidden size 32, so with reduction factor 4 each adapter has
a bottleneck of 8 units.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from tuneforge import ConfigError, ExportError, ModelError, load_config
from tuneforge.config import BottleneckMethod
from tuneforge.methods import apply, trainable_parameters
from tuneforge.methods.bottleneck import MERGE_REFUSAL

HIDDEN, LAYERS = 32, 2
TOKENS = torch.tensor([[5, 17, 42, 99, 7, 250, 31, 8]])


@pytest.fixture
def base(tiny_model_dir):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


def logits(model, tokens=TOKENS) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=tokens).logits


def expected_count(width: int, blocks: int, layers: int = LAYERS) -> int:
    # down (h*m + m) and up (m*h + h), per wrapped block per adapted layer
    return layers * blocks * (2 * HIDDEN * width + width + HIDDEN)


@pytest.mark.parametrize("placement", ["houlsby", "pfeiffer"])
def test_untrained_adapter_is_exactly_the_base_model(base, placement):
    reference = logits(base)
    model = apply(base, BottleneckMethod(placement=placement, reduction_factor=4, non_linearity="gelu"))
    assert torch.equal(logits(model), reference)  # zero up-projection: bit for bit, not approximately
    randomly = apply(AutoModelForCausalLM.from_pretrained(model.peft_config["default"].base_model_name_or_path),
                     BottleneckMethod(placement=placement, reduction_factor=4, init="random"))
    assert not torch.allclose(logits(randomly), reference, atol=1e-3)  # init: random does change the start


@pytest.mark.parametrize("placement,blocks,wrapped", [
    ("houlsby", 2, {"self_attn", "mlp"}), ("pfeiffer", 1, {"mlp"}),
])
def test_trainable_parameters_match_the_formula(base, placement, blocks, wrapped):
    model = apply(base, BottleneckMethod(placement=placement, reduction_factor=4))
    assert trainable_parameters(model)[0] == expected_count(HIDDEN // 4, blocks)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == {f"base_model.model.model.layers.{i}.{block}.bottleneck_{part}.default.{kind}"
                     for i in range(LAYERS) for block in wrapped for part in ("down", "up") for kind in ("weight", "bias")}


def test_bottleneck_size_and_a_layer_subset(base):
    model = apply(base, BottleneckMethod(bottleneck_size=3, layers=[1], placement="houlsby"))
    assert trainable_parameters(model)[0] == expected_count(3, 2, layers=1)
    assert all(".layers.1." in n for n, p in model.named_parameters() if p.requires_grad)


def test_training_lowers_the_loss_and_changes_only_the_adapters(base):
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    model = apply(base, BottleneckMethod(reduction_factor=4)).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(15):
        loss = model(input_ids=TOKENS, labels=TOKENS).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1, losses
    after = dict(model.get_base_model().named_parameters())
    for name, value in before.items():
        # The wrapped blocks' weights moved under .base_layer; each is bit-identical to before.
        key = name.replace(".self_attn.", ".self_attn.base_layer.").replace(".mlp.", ".mlp.base_layer.")
        assert torch.equal(after[key], value), name
    assert any(p.abs().sum() > 0 for n, p in after.items() if "bottleneck_up" in n)  # the adapters did learn


def test_saved_adapter_loads_back_with_identical_logits_in_a_fresh_process(base, tmp_path, tiny_model_dir):
    model = apply(base, BottleneckMethod(reduction_factor=4, init="random", non_linearity="swish")).eval()
    model.save_pretrained(tmp_path / "adapter")
    torch.save(logits(model), tmp_path / "expected.pt")
    # A fresh interpreter: PEFT must learn the BOTTLENECK type where tuneforge reads an adapter, not by chance
    # because this test process already built one.
    script = (
        "import sys, torch\n"
        "from tuneforge.models import load\n"
        "loaded = load(sys.argv[1])\n"
        "with torch.no_grad():\n"
        "    got = loaded.model(input_ids=torch.tensor([%s])).logits\n"
        "assert torch.equal(got, torch.load(sys.argv[2])), (got - torch.load(sys.argv[2])).abs().max()\n"
    ) % TOKENS[0].tolist()
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "adapter"), str(tmp_path / "expected.pt")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "BOTTLENECK" and config["bottleneck_size"] == HIDDEN // 4
    assert config["base_model_name_or_path"] == str(tiny_model_dir)


def test_disabling_the_adapter_gives_the_base_model(base):
    reference = logits(base)
    model = apply(base, BottleneckMethod(reduction_factor=4, init="random"))
    assert not torch.allclose(logits(model), reference, atol=1e-3)
    with model.disable_adapter():  # how evaluation scores the baseline and serving the bare base
        assert torch.equal(logits(model), reference)


def test_merging_is_refused_saying_why(base):
    model = apply(base, BottleneckMethod(reduction_factor=4))
    with pytest.raises(ExportError, match="cannot be merged into the base weights") as err:
        model.merge_and_unload()
    assert "lora" in str(err.value) and "tuneforge serve" in str(err.value)
    assert "non-linear" in MERGE_REFUSAL


def test_other_architectures_are_refused_naming_what_was_looked_for():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=32))
    with pytest.raises(ModelError, match=r"model\.layers\.N\.self_attn.*GPT2LMHeadModel \(model_type 'gpt2'\)"):
        apply(gpt2, BottleneckMethod())
    assert not any("bottleneck" in n for n, _ in gpt2.named_parameters())  # left as it was


def test_layer_indices_and_reduction_factor_are_checked_against_the_model(base):
    with pytest.raises(ModelError, match=r"method.layers names decoder layers \[5\] but the model has 2"):
        apply(base, BottleneckMethod(layers=[0, 5]))
    small = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))
    with pytest.raises(ModelError, match="method.reduction_factor 16 exceeds the model's hidden size 8"):
        apply(small, BottleneckMethod())  # the default factor, 16, leaves no unit of 8


@pytest.mark.parametrize("method,field,message", [
    ({"reduction_factor": 0}, "'method.reduction_factor'", "greater than 0"),
    ({"non_linearity": "tanh"}, "'method.non_linearity'", "got 'tanh'; expected 'relu', 'gelu', 'silu' or 'swish'"),
    ({"placement": "parallel"}, "'method.placement'", "'houlsby' or 'pfeiffer'"),
    ({"layers": [1, 1]}, "'method.layers'", "distinct"),
    ({"layers": []}, "'method.layers'", "adapts no layer"),
    ({"dropout": 1.5}, "'method.dropout'", "less than 1"),
    ({"reduction_factor": 4, "bottleneck_size": 8}, "method.reduction_factor and method.bottleneck_size", "only one"),
])
def test_bad_values_are_refused_naming_the_field(tmp_path, method, field, message):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"data": {"train": "x.jsonl"}, "method": {"name": "bottleneck", **method}}))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{path}:" in str(err.value) and field in str(err.value) and message in str(err.value), str(err.value)


def test_packing_stays_allowed_and_the_default_learning_rate_is_set(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"data": {"train": "x.jsonl", "packing": "on"}, "method": "bottleneck"}))
    cfg = load_config(path)  # a layer-wise method: packed rows are fine, unlike prefix/prompt tuning
    assert cfg.method.name == "bottleneck" and cfg.learning_rate == 1e-3
