"""Fixtures for serving tests: LoRA adapters over the tiny model, engines, keys and live servers."""

from __future__ import annotations

import pytest

from tuneforge.security import create_key


def save_lora_adapter(base_dir, out_dir, seed: int):
    """A LoRA adapter for the tiny model whose B matrices are random (not zero), so it changes outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tuneforge.models import load_tokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir))
    # init_lora_weights=False draws B at random too; the default zero B would make the adapter a no-op.
    config = LoraConfig(r=8, lora_alpha=64, target_modules="all-linear", init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(str(out_dir))
    load_tokenizer(base_dir).save_pretrained(str(out_dir))
    return out_dir


@pytest.fixture(scope="session")
def lora_dirs(tiny_model_dir, tmp_path_factory):
    """Two different adapters over the tiny model: {"lora-a": dir, "lora-b": dir}."""
    root = tmp_path_factory.mktemp("adapters")
    names = ["lora-a", "lora-b"]
    return {name: save_lora_adapter(tiny_model_dir, root / name, seed) for seed, name in enumerate(names, 1)}


@pytest.fixture(scope="session")
def engine(tiny_model_dir, lora_dirs):
    """The tiny base served as "tiny" plus both adapters; shared (apps restart its worker as needed)."""
    from tuneforge.serve import BatchingConfig, load_engine

    eng = load_engine(tiny_model_dir, name="tiny", adapters=lora_dirs, batching=BatchingConfig(8, window_ms=20))
    yield eng
    eng.close()


@pytest.fixture
def keys_file(tmp_path):
    """A keys file with one key; returns (path, key)."""
    path = tmp_path / "keys.json"
    return path, create_key(path, "tester")
