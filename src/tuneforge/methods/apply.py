"""Turn a method config into a trainable model: full fine-tuning or a PEFT adapter (bottleneck adapters: our own
PEFT method, :mod:`tuneforge.methods.bottleneck`).

One registry maps each method name to a builder. QLoRA differs at load time
(the frozen base is quantized by bitsandbytes), so :func:`load_kwargs` gives
the extra ``from_pretrained`` arguments a method needs.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import torch

from tuneforge.config.bottleneck import BottleneckMethod
from tuneforge.config.schema import FullMethod, IA3Method, LoraMethod, PromptLearningMethod, QLoraMethod
from tuneforge.errors import ModelError

log = logging.getLogger("tuneforge.methods")


def _full(model: Any, cfg: FullMethod) -> Any:
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def lora_config(cfg: LoraMethod, task_type: str = "CAUSAL_LM") -> Any:
    """The ``peft.LoraConfig`` of a LoRA/DoRA method section (TRL's trainers take it as ``peft_config``)."""
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=cfg.target_modules,
        bias=cfg.bias, use_dora=cfg.name == "dora", use_rslora=cfg.use_rslora,
        modules_to_save=cfg.modules_to_save or None, task_type=task_type,
    )


def _lora(model: Any, cfg: LoraMethod) -> Any:
    from peft import get_peft_model

    return get_peft_model(model, lora_config(cfg))


def _qlora(model: Any, cfg: QLoraMethod) -> Any:
    from peft import prepare_model_for_kbit_training

    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return _lora(model, cfg)


def _prompt_learning(model: Any, cfg: PromptLearningMethod) -> Any:
    from peft import PrefixTuningConfig, PromptTuningConfig, get_peft_model

    kind = PrefixTuningConfig if cfg.name == "prefix" else PromptTuningConfig
    return get_peft_model(model, kind(task_type="CAUSAL_LM", num_virtual_tokens=cfg.num_virtual_tokens))


def _ia3(model: Any, cfg: IA3Method) -> Any:
    from peft import IA3Config, get_peft_model

    if cfg.target_modules == "all-linear":
        # PEFT's per-architecture defaults: attention k/v plus the MLP down projection as feed-forward.
        config = IA3Config(task_type="CAUSAL_LM")
    else:
        config = IA3Config(task_type="CAUSAL_LM", target_modules=cfg.target_modules, feedforward_modules=[])
    return get_peft_model(model, config)


def _bottleneck(model: Any, cfg: BottleneckMethod) -> Any:
    # Imported here: the module needs peft, which `import tuneforge.methods` should not pay for.
    from tuneforge.methods.bottleneck import build

    return build(model, cfg)


BUILDERS: dict[str, Callable[[Any, Any], Any]] = {
    "full": _full,
    "lora": _lora,
    "dora": _lora,
    "qlora": _qlora,
    "prefix": _prompt_learning,
    "prompt": _prompt_learning,
    "ia3": _ia3,
    "bottleneck": _bottleneck,
}

# Methods that prepend virtual tokens: they change sequence positions, so they
# cannot be packed and need the model's own loss over all positions.
PROMPT_LEARNING = {"prefix", "prompt"}


def apply(model: Any, cfg: Any) -> Any:
    """Make ``model`` trainable according to ``cfg`` and log the trainable share.

    Args:
        model: A loaded causal LM.
        cfg: One of the method configs (``FullMethod``, ``LoraMethod`` ...).

    Returns:
        The model to train (a ``peft.PeftModel`` for adapter methods).
    """
    model = BUILDERS[cfg.name](model, cfg)
    trainable, total = trainable_parameters(model)
    log.info("method %s: %d of %d parameters trainable (%.2f%%)", cfg.name, trainable, total, 100 * trainable / total)
    return model


def trainable_parameters(model: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def load_kwargs(cfg: Any) -> dict[str, Any]:
    """Extra ``from_pretrained`` arguments a method needs (QLoRA: a bitsandbytes quantization config)."""
    if cfg.name != "qlora":
        return {}
    if not torch.cuda.is_available():
        raise ModelError("method 'qlora' needs a CUDA GPU (bitsandbytes 4/8-bit kernels); on a CPU use method 'lora'")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ModelError("method 'qlora' needs the bitsandbytes package: pip install bitsandbytes") from None
    from transformers import BitsAndBytesConfig

    if cfg.bits == 8:
        return {"quantization_config": BitsAndBytesConfig(load_in_8bit=True)}
    return {
        "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=cfg.quant_type, bnb_4bit_use_double_quant=cfg.double_quant,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    }
