"""Load models and tokenizers (alias, folder, GGUF, hub id, run directory); tiny models for tests."""

from tuneforge.models.load import ALIASES, LoadedModel, cache_dir, dequantize_gguf, load, load_model, load_tokenizer, resolve
from tuneforge.models.target import Target, resolve_target
from tuneforge.models.tiny import build_tiny_model, build_tiny_tokenizer, save_tiny_model

__all__ = [
    "ALIASES", "LoadedModel", "build_tiny_model", "build_tiny_tokenizer", "cache_dir", "dequantize_gguf",
    "Target", "load", "load_model", "load_tokenizer", "resolve", "resolve_target", "save_tiny_model",
]
