"""Shared fixtures: a tiny random Llama folder (seconds) and the embedded SmolLM2 (end-to-end tests)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _data_cache(tmp_path_factory):
    """Runs in tests cache prepared data in a temporary folder, not in the user's ~/.cache/tuneforge/data."""
    os.environ["TUNEFORGE_DATA_CACHE"] = str(tmp_path_factory.mktemp("data-cache"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A folder holding a tiny random Llama + ChatML BPE tokenizer (AutoModelForCausalLM-loadable)."""
    from tuneforge.models import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from tuneforge.models import load_tokenizer

    return load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="session")
def smollm2_dir():
    """The embedded SmolLM2-135M-Instruct, dequantized once into the cache."""
    from tuneforge.models import resolve

    return resolve("smollm2-135m-instruct")
