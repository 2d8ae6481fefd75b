"""Merging: the merged folder is a plain model that generates exactly what the adapter model generates."""

from __future__ import annotations

import json
import os

import pytest
import torch

from tests.export.conftest import PROMPTS, greedy
from tuneforge.errors import ExportError


def test_merge_matches_adapter_model(lora_run, merged_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.models import load

    assert merged_dir == lora_run / "merged"
    adapter = load(lora_run)  # PeftModel over the base, not merged
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    assert type(merged).__name__ == "LlamaForCausalLM"
    for prompt in PROMPTS:
        want, want_logits = greedy(adapter.model, adapter.tokenizer, prompt)
        got, got_logits = greedy(merged, tokenizer, prompt)
        assert got == want
        torch.testing.assert_close(got_logits, want_logits, atol=1e-4, rtol=1e-4)


def test_adapter_changes_outputs(tiny_model_dir, merged_dir):
    """Guards the test above: with a no-op adapter it would pass for any merge."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    _, base_logits = greedy(base, tokenizer, PROMPTS[0], 1)
    _, merged_logits = greedy(merged, tokenizer, PROMPTS[0], 1)
    assert (base_logits - merged_logits).abs().max() > 0.1


def test_merged_folder_contents(merged_dir, tiny_tokenizer):
    from safetensors import safe_open
    from transformers import AutoTokenizer, GenerationConfig

    files = {p.name for p in merged_dir.iterdir()}
    assert "model.safetensors" in files and "config.json" in files
    assert not any("adapter" in f for f in files)
    with safe_open(str(merged_dir / "model.safetensors"), framework="pt") as f:
        assert not any("lora" in k for k in f.keys())
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    assert tokenizer.chat_template == tiny_tokenizer.chat_template
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    eos = GenerationConfig.from_pretrained(merged_dir).eos_token_id
    assert end_of_turn in (eos if isinstance(eos, list) else [eos])
    provenance = json.loads((merged_dir / "tuneforge_merge.json").read_text())
    assert provenance["kind"] == "run" and provenance["weights"].endswith("adapter")


def test_merge_of_full_finetune_saves_the_model(full_run, tmp_path):
    from transformers import AutoModelForCausalLM

    from tuneforge.export import merge

    out = merge(full_run, tmp_path / "merged-full")
    want = AutoModelForCausalLM.from_pretrained(full_run / "model", dtype=torch.float32)
    got = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    for (name, a), (_, b) in zip(want.state_dict().items(), got.state_dict().items()):
        assert torch.equal(a, b), name


def test_merge_to_adapter_folder_default_output(lora_run, tmp_path):
    import shutil

    from tuneforge.export import merge

    adapter = shutil.copytree(lora_run / "adapter", tmp_path / "my-adapter")
    out = merge(adapter)
    assert out == tmp_path / "my-adapter-merged" and (out / "config.json").is_file()


def test_staleness_is_detected(lora_run, merged_dir, tmp_path):
    import shutil

    from tuneforge.export.merging import find_source, is_current, merge_source

    run = shutil.copytree(lora_run, tmp_path / "copy", ignore=shutil.ignore_patterns("merged"))
    source = find_source(run)
    assert not is_current(source, run / "merged")
    merge_source(source, run / "merged")
    assert is_current(source, run / "merged")
    weights = run / "adapter" / "adapter_model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert not is_current(source, run / "merged")


def test_merge_errors(tmp_path, tiny_model_dir, lora_run):
    from tests.export.conftest import write_run_config
    from tuneforge.export import merge

    with pytest.raises(ExportError, match="not found: .*missing-run"):
        merge(tmp_path / "missing-run")
    with pytest.raises(ExportError, match="plain model folder"):
        merge(tiny_model_dir)
    write_run_config(tmp_path / "unfinished", tiny_model_dir, "lora")
    with pytest.raises(ExportError, match="no trained weights"):
        merge(tmp_path / "unfinished")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not written by tuneforge"):
        merge(lora_run, tmp_path / "junk")
    assert (tmp_path / "junk" / "notes.txt").read_text() == "mine"  # never deleted
    with pytest.raises(ExportError, match="would overwrite"):
        merge(lora_run, tiny_model_dir)  # the base model folder
    with pytest.raises(ExportError, match="would overwrite"):
        merge(lora_run, lora_run)


def test_merge_cli(cli, lora_run, tmp_path, capsys):
    assert cli(["merge", str(lora_run), "--output", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "model.safetensors").is_file()
    assert "merged model written to" in capsys.readouterr().out
    assert cli(["merge", str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err


def _save_adapter(base_dir, peft_config, path):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from tuneforge.models import load_tokenizer

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32), peft_config)
    torch.manual_seed(2)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    model.save_pretrained(path)
    load_tokenizer(base_dir).save_pretrained(path)
    return path


def test_merge_dora_adapter(tiny_model_dir, tmp_path):
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.export import merge
    from tuneforge.models import load

    cfg = LoraConfig(r=4, lora_alpha=8, use_dora=True, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    adapter = _save_adapter(tiny_model_dir, cfg, tmp_path / "dora")
    out = merge(adapter)
    want = load(adapter)
    got = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids, want_logits = greedy(want.model, want.tokenizer, PROMPTS[1])
    got_ids, got_logits = greedy(got, tokenizer, PROMPTS[1])
    assert got_ids == ids
    torch.testing.assert_close(got_logits, want_logits, atol=1e-4, rtol=1e-4)


def test_prompt_tuning_adapter_cannot_be_merged(tiny_model_dir, tmp_path):
    from peft import PromptTuningConfig

    from tuneforge.export import merge

    adapter = _save_adapter(tiny_model_dir, PromptTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM"),
                            tmp_path / "prompt")
    with pytest.raises(ExportError, match="PROMPT_TUNING adapter .* cannot be merged"):
        merge(adapter)
