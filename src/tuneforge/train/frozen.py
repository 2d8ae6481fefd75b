"""Hold the frozen base's linear weights in bf16 while an adapter trains under bf16 autocast.

Why: autocast casts every fp32 weight to bf16 at each forward pass and keeps that copy for the
backward pass, and a frozen weight is never updated, so during training its fp32 master only
costs memory: 4 bytes a parameter, plus the 2-byte copy made at every step (on SmolLM2-135M with
LoRA, ~0.4 GB of a ~1.9 GB peak). Held in bf16, the weights give the very products autocast
computed (it rounds the same fp32 values the same way), bit for bit for LoRA, IA3, bottleneck and
prompt-learning adapters (``tests/train/test_frozen.py``); DoRA's weight norm reads the base weight
outside the matmuls, so ``auto`` leaves it in fp32.

Training ends with the exact fp32 weights restored from a temporary file (unlinked at creation,
so nothing is left behind), before the run saves, merges or evaluates: everything after training
sees the weights it started from. PEFT and transformers have no such mode for CPU training
(``torch_dtype=bfloat16`` would also put the embeddings, norms and residual stream in bf16 and
keep them there), hence this module.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any, Iterator

import torch

from tuneforge.config.schema import RunConfig, frozen_bf16_problem
from tuneforge.errors import ConfigError

# Adapters whose training step is bit-identical with the frozen weights in bf16 (auto turns it on for them).
_EXACT_METHODS = {"lora", "ia3", "bottleneck", "prefix", "prompt"}


def frozen_linears(model: Any) -> list[torch.nn.Linear]:
    """The linear layers whose weight is frozen fp32 and not shared with the input embeddings.

    A tied LM head stays fp32: the embedding lookup would otherwise put the residual stream in bf16.
    """
    embeddings = {id(p) for p in model.get_input_embeddings().parameters()}
    return [m for m in model.modules()
            if isinstance(m, torch.nn.Linear) and not m.weight.requires_grad and m.weight.dtype == torch.float32
            and id(m.weight) not in embeddings]


def sharding_engine() -> str | None:
    """FSDP or DeepSpeed when ``accelerate launch`` set them up (they flatten parameters of one dtype per unit)."""
    for name, env in (("FSDP", "ACCELERATE_USE_FSDP"), ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED")):
        if os.environ.get(env, "").lower() in ("1", "true", "yes"):
            return name
    return None


def use_bf16_frozen(cfg: RunConfig, precision: str) -> bool:
    """Resolve ``training.frozen_weights`` for this run on this machine (``precision`` already resolved).

    Raises:
        ConfigError: ``bf16`` was asked for where it cannot apply (the reason named).
    """
    setting = cfg.training.frozen_weights
    if setting == "fp32":
        return False
    problem = frozen_bf16_problem(cfg)
    if problem is None and precision != "bf16":
        problem = f"training.precision '{cfg.training.precision}' resolved to {precision} on this machine (no native bf16)"
    engine = sharding_engine()
    if problem is None and engine:
        problem = f"{engine} flattens each unit's parameters into one dtype"
    if setting == "bf16":
        if problem:
            raise ConfigError(f"training.frozen_weights 'bf16': {problem}; set it to 'auto' or 'fp32'")
        return True
    return problem is None and cfg.method.name in _EXACT_METHODS


@contextlib.contextmanager
def bf16_frozen_weights(model: Any, enabled: bool = True) -> Iterator[int]:
    """Within the block the frozen linear weights of ``model`` are bf16; the exact fp32 ones come back after it.

    Yields the number of weights held in bf16 (0 when not ``enabled``). The fp32 values wait in an unlinked
    temporary file, read back one weight at a time, so restoring needs no second copy of the model in memory.
    """
    if not enabled:
        yield 0
        return
    layers = frozen_linears(model)
    with tempfile.TemporaryFile(prefix="tuneforge-frozen-") as spool:
        for layer in layers:
            spool.write(layer.weight.data.detach().cpu().contiguous().numpy().tobytes())
            layer.weight.data = layer.weight.data.to(torch.bfloat16)
        # Weights loaded from safetensors live in a mapping of the file while any tensor uses it, and every page
        # read (the cast reads all) stays in the process's resident memory: the fp32 pages just replaced would
        # still count. A private copy of the few tensors left (embeddings, norms) lets the mapping go.
        held = {id(layer.weight) for layer in layers}
        for tensor in (*model.parameters(), *model.buffers()):
            if tensor.device.type == "cpu" and id(tensor) not in held:
                tensor.data = tensor.data.clone()
        try:
            yield sum(layer.weight.numel() for layer in layers)
        finally:
            spool.seek(0)
            for layer in layers:
                shape = layer.weight.shape
                data = bytearray(spool.read(layer.weight.numel() * 4))
                layer.weight.data = torch.frombuffer(data, dtype=torch.float32).view(shape).to(layer.weight.device)


__all__ = ["bf16_frozen_weights", "frozen_linears", "use_bf16_frozen"]
