"""Export fixtures: a LoRA run and a full fine-tune run on the tiny model, plus helpers to compare models."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

PROMPTS = ["Where is my package?", "Classify the support ticket: refund", "hello"]


def write_run_config(run: Path, model: Path, method: str) -> None:
    from tuneforge.config import load_config

    cfg = load_config(data={"model": str(model), "method": method, "data": {"train": "train.jsonl"}})
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))


@pytest.fixture(scope="session")
def lora_run(tiny_model_dir, tmp_path_factory):
    """A run directory whose adapter/ holds a LoRA adapter that really changes the tiny model's outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tuneforge.models import load_tokenizer

    run = tmp_path_factory.mktemp("runs") / "lora-demo"
    write_run_config(run, tiny_model_dir, "lora")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    peft_model = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:  # PEFT initialises B to zero, which would make the adapter a no-op
                param.normal_(std=0.5)
    peft_model.save_pretrained(run / "adapter")
    load_tokenizer(tiny_model_dir).save_pretrained(run / "adapter")
    return run


@pytest.fixture(scope="session")
def full_run(tmp_path_factory, tiny_model_dir):
    """A run directory of a full fine-tune: model/ holds differently initialised weights than the base."""
    from tuneforge.models import save_tiny_model

    run = tmp_path_factory.mktemp("runs") / "full-demo"
    write_run_config(run, tiny_model_dir, "full")
    save_tiny_model(run / "model", seed=3)
    return run


@pytest.fixture(scope="session")
def merged_dir(lora_run):
    from tuneforge.export import merge

    return merge(lora_run)


@pytest.fixture(scope="session")
def gguf_f16(lora_run, merged_dir):
    """The f16 GGUF export of the LoRA run, with its round-trip report."""
    from tuneforge.export import run

    return run(lora_run, fmt="gguf", quant="f16")


def greedy(model, tokenizer, prompt: str, max_new_tokens: int = 12):
    """Greedy token ids after a chat prompt, and the prompt's logits."""
    import torch

    batch = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        logits = model(**batch).logits
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    return out[0, batch["input_ids"].shape[1]:].tolist(), logits


@pytest.fixture
def cli():
    """The ``tuneforge`` command, run in-process: ``cli([...])`` returns the exit code."""
    from tuneforge.cli.main import main

    return main
