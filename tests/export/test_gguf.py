"""GGUF export: metadata llama.cpp needs, tensor layout, and a round trip through transformers."""

from __future__ import annotations

import numpy as np
import pytest

from tuneforge.errors import ExportError


def _field(reader, key):
    from gguf import GGUFValueType

    f = reader.fields[key]
    if f.types[0] == GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode()
    if f.types[0] == GGUFValueType.ARRAY:
        return [f.parts[i].tolist()[0] if f.types[-1] != GGUFValueType.STRING else bytes(f.parts[i]).decode()
                for i in f.data]
    return f.parts[f.data[0]].tolist()[0]


def test_f16_round_trip_is_identical(gguf_f16, lora_run):
    report = gguf_f16.roundtrip
    assert gguf_f16.output == lora_run / "export" / "gguf"
    assert [p.name for p in gguf_f16.files] == ["model-f16.gguf", "Modelfile", "README.md"]
    assert len(report.checks) == 3 and all(c.same_prompt_tokens for c in report.checks)
    # f16 rounding of the weights only: every logit within 5e-3. The random tiny model has near-tied
    # logits (margins ~1e-3) that such rounding may flip, so identical text is required of the real
    # SmolLM2 (test_smollm2_e2e.py), not of this model.
    assert report.max_logit_diff < 5e-3
    assert report.token_agreement >= 0.9 and report.agreement >= 2 / 3


def test_q8_0_round_trip_is_close(lora_run, merged_dir, tmp_path):
    from tests.export.conftest import PROMPTS
    from tuneforge.export import check_roundtrip, run

    result = run(lora_run, fmt="gguf", quant="q8_0", output=tmp_path, check=False)
    assert result.roundtrip is None
    gguf = tmp_path / "model-q8_0.gguf"
    f16_size = (lora_run / "export" / "gguf" / "model-f16.gguf").stat().st_size
    assert gguf.stat().st_size < f16_size
    report = check_roundtrip(merged_dir, gguf, PROMPTS, max_new_tokens=12)
    # A random tiny model has many near-tied logits that 8-bit rounding flips (chance level is
    # 1/512); the real SmolLM2 agrees fully, see test_smollm2_e2e.py.
    assert report.token_agreement >= 0.75
    assert 0 < report.max_logit_diff < 0.1


def test_metadata_and_tensors(gguf_f16, tiny_tokenizer, merged_dir):
    import json

    from gguf import GGMLQuantizationType, GGUFReader, TokenType

    reader = GGUFReader(gguf_f16.output / "model-f16.gguf")
    config = json.loads((merged_dir / "config.json").read_text())
    assert _field(reader, "general.architecture") == "llama"
    assert _field(reader, "llama.block_count") == config["num_hidden_layers"]
    assert _field(reader, "llama.attention.head_count_kv") == config["num_key_value_heads"]
    assert _field(reader, "llama.vocab_size") == config["vocab_size"]
    assert _field(reader, "tokenizer.ggml.model") == "gpt2"
    assert _field(reader, "tokenizer.ggml.pre") == "gpt-2"
    assert _field(reader, "tokenizer.chat_template") == tiny_tokenizer.chat_template
    assert _field(reader, "tokenizer.ggml.eos_token_id") == tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert _field(reader, "tokenizer.ggml.add_bos_token") is False
    tokens = _field(reader, "tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type")
    assert len(tokens) == config["vocab_size"] and tokens[2] == "<|im_end|>" and types[2] == TokenType.CONTROL
    assert len(_field(reader, "tokenizer.ggml.merges")) > 0
    by_name = {t.name: t for t in reader.tensors}
    assert "output.weight" not in by_name  # tied embeddings: llama.cpp reuses token_embd
    assert by_name["token_embd.weight"].tensor_type == GGMLQuantizationType.F16
    assert by_name["blk.0.attn_norm.weight"].tensor_type == GGMLQuantizationType.F32
    assert len(by_name) == 2 + 9 * config["num_hidden_layers"]


def test_rope_permutation_is_undone_by_transformers():
    """Our permutation and transformers' GGUF loader invert each other, also with grouped-query heads."""
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    from tuneforge.export.gguf_file import permute_for_rope

    w = np.arange(128 * 3, dtype=np.float32).reshape(128, 3)  # 4 kv heads x head dim 32
    proc = LlamaTensorProcessor(config={"num_attention_heads": 8, "num_key_value_heads": 4})
    permuted = permute_for_rope(w, 4)
    assert not np.array_equal(permuted, w)
    back = proc.process(permuted, "blk.0.attn_k.weight").weights
    np.testing.assert_array_equal(back, w)


