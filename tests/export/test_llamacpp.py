"""The GGUF export run in llama.cpp itself (llama-cpp-python, the ``interop`` extra), and the Modelfile against it."""

from __future__ import annotations

import pytest

from tuneforge.errors import ExportError

pytest.importorskip("llama_cpp", reason="llama-cpp-python (pip install 'tuneforge[interop]') runs the GGUF")


def test_export_runs_the_gguf_in_llama_cpp(gguf_f16):
    report = gguf_f16.llamacpp
    assert report is not None and report.n_tokens == 16 and len(report.checks) == 3
    # llama.cpp's own tokenizer (pre-tokenizer, merges, special tokens from our metadata) gives transformers' ids.
    assert all(c.same_prompt_tokens for c in report.checks)
    # The random tiny model has near-tied logits (margins ~1e-3) that f16 rounding and llama.cpp's
    # kernels may flip: every prompt agrees on its 16 tokens, or first differs where transformers'
    # two candidates are within the tie tolerance.
    assert report.explained, report.table()
    for c in report.checks:
        assert c.agrees or (c.reference_gap is not None and 0 <= c.reference_gap < 0.05), c
    assert report.token_agreement >= 0.5
    # Not a degenerate comparison (the plain random model repeats one token): the adapter makes it varied.
    assert len({t for c in report.checks for t in c.reference_ids}) > 5


def test_chat_completion_uses_the_gguf_template_and_stop(gguf_f16):
    chat = gguf_f16.llamacpp.chat
    # llama.cpp rendered the messages with the template stored in the GGUF exactly as transformers does,
    # and stops on the end-of-turn token, which never leaks into the answer.
    assert chat.same_prompt
    assert chat.stop == ["<|im_end|>"]
    assert chat.finish_reason in ("stop", "length")
    assert "<|im_end|>" not in chat.answer and "<|im_start|>" not in chat.answer
    assert gguf_f16.modelfile_problems == []


def test_wrong_weights_are_caught(lora_run, tiny_model_dir, merged_dir, tmp_path):
    """The check fails when the GGUF is not the model: the base's GGUF against the LoRA-merged reference."""
    from tests.export.conftest import PROMPTS
    from tuneforge.export import check_llamacpp, run

    run(tiny_model_dir, fmt="gguf", quant="f16", output=tmp_path, check=False)
    report = check_llamacpp(merged_dir, tmp_path / "model-f16.gguf", PROMPTS, n_tokens=12)
    assert not report.explained
    assert any(not c.agrees and not c.near_tie and c.reference_gap > 0.05 for c in report.checks)
    assert "differs at token" in report.table()


def test_missing_or_unreadable_gguf(merged_dir, tmp_path):
    from tuneforge.export import check_llamacpp

    with pytest.raises(ExportError, match="GGUF file not found"):
        check_llamacpp(merged_dir, tmp_path / "nope.gguf", ["hi"])
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ExportError, match="llama.cpp cannot load"):
        check_llamacpp(merged_dir, bad, ["hi"])
    with pytest.raises(ExportError, match="at least one prompt"):
        check_llamacpp(merged_dir, bad, [])


def test_export_cli_prints_the_llama_cpp_table(cli, lora_run, tmp_path, capsys):
    assert cli(["export", str(lora_run), "--format", "gguf", "--quant", "q8_0", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "llama.cpp:" in out and "greedy tokens with transformers" in out
    assert "| prompt | tokens agreeing | verdict |" in out
