"""Estimate a run's peak memory and time per epoch before it trains, and decide gradient checkpointing.

Why an estimate: with packing, "batch 8" can mean 8 or 8,000 tokens, and a
CPU run that does not fit swaps or is killed an hour in. The components are
what a training step keeps alive at its peak (the end of the forward pass):

- parameters: the weights (fp32), plus the bf16 copies autocast makes of every
  matmul weight and keeps for backward (frozen weights held in bf16 by
  ``training.frozen_weights`` take 2 bytes and need no copy);
- optimizer: gradients and optimizer state of the trainable parameters;
- activations: tensors saved for backward, per token and layer (MLP
  intermediates, attention q/k/v/output, norm inputs, adapter inputs), plus
  with gradient checkpointing only each layer's input is kept and one layer
  is recomputed at a time;
- workspace: temporaries of forward and backward (products, casts, gradients
  in flight) that the allocator holds between the saved tensors; measured as
  a fraction of the saved activations;
- attention mask: packed or padded rows get a 4-D mask, and SDPA keeps a float
  copy of it per layer (rows x L x L), so long rows cost quadratically;
- logits: only labelled positions reach the LM head (see ``trainer.py``);
- runtime: Python, torch, the tokenizer and the data.

The per-token coefficients were measured on SmolLM2-135M with
``torch.autograd.graph.saved_tensors_hooks`` (every saved tensor, by shape);
``tests/train/test_estimate.py`` pins how the components add up and scale.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from tuneforge.data.pack import IGNORE_INDEX, TokenBatch

MIB = 1024 * 1024
# Python + torch + transformers + peft + tensorboard, the tokenizer and the tokenized data: fitted with
# _WORKSPACE_FRACTION to the peak RSS of `tuneforge train` runs on SmolLM2 (LoRA, fp32 and bf16).
RUNTIME_BYTES = 450 * MIB
# Optimizer state bytes per trainable parameter (fp32 state), on top of the fp32 gradient.
_OPTIMIZER_STATE_BYTES = {"adamw_torch": 8, "adamw_torch_fused": 8, "adafactor": 1, "sgd": 0, "paged_adamw_8bit": 2}
# Peak RSS minus everything else, over the saved activations: 0.38-0.47 on SmolLM2 LoRA fp32 runs of
# 1 x 494, 2 x 204 and 7 x 1022 tokens (`tuneforge train`, /usr/bin/time -v); the allocator keeps the
# freed temporaries of each layer between the tensors saved for backward.
_WORKSPACE_FRACTION = 0.4
# Fraction of the measured matmul rate a whole training step reaches (attention, norms, elementwise ops,
# the optimizer and Python overhead are slower than one big matmul): 0.49-0.62 measured on SmolLM2 LoRA
# steps of 2 x 176 tokens, each timed right after the matmul rate (the CPU is shared, so both vary).
_STEP_EFFICIENCY = 0.55


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs to know about a (possibly adapted) causal LM."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    attention_width: int  # heads x head_dim: q, and k/v once repeated to every head
    vocab: int
    parameters: int
    trainable: int
    matmul_parameters: int  # weights of the linear layers and the LM head (autocast copies these)
    full: bool  # every weight trains (inputs of every linear layer are kept for the weight gradients)
    adapter_inputs: int = 0  # per layer: summed in_features of adapted modules (kept for the adapter's backward)
    adapter_rank: int = 0  # per layer: summed LoRA rank
    frozen_matmul_parameters: int = 0  # frozen linear weights that training.frozen_weights may hold in bf16


@dataclass(frozen=True)
class BatchShape:
    """The largest batch of the run: rows x padded length, and labelled positions (LM-head rows)."""

    rows: int
    length: int
    labelled: int
    masked: bool  # a 4-D attention mask is built (packed rows, or padding)

    @property
    def tokens(self) -> int:
        return self.rows * self.length


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak memory of a training step, by component, in bytes."""

    parameters: int
    optimizer: int
    activations: int  # saved for backward
    workspace: int  # temporaries of forward and backward (and allocator slack), in proportion to activations
    attention_mask: int
    logits: int
    runtime: int = RUNTIME_BYTES
    teacher: int = 0  # distillation: the frozen teacher's weights and logits

    @property
    def total(self) -> int:
        return sum(self.components().values())

    def components(self) -> dict[str, int]:
        return {"parameters": self.parameters, "gradients + optimizer state": self.optimizer,
                "activations saved for backward": self.activations, "forward/backward workspace": self.workspace,
                "attention mask": self.attention_mask, "logits": self.logits,
                "runtime (python, torch, data)": self.runtime,
                **({"teacher (weights, logits)": self.teacher} if self.teacher else {})}


