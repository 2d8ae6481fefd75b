"""The memory/time estimate: its components add up and scale, it matches what autograd really keeps on the
tiny model, and `gradient_checkpointing: auto` turns on when the estimate exceeds the memory limit."""

import json

import pytest
import torch

from tuneforge import finetune, load_config
from tuneforge.config.schema import TrainingConfig
from tuneforge.data.pack import Collator, training_rows
from tuneforge.models import load
from tuneforge.train.estimate import BatchShape, MIB, batch_shape, estimate_memory, model_shape, plan_training, step_flops


@pytest.fixture(scope="module")
def lora_model(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    model = load(tiny_model_dir).model
    return get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0, task_type="CAUSAL_LM"))


def _examples(n=40, length=30):
    return [{"input_ids": list(range(3, 3 + length)), "labels": [-100] * (length - 4) + list(range(3, 7))} for _ in range(n)]


def test_model_shape_reads_the_adapter(lora_model):
    shape = model_shape(lora_model)
    cfg = lora_model.get_base_model().config
    assert (shape.layers, shape.hidden, shape.vocab) == (cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size)
    assert shape.adapter_inputs == 2 * cfg.hidden_size and shape.adapter_rank == 16  # q and v, r=8 each
    assert shape.trainable == sum(p.numel() for p in lora_model.parameters() if p.requires_grad) and not shape.full


def test_components_add_up_and_scale(lora_model):
    shape = model_shape(lora_model)
    est = lambda rows, length, **kw: estimate_memory(  # noqa: E731
        shape, BatchShape(rows, length, 10, masked=True), precision=kw.get("precision", "fp32"),
        gradient_checkpointing=kw.get("ckpt", False))
    small, double_rows, double_len = est(1, 256), est(2, 256), est(1, 512)
    assert small.total == sum(small.components().values())
    assert double_rows.activations == 2 * small.activations  # linear in tokens
    assert double_len.attention_mask == 4 * small.attention_mask  # quadratic in the row length
    assert double_rows.parameters == small.parameters and double_rows.optimizer == small.optimizer
    checkpointed = est(1, 256, ckpt=True)
    assert checkpointed.activations < small.activations and checkpointed.attention_mask < small.attention_mask
    # bf16 autocast: smaller activations, plus bf16 copies of the matmul weights.
    bf16 = est(1, 256, precision="bf16")
    assert bf16.activations < small.activations and bf16.parameters > small.parameters
    # Full fine-tuning keeps gradients and Adam state for every weight, and the inputs of every projection.
    full_shape = model_shape(_full(lora_model))
    full = estimate_memory(full_shape, BatchShape(1, 256, 10, masked=True), precision="fp32", gradient_checkpointing=False)
    assert full_shape.full and full.optimizer == full_shape.parameters * (4 + 8)
    assert full.activations > small.activations
    assert step_flops(shape, BatchShape(2, 256, 10, True), gradient_checkpointing=True) > step_flops(
        shape, BatchShape(2, 256, 10, True), gradient_checkpointing=False)


def _full(lora_model):
    import copy

    model = copy.deepcopy(lora_model.get_base_model())
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def test_activation_estimate_matches_what_autograd_saves(lora_model, tiny_tokenizer):
    """Count every tensor autograd keeps for backward (not the weights) on a packed row: within 25%."""
    items = training_rows(_examples(16), packed=True, max_length=1024, token_budget=256, seed=0)
    batch = Collator(tiny_tokenizer.pad_token_id)([items[0]])
    weights = {p.untyped_storage().data_ptr() for p in lora_model.parameters()}
    seen, saved = set(), [0]

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in weights and ptr not in seen:
            seen.add(ptr)
            saved[0] += t.untyped_storage().nbytes()
        return t

    lora_model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        lora_model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False)
    rows, length = batch["input_ids"].shape
    est = estimate_memory(model_shape(lora_model), BatchShape(rows, length, 0, masked=True), precision="fp32",
                          gradient_checkpointing=False)
    assert 0.75 < (est.activations + est.attention_mask) / saved[0] < 1.25, (est, saved[0])


