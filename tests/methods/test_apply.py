"""`tuneforge.methods.apply` on the tiny Llama: which parameters each method trains, and how it starts.

The tiny model has 2 layers with q/k/v/o and gate/up/down projections and an LM head tied to the
input embedding, so every adapter's exact trainable set can be written out here.
"""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import AutoModelForCausalLM

from tuneforge import ModelError
from tuneforge.config import FullMethod, IA3Method, LoraMethod, PromptLearningMethod, QLoraMethod
from tuneforge.methods import apply, load_kwargs, trainable_parameters

LINEAR = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
          "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
LAYERS = 2


@pytest.fixture
def base(tiny_model_dir):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


def trainable_names(model) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def logits(model, tokens=(5, 17, 42, 99, 7, 250)) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([tokens])).logits


def lora_names(modules: list[str], kinds=("lora_A.default.weight", "lora_B.default.weight")) -> set[str]:
    return {f"base_model.model.model.layers.{i}.{m}.{k}" for i in range(LAYERS) for m in modules for k in kinds}


def test_full_trains_every_weight(base):
    for p in base.parameters():
        p.requires_grad_(False)  # apply must switch them all back on, not rely on the loader's default
    model = apply(base, FullMethod())
    trainable, total = trainable_parameters(model)
    assert trainable == total == sum(p.numel() for p in model.parameters())
    assert model is base  # no wrapper: saved with save_pretrained as a plain model


def test_lora_all_linear_adapts_every_linear_layer_but_the_lm_head(base):
    base_logits = logits(base)
    model = apply(base, LoraMethod(r=4, alpha=8, dropout=0.0))
    assert trainable_names(model) == lora_names(LINEAR)
    # all-linear must leave the output layer alone: adapting it would also touch the tied input embedding.
    assert not any("lm_head" in name or "embed_tokens" in name for name in trainable_names(model))
    assert type(model.get_base_model().lm_head) is torch.nn.Linear
    config = model.peft_config["default"]
    assert config.r == 4 and config.lora_alpha == 8 and not config.use_dora and config.task_type == "CAUSAL_LM"
    # r * (in + out) per adapted linear layer: the whole trainable budget, nothing more.
    expected = sum(4 * (mod.in_features + mod.out_features)
                   for i in range(LAYERS) for mod in (model.get_base_model().model.layers[i].get_submodule(m).base_layer
                                                      for m in LINEAR))
    assert trainable_parameters(model)[0] == expected
    # B starts at zero, so the adapted model starts as the base model.
    assert torch.allclose(logits(model), base_logits, atol=1e-6)


def test_lora_explicit_targets_only(base):
    model = apply(base, LoraMethod(r=2, target_modules=["q_proj", "v_proj"]))
    assert trainable_names(model) == lora_names(["self_attn.q_proj", "self_attn.v_proj"])


def test_rslora_scales_by_the_square_root_of_the_rank(base):
    model = apply(base, LoraMethod(r=4, alpha=8, use_rslora=True, target_modules=["q_proj"]))
    q = model.get_base_model().model.layers[0].self_attn.q_proj
    assert q.scaling["default"] == pytest.approx(8 / 4 ** 0.5)
    plain = apply(AutoModelForCausalLM.from_pretrained(model.peft_config["default"].base_model_name_or_path),
                  LoraMethod(r=4, alpha=8, target_modules=["q_proj"]))
    assert plain.get_base_model().model.layers[0].self_attn.q_proj.scaling["default"] == pytest.approx(8 / 4)


def test_dora_sets_use_dora_and_trains_the_magnitudes(base):
    base_logits = logits(base)
    model = apply(base, LoraMethod(name="dora", r=4, dropout=0.0))
    assert model.peft_config["default"].use_dora is True
    names = trainable_names(model)
    magnitudes = {n for n in names if "lora_magnitude_vector" in n}
    assert len(magnitudes) == LAYERS * len(LINEAR)
    assert names - magnitudes == lora_names(LINEAR)
    assert torch.allclose(logits(model), base_logits, atol=1e-5)


def test_ia3_rescales_keys_values_and_the_feed_forward_output(base):
    base_logits = logits(base)
    model = apply(base, IA3Method())
    assert trainable_names(model) == lora_names(["self_attn.k_proj", "self_attn.v_proj", "mlp.down_proj"], ("ia3_l.default",))
    # IA3 vectors start at one: the base model's function.
    assert torch.allclose(logits(model), base_logits, atol=1e-6)
    explicit = apply(AutoModelForCausalLM.from_pretrained(model.peft_config["default"].base_model_name_or_path),
                     IA3Method(target_modules=["q_proj"]))
    assert trainable_names(explicit) == lora_names(["self_attn.q_proj"], ("ia3_l.default",))


@pytest.mark.parametrize("name", ["prompt", "prefix"])
def test_prompt_learning_trains_only_the_virtual_tokens(base, name):
    model = apply(base, PromptLearningMethod(name=name, num_virtual_tokens=3))
    names = trainable_names(model)
    assert names and all(n.startswith("prompt_encoder.") for n in names), names
    assert model.peft_config["default"].num_virtual_tokens == 3
    embedding = dict(model.named_parameters())[sorted(names)[0]]
    assert embedding.shape[0] == 3  # one row per virtual token
    if name == "prompt":
        assert embedding.shape == (3, base.config.hidden_size)


@pytest.mark.parametrize("method", [LoraMethod(r=2), LoraMethod(name="dora", r=2), IA3Method(),
                                    PromptLearningMethod(name="prompt", num_virtual_tokens=2)])
def test_adapters_freeze_the_base_weights(base, method):
    model = apply(base, method)
    frozen = {n for n, p in base.named_parameters() if not p.requires_grad}
    adapter_markers = ("lora_", "ia3_", "prompt_encoder")
    for name, p in model.named_parameters():
        if not any(marker in name for marker in adapter_markers):
            assert not p.requires_grad, name
    assert frozen  # the base model itself has frozen weights now
    trainable, total = trainable_parameters(model)
    assert 0 < trainable < total / 2


def test_apply_logs_the_trainable_share(base, caplog):
    with caplog.at_level(logging.INFO, logger="tuneforge.methods"):
        model = apply(base, LoraMethod(r=2))
    trainable, total = trainable_parameters(model)
    assert f"method lora: {trainable} of {total} parameters trainable" in caplog.text


@pytest.mark.skipif(torch.cuda.is_available(), reason="has a GPU: qlora is allowed")
def test_qlora_is_refused_on_cpu_with_a_clear_message():
    with pytest.raises(ModelError) as err:
        load_kwargs(QLoraMethod())
    message = str(err.value)
    assert "CUDA GPU" in message and "method 'lora'" in message


def test_other_methods_need_no_load_arguments():
    for method in (FullMethod(), LoraMethod(), IA3Method(), PromptLearningMethod(name="prompt")):
        assert load_kwargs(method) == {}