@dataclass(frozen=True)
class TrainingPlan:
    """The estimate for a run and what follows from it."""

    batch: BatchShape
    memory: MemoryEstimate
    memory_limit: int  # bytes the run may use
    gradient_checkpointing: bool
    auto_checkpointing: bool  # turned on by "auto" because the estimate without it exceeded the limit
    steps_per_epoch: int
    seconds_per_epoch: float | None
    budget_steps: int | None = None  # steps that fit training.max_time, by this estimate
    bf16_frozen: bool = False  # the frozen linear weights train in bf16 (training.frozen_weights)

    @property
    def fits(self) -> bool:
        return self.memory.total <= self.memory_limit

    @property
    def step_seconds(self) -> float | None:
        """Estimated seconds per optimizer step (None without a time estimate)."""
        if self.seconds_per_epoch is None or not self.steps_per_epoch:
            return None
        return self.seconds_per_epoch / self.steps_per_epoch

    def lines(self) -> list[str]:
        """Human-readable summary (printed by `tuneforge validate` and before training)."""
        out = [f"estimated peak memory {_mib(self.memory.total)} (limit {_mib(self.memory_limit)}), largest batch "
               f"{self.batch.rows} x {self.batch.length} tokens, gradient checkpointing "
               f"{'on (auto: the estimate without it exceeds the limit)' if self.auto_checkpointing else 'on' if self.gradient_checkpointing else 'off'}"
               f"{', frozen weights in bf16' if self.bf16_frozen else ''}"]
        out += [f"  {name:<32} {_mib(size):>10}" for name, size in self.memory.components().items()]
        if self.seconds_per_epoch is not None:
            out.append(f"estimated time per epoch {self.seconds_per_epoch / 60:.1f} min ({self.steps_per_epoch} steps) on this machine")
        if self.budget_steps is not None:
            epochs = self.budget_steps / max(self.steps_per_epoch, 1)
            out.append(f"estimated steps in the time budget (training.max_time): {self.budget_steps} ({epochs:.1f} epochs); "
                       "measured and re-planned during training")
        if not self.fits:
            out.append("warning: the estimate exceeds the memory limit; lower training.batch_tokens "
                       "(or per_device_batch_size), or set training.gradient_checkpointing: true")
        return out


def _mib(n: int) -> str:
    return f"{n / MIB:,.0f} MiB"


def model_shape(model: Any) -> ModelShape:
    """Read the shape of a causal LM (plain, PEFT-wrapped or DDP-wrapped; works on the meta device)."""
    import torch

    from tuneforge.train.trainer import _unwrap

    inner = _unwrap(model)
    c = inner.config
    c = c.get_text_config() if hasattr(c, "get_text_config") else c
    heads = c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    parameters = trainable = matmul = 0
    for p in model.parameters():
        parameters += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    adapter_inputs = adapter_rank = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):  # PEFT keeps the original Linear as base_layer: counted once
            matmul += module.weight.numel()
        if getattr(module, "lora_A", None):  # a PEFT LoRA layer: its input and rank-r projection are kept for backward
            adapter_inputs += module.in_features
            adapter_rank += sum(module.r.values())
    layers = c.num_hidden_layers
    from tuneforge.train.frozen import frozen_linears

    return ModelShape(
        layers=layers, hidden=c.hidden_size, intermediate=c.intermediate_size, heads=heads,
        attention_width=heads * head_dim, vocab=c.vocab_size, parameters=parameters, trainable=trainable,
        matmul_parameters=matmul, full=trainable == parameters,
        adapter_inputs=adapter_inputs // max(layers, 1), adapter_rank=adapter_rank // max(layers, 1),
        frozen_matmul_parameters=sum(m.weight.numel() for m in frozen_linears(model)),
    )


