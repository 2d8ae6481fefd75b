"""End to end on the real SmolLM2-135M-Instruct: GGUF f16 export round-trips with identical greedy completions."""

from __future__ import annotations

import pytest


@pytest.mark.e2e
def test_smollm2_gguf_f16_round_trip(tmp_path):
    from gguf import GGUFReader

    from tuneforge.export import DEFAULT_PROMPTS, run

    # The built-in check: 3 short chat prompts, 16 new tokens each. (Not "Say hello.": there SmolLM2's
    # top two next tokens differ by 2e-4 in logit, less than f16 weight rounding moves them.)
    result = run("smollm2-135m-instruct", fmt="gguf", quant="f16", output=tmp_path)
    gguf_path = tmp_path / "model-f16.gguf"
    assert result.files == [gguf_path, tmp_path / "Modelfile", tmp_path / "README.md"]  # README.md: the model card
    assert "output.weight" not in {t.name for t in GGUFReader(gguf_path).tensors}  # SmolLM2 ties its embeddings

    report = result.roundtrip
    assert len(report.checks) == len(DEFAULT_PROMPTS) == 3
    assert all(c.same_prompt_tokens for c in report.checks)
    assert report.agreement == 1.0, report.summary()
    assert report.max_logit_diff < 0.1
    assert "Paris" in report.checks[0].exported
    modelfile = (tmp_path / "Modelfile").read_text()
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in modelfile