def test_modelfile(gguf_f16):
    text = (gguf_f16.output / "Modelfile").read_text()
    assert "FROM ./model-f16.gguf\n" in text
    assert 'TEMPLATE """{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>' in text
    assert "{{- range .Messages }}" in text and "<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>" in text
    assert 'SYSTEM """You are a helpful assistant."""' in text
    assert text.rstrip().endswith('PARAMETER stop "<|im_end|>"')


def test_modelfile_without_translatable_template(tiny_tokenizer):
    import copy

    from tuneforge.export import build_modelfile, inspect_template

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = "{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"
    info = inspect_template(tok)
    assert not info.chatml and "ChatML" in info.reason
    text = build_modelfile("model-q8_0.gguf", info, "<|im_end|>")
    assert not any(line.startswith("TEMPLATE") for line in text.splitlines())
    assert "# No TEMPLATE: the chat template does not render ChatML" in text
    assert "FROM ./model-q8_0.gguf" in text and 'PARAMETER stop "<|im_end|>"' in text

    tok.chat_template = CHATML_NO_SYSTEM
    info = inspect_template(tok)
    assert info.chatml and info.default_system is None
    text = build_modelfile("m.gguf", info, "<|im_end|>")
    assert any(line.startswith("TEMPLATE") for line in text.splitlines())
    assert not any(line.startswith("SYSTEM") for line in text.splitlines())


CHATML_NO_SYSTEM = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory, tiny_tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    path = tmp_path_factory.mktemp("gpt2")
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=len(tiny_tokenizer))).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


def test_unsupported_architecture(gpt2_dir, tmp_path, cli, capsys):
    from tuneforge.export import run

    with pytest.raises(ExportError, match="'GPT2LMHeadModel'.*supported: LlamaForCausalLM"):
        run(gpt2_dir, fmt="gguf", output=tmp_path)
    assert not list(tmp_path.iterdir())
    assert cli(["export", str(gpt2_dir), "--format", "gguf", "--output", str(tmp_path)]) == 2
    assert "GPT2LMHeadModel" in capsys.readouterr().err


def test_bad_format_quant_and_source(lora_run, tiny_model_dir, tmp_path, cli, capsys):
    from tuneforge.export import run

    with pytest.raises(ExportError, match="unknown export format 'onnx'; choose one of: hf, gguf"):
        run(lora_run, fmt="onnx")
    with pytest.raises(ExportError, match="unknown GGUF quantization 'q4_k'; choose one of: f16, q8_0"):
        run(lora_run, fmt="gguf", quant="q4_k")
    with pytest.raises(ExportError, match="gguf format only"):
        run(lora_run, fmt="hf", quant="q8_0")
    with pytest.raises(ExportError, match="not found"):
        run(tmp_path / "no-such-run", fmt="gguf")
    with pytest.raises(ExportError, match="give an output folder"):
        run(tiny_model_dir, fmt="gguf")
    for argv, message in [
        (["export", str(lora_run), "--format", "onnx"], "unknown export format"),
        (["export", str(lora_run), "--format", "gguf", "--quant", "q4_k"], "unknown GGUF quantization"),
        (["export", str(tmp_path / "no-such-run"), "--format", "gguf"], "not found"),
    ]:
        assert cli(argv) == 2
        assert message in capsys.readouterr().err


def test_unsupported_pre_tokenizer():
    from tuneforge.export.gguf_vocab import pre_tokenizer_name

    assert pre_tokenizer_name({"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}) == "gpt-2"
    smollm = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, {"type": "ByteLevel", "use_regex": True}]}
    assert pre_tokenizer_name(smollm) == "smollm"
    with pytest.raises(ExportError, match="Metaspace.*supported: gpt-2"):
        pre_tokenizer_name({"type": "Metaspace", "replacement": "\u2581"})


def test_export_gguf_cli_prints_report(cli, lora_run, tmp_path, capsys):
    assert cli(["export", str(lora_run), "--format", "gguf", "--quant", "q8_0", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "model-q8_0.gguf" in out and "Modelfile" in out
    assert "round-trip:" in out and "token agreement" in out
    assert "FROM ./model-q8_0.gguf" in (tmp_path / "Modelfile").read_text()
