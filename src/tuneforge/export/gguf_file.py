"""Write a Hugging Face Llama folder as one GGUF file (f16 or q8_0) for llama.cpp and Ollama.

The ``gguf`` package is the writer half of llama.cpp's ``convert_hf_to_gguf.py``;
this module is the part of that converter a Llama needs, so exports work with
nothing but ``pip install gguf``:

* hyperparameters under ``llama.*`` (block count, context, widths, heads, rope, norm epsilon);
* tensors renamed by ``gguf.TensorNameMap``; the q/k projections permuted, because
  llama.cpp applies rotary embeddings to interleaved (GPT-J style) pairs while
  Hugging Face Llama rotates the two halves of each head;
* norms and other 1-D tensors in f32, matrices in f16 or Q8_0 (blocks of 32; a
  matrix whose rows do not split into blocks falls back to f16, as in llama.cpp);
* with tied embeddings there is no ``output.weight``: llama.cpp reuses ``token_embd``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterator

import gguf
import numpy as np

from tuneforge.errors import ExportError
from tuneforge.export.gguf_vocab import write_vocab

log = logging.getLogger("tuneforge.export")

SUPPORTED_ARCHITECTURES = {"LlamaForCausalLM": gguf.MODEL_ARCH.LLAMA}
QUANTS = {
    "f16": (gguf.LlamaFileType.MOSTLY_F16, gguf.GGMLQuantizationType.F16),
    "q8_0": (gguf.LlamaFileType.MOSTLY_Q8_0, gguf.GGMLQuantizationType.Q8_0),
}


def check_quant(quant: str) -> None:
    """Raise a clear :class:`ExportError` for a quantization type we cannot write."""
    if quant not in QUANTS:
        raise ExportError(f"unknown GGUF quantization {quant!r}; choose one of: {', '.join(QUANTS)}")


def read_config(model_dir: Path) -> dict[str, Any]:
    """The model's ``config.json``, checked to be an architecture we can write.

    Raises:
        ExportError: no config, or an architecture other than Llama.
    """
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ExportError(f"{model_dir} is not a Hugging Face model folder (no config.json)")
    config = json.loads(path.read_text())
    archs = config.get("architectures") or [config.get("model_type", "unknown")]
    if archs[0] not in SUPPORTED_ARCHITECTURES:
        raise ExportError(
            f"GGUF export does not support the architecture {archs[0]!r} of {model_dir}; "
            f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise ExportError(f"GGUF export supports plain rotary embeddings; {model_dir} uses rope_type {rope_type!r}")
    return config


def permute_for_rope(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder q/k projection rows from Hugging Face's half-split rotary layout to llama.cpp's interleaved one."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _tensors(model_dir: Path) -> Iterator[tuple[str, np.ndarray]]:
    from safetensors import safe_open

    files = sorted(Path(model_dir).glob("model*.safetensors"))
    if not files:
        raise ExportError(f"{model_dir} holds no .safetensors weights")
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():
                yield name, f.get_tensor(name).float().numpy()


def _hyperparameters(writer: gguf.GGUFWriter, config: dict[str, Any], file_type: int) -> None:
    n_head = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // n_head
    rope = config.get("rope_parameters") or {}
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(config.get("num_key_value_heads") or n_head)
    writer.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_vocab_size(config["vocab_size"])
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config["hidden_size"] // n_head:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _encode(name: str, data: np.ndarray, qtype: gguf.GGMLQuantizationType) -> tuple[np.ndarray, gguf.GGMLQuantizationType]:
    # llama.cpp keeps 1-D tensors (norms, biases) in f32: its kernels expect it.
    if data.ndim <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight"):
        return data.astype(np.float32), gguf.GGMLQuantizationType.F32
    try:
        return gguf.quants.quantize(data, qtype), qtype
    except gguf.QuantError as exc:
        log.warning("%s: %s; storing it as f16", name, exc)
        return gguf.quants.quantize(data, gguf.GGMLQuantizationType.F16), gguf.GGMLQuantizationType.F16


def write_gguf(model_dir: str | Path, path: str | Path, quant: str = "f16", *, name: str | None = None) -> Path:
    """Convert a Hugging Face Llama folder (safetensors + tokenizer) into one GGUF file.

    Args:
        model_dir: A folder loadable by ``AutoModelForCausalLM`` (e.g. ``runs/NAME/merged``).
        path: The ``.gguf`` file to write (its folder is created).
        quant: ``"f16"`` or ``"q8_0"`` for the matrices; norms stay f32.
        name: ``general.name`` in the file (default: the folder name).

    Returns:
        The written path.

    Raises:
        ExportError: unsupported architecture, rope type, tokenizer or quantization.

    Example:
        >>> write_gguf("runs/demo/merged", "runs/demo/export/gguf/model-f16.gguf")
    """
    from tuneforge.models import load_tokenizer

    check_quant(quant)
    model_dir, path = Path(model_dir), Path(path)
    config = read_config(model_dir)
    arch = SUPPORTED_ARCHITECTURES[config["architectures"][0]]
    file_type, qtype = QUANTS[quant]
    n_head = config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads") or n_head
    tied = config.get("tie_word_embeddings", False)
    names = gguf.get_tensor_name_map(arch, config["num_hidden_layers"])

    writer = gguf.GGUFWriter(path=None, arch=gguf.MODEL_ARCH_NAMES[arch])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name or model_dir.name)
    _hyperparameters(writer, config, int(file_type))
    write_vocab(writer, model_dir, load_tokenizer(model_dir), config["vocab_size"])
    for hf_name, data in _tensors(model_dir):
        if hf_name.endswith(".rotary_emb.inv_freq") or (tied and hf_name == "lm_head.weight"):
            continue
        if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            data = permute_for_rope(data, n_head)
        elif hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            data = permute_for_rope(data, n_kv)
        new_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            raise ExportError(f"GGUF export: no llama.cpp name for tensor {hf_name!r} in {model_dir}")
        encoded, dtype = _encode(new_name, data, qtype)
        writer.add_tensor(new_name, encoded, raw_dtype=dtype)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    writer.write_header_to_file(path=tmp)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)  # a crash never leaves a truncated file under the final name
    return path
