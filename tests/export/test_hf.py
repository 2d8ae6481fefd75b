"""Hugging Face export: merged model + adapter in PEFT layout + README with vLLM commands."""

from __future__ import annotations

import torch

from tests.export.conftest import PROMPTS, greedy


def test_export_hf_of_lora_run(lora_run, merged_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.export import run

    result = run(lora_run, fmt="hf")
    out = lora_run / "export" / "hf"
    assert result.output == out and result.roundtrip is None
    assert {p.name for p in result.files} >= {"model.safetensors", "config.json", "adapter", "README.md"}

    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(out)
    reference = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    for prompt in PROMPTS[:2]:
        got, got_logits = greedy(model, tokenizer, prompt)
        want, want_logits = greedy(reference, tokenizer, prompt)
        assert got == want
        torch.testing.assert_close(got_logits, want_logits)

    # The adapter copy is a working PEFT adapter for the base model (what vLLM --lora-modules reads).
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


def test_adapter_copy_reproduces_merged(lora_run, tiny_model_dir, merged_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.export import run

    out = run(lora_run, fmt="hf").output
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    adapted = PeftModel.from_pretrained(base, str(out / "adapter"))
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(out)
    _, a = greedy(adapted, tokenizer, PROMPTS[0], 1)
    _, b = greedy(merged, tokenizer, PROMPTS[0], 1)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_readme_has_vllm_commands(lora_run, tiny_model_dir):
    from tuneforge.export import run

    out = run(lora_run, fmt="hf").output.resolve()
    text = (out / "README.md").read_text()
    assert f"vllm serve {out} --served-model-name lora-demo" in text
    assert (
        f"vllm serve {tiny_model_dir} --enable-lora --lora-modules lora-demo={out / 'adapter'} --max-lora-rank 8"
        in text
    )


def test_export_hf_of_full_run_has_no_adapter(full_run, tmp_path, cli, capsys):
    assert cli(["export", str(full_run), "--format", "hf", "--output", str(tmp_path / "hf")]) == 0
    assert "hf export written to" in capsys.readouterr().out
    assert not (tmp_path / "hf" / "adapter").exists()
    text = (tmp_path / "hf" / "README.md").read_text()
    assert "vllm serve" in text and "--enable-lora" not in text


def test_vllm_lora_rank():
    from tuneforge.export.hf import vllm_lora_rank

    assert [vllm_lora_rank(r) for r in (4, 8, 16, 17, 64, 300, 512)] == [8, 8, 16, 32, 64, 320, 512]