def batch_shape(items: list[Any], per_device_batch_size: int, *, packed: bool, pad_to_multiple_of: int | None = None) -> BatchShape:
    """The largest batch the data loader will build from ``items`` (rows, or :class:`TokenBatch` es).

    ``pad_to_multiple_of``: the collator pads each batch's length up to a multiple of it (``training.pad_to_multiple_of``).
    """
    from tuneforge.data.pack import Row, row_examples, row_length

    def labelled(row: Any) -> int:
        counted = getattr(row.source, "targets", None) if isinstance(row, Row) else None
        if counted is not None:  # a memory-mapped split counted them when written: its labels stay unread
            return int(sum(counted[i] for i in row.indices))
        # The first token of each example is never a target (see pack.Collator).
        return sum(max(sum(1 for x in ex["labels"][1:] if x != IGNORE_INDEX), 0) for ex in row_examples(row))

    if items and isinstance(items[0], TokenBatch):
        groups = [b.rows for b in items]
    elif getattr(items, "lengths", None) is not None:  # unpacked examples of a mapped split: read only the longest
        import numpy as np

        longest = np.argsort(-np.asarray(items.lengths), kind="stable")[:per_device_batch_size]
        groups = [[items[int(i)] for i in longest]] if len(items) else []
    else:  # rows taken per_device_batch_size at a time in random order: assume the longest ones meet
        by_length = sorted(items, key=row_length, reverse=True)
        groups = [by_length[:per_device_batch_size]] if items else []
    if not groups:
        return BatchShape(0, 0, 0, masked=packed)
    m = pad_to_multiple_of or 1

    def padded(group: list[Any]) -> int:
        return -(-max(map(row_length, group)) // m) * m

    largest = max(groups, key=lambda g: len(g) * padded(g))
    most_labelled = max(sum(map(labelled, g)) for g in groups)
    return BatchShape(len(largest), padded(largest), most_labelled, masked=packed or len(largest) > 1 or m > 1)


@dataclass(frozen=True)
class Teacher:
    """A distillation teacher, for the estimate: its parameters (held in fp32) and where its logits are taken."""

    parameters: int
    every_position: bool = False  # distill.positions: all (the KL at every token, KL_CHUNK positions at a time)


def estimate_memory(
    shape: ModelShape, batch: BatchShape, *, precision: str, gradient_checkpointing: bool, optimizer: str = "adamw_torch",
    bf16_frozen: bool = False, teacher: Teacher | None = None,
) -> MemoryEstimate:
    """Peak memory of one training step in bytes (see the module docstring for the components).

    Args:
        bf16_frozen: The frozen linear weights are held in bf16 (``training.frozen_weights``): 2 bytes each
            and no autocast copy.
        teacher: Logit distillation's teacher: its fp32 weights, and its logits (fp32 and log-softmax) at the
            positions the student's logits are taken (every position, a chunk at a time, with ``every_position``).
    """
    half = precision in ("bf16", "fp16")
    act = 2 if half else 4  # bytes of a matmul output under autocast
    h, layers, tokens = shape.hidden, shape.layers, batch.tokens
    one_layer = _layer_bytes_per_token(shape, act) * tokens
    if gradient_checkpointing:
        activations = layers * h * 4 * tokens + one_layer  # each layer's input, plus the layer being recomputed
    else:
        activations = layers * one_layer
    # The temporaries are mostly fp32 even under autocast (casts back to the fp32 residual stream and norms),
    # so the workspace scales with the fp32 size of the activations.
    workspace = int(activations * _WORKSPACE_FRACTION * _layer_bytes_per_token(shape, 4) / _layer_bytes_per_token(shape, act))
    mask_copies = (1 if gradient_checkpointing else layers) if batch.masked else 0
    # SDPA converts the boolean mask to the query dtype in every layer and keeps that copy for backward.
    attention_mask = mask_copies * batch.rows * batch.length ** 2 * act + (batch.rows * batch.length ** 2 if batch.masked else 0)
    if teacher is not None and teacher.every_position:
        from tuneforge.distill.logit import KL_CHUNK

        logit_rows = min(batch.tokens, KL_CHUNK)
    else:
        logit_rows = batch.labelled
    logits = logit_rows * shape.vocab * 4 * 3  # logits, fp32 log-softmax, their gradient
    teacher_bytes = teacher.parameters * 4 + logit_rows * shape.vocab * 4 * 2 if teacher is not None else 0
    frozen = shape.frozen_matmul_parameters if bf16_frozen else 0
    parameters = (shape.parameters - frozen) * 4 + frozen * 2 + ((shape.matmul_parameters - frozen) * 2 if half else 0)
    optimizer_bytes = shape.trainable * (4 + _OPTIMIZER_STATE_BYTES.get(optimizer, 8))
    return MemoryEstimate(parameters, optimizer_bytes, activations, workspace, attention_mask, logits, teacher=teacher_bytes)


def _layer_bytes_per_token(shape: ModelShape, act: int) -> int:
    """Bytes one layer keeps for backward per token, matmul outputs being ``act`` bytes each.

    Measured with saved_tensors_hooks on SmolLM2 (fp32 and bf16 autocast): gate, up and SiLU(gate) [3i];
    q, k, v repeated to every head and the attention output [4a]; norm inputs and outputs [4h, fp32 even
    under autocast]; the per-head logsumexp; adapter inputs and rank-r projections.
    """
    i, a, h = shape.intermediate, shape.attention_width, shape.hidden
    n = (3 * i + 4 * a) * act + 4 * h * 4 + shape.heads * 4 + (shape.adapter_inputs + shape.adapter_rank) * act
    if shape.full:  # the weight gradients also need the inputs of down_proj and of every projection
        n += (i + 2 * h) * act
    return n


def step_flops(shape: ModelShape, batch: BatchShape, *, gradient_checkpointing: bool) -> float:
    """Floating-point operations of one forward + backward over ``batch``."""
    dense = shape.matmul_parameters - shape.vocab * shape.hidden  # the LM head runs on labelled positions only
    attention = 4 * batch.length * shape.attention_width * shape.layers  # per token: QK^T and PV over the row
    forward = batch.tokens * (2 * max(dense, 0) + attention) + 2 * batch.labelled * shape.vocab * shape.hidden
    backward = forward * (2.0 if shape.full else 1.0)  # frozen weights: input gradients only
    return forward * (2.0 if gradient_checkpointing else 1.0) + backward


def matmul_flops_per_second(precision: str, seconds: float = 0.3, shape: tuple[int, int, int] = (512, 1024, 2048)) -> float:
    """This machine's rate on a training-sized matmul at ``precision``, measured now (~``seconds``).

    Args:
        shape: ``(m, k, n)``: an ``m x k`` by ``k x n`` product (the benchmark passes the model's own shapes).
    """
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float16 if precision == "fp16" else torch.float32
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and dtype == torch.float16:
        dtype = torch.float32
    m, k, n_out = shape
    x = torch.randn(m, k, dtype=dtype, device=device)
    w = torch.randn(k, n_out, dtype=dtype, device=device)
    x @ w  # warm-up (kernel selection)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        x @ w
        n += 1
    if device == "cuda":
        torch.cuda.synchronize()
    return n * 2 * m * k * n_out / (time.perf_counter() - start)


def available_memory() -> int:
    """Bytes a run can use: total GPU memory on a GPU, else RAM available now plus this process's own."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.mem_get_info()[1]
    import psutil  # a dependency of accelerate

    return psutil.virtual_memory().available + psutil.Process().memory_info().rss


def plan_training(
    shape: ModelShape, items: list[Any], training: Any, *, precision: str, packed: bool,
    memory_limit: int | None = None, flops_per_second: float | None = None, bf16_frozen: bool = False,
    teacher: Teacher | None = None,
) -> TrainingPlan:
    """Estimate memory and time for a run's batches, and resolve ``gradient_checkpointing: auto``.

    Args:
        shape: From :func:`model_shape`.
        items: The training dataset as the loader sees it (rows or :class:`TokenBatch` es).
        training: The run's ``TrainingConfig``.
        precision: Resolved precision (``fp32``, ``bf16``, ``fp16``).
        packed: Rows are packed (they carry a block-diagonal mask).
        memory_limit: Bytes the run may use; default ``training.memory_limit_mb`` or :func:`available_memory`.
        flops_per_second: Matmul rate for the time estimate; None: no time estimate.
        bf16_frozen: The frozen linear weights train in bf16 (:func:`tuneforge.train.frozen.use_bf16_frozen`).
        teacher: Logit distillation's teacher (:func:`teacher_for`).

    Returns:
        A :class:`TrainingPlan`; ``gradient_checkpointing`` is on when set, or when ``auto`` and the
        estimate without it exceeds the limit.
    """
    batch = batch_shape(items, training.per_device_batch_size or 1, packed=packed, pad_to_multiple_of=training.pad_to_multiple_of)
    if memory_limit is None:
        memory_limit = training.memory_limit_mb * MIB if training.memory_limit_mb else available_memory()
    without = estimate_memory(shape, batch, precision=precision, gradient_checkpointing=False, optimizer=training.optimizer,
                              bf16_frozen=bf16_frozen, teacher=teacher)
    setting = training.gradient_checkpointing
    auto = setting == "auto" and without.total > memory_limit
    checkpointing = setting is True or auto
    memory = without if not checkpointing else estimate_memory(
        shape, batch, precision=precision, gradient_checkpointing=True, optimizer=training.optimizer, bf16_frozen=bf16_frozen,
        teacher=teacher)
    batches = len(items) if items and isinstance(items[0], TokenBatch) else -(-len(items) // (training.per_device_batch_size or 1))
    steps = max(batches // training.gradient_accumulation_steps, 1 if batches else 0)
    seconds = None
    if flops_per_second:
        flops = step_flops(shape, batch, gradient_checkpointing=checkpointing)
        # Time scales with the real batches' tokens, not the largest batch's: scale by the token ratio.
        total_tokens = sum(_item_tokens(x) for x in items)
        seconds = flops / max(batch.tokens, 1) * total_tokens / (flops_per_second * _STEP_EFFICIENCY)
    plan = TrainingPlan(batch, memory, memory_limit, checkpointing, auto, steps, seconds, bf16_frozen=bf16_frozen)
    if training.max_time is not None and plan.step_seconds:
        from tuneforge.train.budget import steps_that_fit

        fit = steps_that_fit(training.max_time, plan.step_seconds)
        plan = replace(plan, budget_steps=min(fit, training.max_steps) if training.max_steps else fit)
    return plan


def _item_tokens(item: Any) -> int:
    from tuneforge.data.pack import row_length

    if isinstance(item, TokenBatch):
        return len(item.rows) * max(map(row_length, item.rows))
    return row_length(item)


__all__ = [
    "BatchShape", "MemoryEstimate", "ModelShape", "Teacher", "TrainingPlan", "available_memory", "batch_shape",
    "estimate_memory", "matmul_flops_per_second", "model_shape", "plan_training", "step_flops",
]


def teacher_for(cfg: Any, teacher_model: Any) -> Teacher | None:
    """The estimate's view of a run's logit-distillation teacher (a loaded model, or one on the meta device); None without."""
    if teacher_model is None or cfg.distill is None or cfg.distill.resolved_mode != "logit":
        return None
    return Teacher(sum(p.numel() for p in teacher_model.parameters()), every_position=cfg.distill.positions == "all")


def check_run(cfg: Any, model: Any, items: list[Any], *, precision: str, packed: bool, console: Any = None,
              teacher: Any = None) -> TrainingPlan:
    """Plan a run about to train: print the estimate (when ``console`` is given) and warn when it won't fit.

    ``teacher``: logit distillation's loaded teacher model, counted in the estimate.
    """
    import logging

    from tuneforge.train.frozen import use_bf16_frozen

    plan = plan_training(model_shape(model), items, cfg.training, precision=precision, packed=packed,
                         flops_per_second=matmul_flops_per_second(precision), bf16_frozen=use_bf16_frozen(cfg, precision),
                         teacher=teacher_for(cfg, teacher))
    if console is not None:
        for line in plan.lines():
            console.print(f"[yellow]{line}[/]" if line.startswith("warning") else line, highlight=False)
    if not plan.fits:
        logging.getLogger("tuneforge.train").warning(
            "estimated peak memory %s exceeds the limit %s", _mib(plan.memory.total), _mib(plan.memory_limit))
    return plan


def plan_config(cfg: Any, train_examples: list[dict]) -> TrainingPlan:
    """Plan a run from its config and tokenized training examples without loading weights (``tuneforge validate``).

    The model is built on the meta device (shapes only) and adapted by the configured method.
    """
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    from tuneforge import methods
    from tuneforge.models import resolve
    from tuneforge.train.args import loader_items, packing_enabled, resolve_precision

    def on_meta(ref: Any, revision: str | None = None) -> Any:
        config = AutoConfig.from_pretrained(resolve(ref), revision=revision, trust_remote_code=cfg.model.trust_remote_code)
        with init_empty_weights():
            built = AutoModelForCausalLM.from_config(config, trust_remote_code=cfg.model.trust_remote_code)
        built.tie_weights()  # inside init_empty_weights tying makes a second tensor: tie outside it
        return built

    model = on_meta(cfg.model, cfg.model.revision)
    if cfg.model.keep_layers is not None:  # a student pruned by depth
        from tuneforge.models.prune import prune_layers

        prune_layers(model, cfg.model.keep_layers)
    teacher = None
    if cfg.distill is not None and cfg.distill.resolved_mode == "logit":
        from tuneforge.models import resolve_target

        teacher = on_meta(resolve_target(cfg.distill.teacher).ref)  # a run's LoRA adds little: its base model is counted
    with init_empty_weights():
        # QLoRA's 4-bit base needs CUDA to build; its adapter has the LoRA shape.
        method = cfg.method if cfg.method.name != "qlora" else cfg.method.model_copy(update={"name": "lora"})
        model = methods.apply(model, method)
    t = cfg.training
    items = loader_items(train_examples, cfg, seed=t.seed)
    precision = resolve_precision(t.precision)
    from tuneforge.train.frozen import use_bf16_frozen

    return plan_training(model_shape(model), items, t, precision=precision, packed=packing_enabled(cfg),
                         flops_per_second=matmul_flops_per_second(precision), bf16_frozen=use_bf16_frozen(cfg, precision),
                         teacher=teacher_for(cfg, teacher))