def test_auto_checkpointing_turns_on_only_when_the_limit_is_small(lora_model):
    shape = model_shape(lora_model)
    items = training_rows(_examples(), packed=True, max_length=1024, token_budget=512, seed=0)
    auto = TrainingConfig()
    roomy = plan_training(shape, items, auto, precision="fp32", packed=True, memory_limit=64 * 1024 * MIB)
    assert not roomy.gradient_checkpointing and roomy.fits
    needed = roomy.memory.total
    tight = plan_training(shape, items, auto, precision="fp32", packed=True, memory_limit=needed - 1)
    assert tight.gradient_checkpointing and tight.auto_checkpointing
    assert tight.memory.activations < roomy.memory.activations
    # Switched off explicitly: stays off, and the plan warns that the run will not fit.
    off = plan_training(shape, items, TrainingConfig(gradient_checkpointing=False), precision="fp32", packed=True,
                        memory_limit=needed - 1)
    assert not off.gradient_checkpointing and not off.fits and any(line.startswith("warning") for line in off.lines())
    assert roomy.batch.tokens <= 512 and roomy.steps_per_epoch == len(items)


def test_a_small_memory_limit_trains_with_checkpointing(run_config):
    """Through the whole pipeline: default batch sizing (token budget), and auto checkpointing from the limit."""
    path = run_config(name="ckpt", training={"per_device_batch_size": None, "memory_limit_mb": 1, "max_steps": 2})
    result = finetune(load_config(path))
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert result.global_step == 2 and manifest["gradient_checkpointing"] is True
    assert manifest["estimated_peak_mb"] > 1


def test_validate_plan_without_weights_matches_the_loaded_model(run_config):
    """`tuneforge validate` builds the model on the meta device: same shape as the loaded, adapted model."""
    from tuneforge import methods
    from tuneforge.data import prepare
    from tuneforge.models.load import load_model
    from tuneforge.train.args import loader_items
    from tuneforge.train.estimate import plan_config

    cfg = load_config(run_config(training={"per_device_batch_size": None}))
    model, tokenizer, _ = load_model(cfg.model)
    examples = prepare(cfg.data, tokenizer, max_seq_length=cfg.training.max_seq_length, seed=cfg.training.seed).train
    planned = plan_config(cfg, examples)
    loaded = plan_training(model_shape(methods.apply(model, cfg.method)), loader_items(examples, cfg, seed=cfg.training.seed),
                           cfg.training, precision="fp32", packed=True, memory_limit=planned.memory_limit)
    assert planned.memory == loaded.memory  # the tiny model ties its embeddings: counted once in both


def test_batches_are_padded_to_a_multiple_and_the_estimate_plans_the_padded_length(run_config, monkeypatch):
    """training.pad_to_multiple_of (64 by default): few distinct shapes, so kernels and memory blocks are reused."""
    from tuneforge.data import pack

    rows = training_rows(_examples(6, 30) + _examples(2, 70), packed=True, max_length=128, token_budget=256, seed=0)
    assert batch_shape(rows, 1, packed=True).length % 64 != 0
    padded = batch_shape(rows, 1, packed=True, pad_to_multiple_of=64)
    assert padded.length % 64 == 0 and padded.length >= batch_shape(rows, 1, packed=True).length

    lengths = []
    call = pack.Collator.__call__
    monkeypatch.setattr(pack.Collator, "__call__", lambda self, items: lengths.append(
        (out := call(self, items))["input_ids"].shape[1]) or out)
    finetune(load_config(run_config("padded", training={"max_steps": 3})))
    assert lengths and all(n % 64 == 0 for n in lengths)
    assert TrainingConfig().pad_to_multiple_of == 64
