"""Adaptation methods: full fine-tuning and PEFT adapters (LoRA, DoRA, QLoRA, prefix/prompt tuning, IA3, bottleneck adapters)."""

from tuneforge.methods.apply import BUILDERS, PROMPT_LEARNING, apply, load_kwargs, lora_config, trainable_parameters

__all__ = ["BUILDERS", "PROMPT_LEARNING", "apply", "load_kwargs", "lora_config", "trainable_parameters"]
