"""The tokenizer half of a GGUF file: a byte-level BPE vocabulary as llama.cpp's ``gpt2`` tokenizer model.

This follows ``get_vocab_base`` / ``_set_vocab_gpt2`` of llama.cpp's
``convert_hf_to_gguf.py``: one token string per embedding row (``[PADn]``
placeholders for rows the tokenizer does not use), token types (added special
tokens are CONTROL), the merges, the special token ids and the chat template
(``gguf.SpecialVocab`` reads those last two from the model folder).

llama.cpp picks the pre-tokenizer (how text is split before BPE) from
``tokenizer.ggml.pre``. Its converter recognises a tokenizer by hashing how it
encodes a probe text, which only works for published tokenizers; a fine-tuned
model may carry a custom one (our tiny test tokenizer is one), so we read the
pre-tokenizer's structure from ``tokenizer.json`` instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf

from tuneforge.errors import ExportError

# The split regex of Llama 3 tokenizers (``llama-bpe`` in llama.cpp).
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SUPPORTED_PRE_TOKENIZERS = {
    "gpt-2": "ByteLevel(use_regex=True)",
    "smollm": "Sequence[Digits(individual_digits=True), ByteLevel(use_regex=True)]",
    "llama-bpe": "Sequence[Split(Llama 3 regex), ByteLevel(use_regex=False)]",
}


@dataclass(frozen=True)
class GGUFVocab:
    """Everything the GGUF tokenizer keys need, computed from a Hugging Face tokenizer."""

    tokens: list[str]
    token_types: list[int]
    pre: str
    add_bos: bool
    add_eos: bool


def pre_tokenizer_name(pre_tokenizer: dict[str, Any] | None) -> str:
    """Name llama.cpp's pre-tokenizer for a ``tokenizer.json`` ``pre_tokenizer`` entry.

    Raises:
        ExportError: the pre-tokenizer is none llama.cpp knows under a name we can map.
    """
    pre_tokenizer = pre_tokenizer or {}
    kind = pre_tokenizer.get("type")
    if kind == "ByteLevel" and pre_tokenizer.get("use_regex", True):
        return "gpt-2"
    if kind == "Sequence":
        parts = pre_tokenizer.get("pretokenizers", [])
        kinds = [p.get("type") for p in parts]
        if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") and parts[1].get("use_regex", True):
            return "smollm"
        if kinds == ["Split", "ByteLevel"] and not parts[1].get("use_regex", True):
            if parts[0].get("pattern", {}).get("Regex") == _LLAMA3_SPLIT:
                return "llama-bpe"
    supported = "; ".join(f"{k}: {v}" for k, v in SUPPORTED_PRE_TOKENIZERS.items())
    raise ExportError(
        f"GGUF export: the tokenizer's pre-tokenizer {json.dumps(pre_tokenizer)[:200]} has no llama.cpp "
        f"equivalent we know; supported: {supported}"
    )


def build_vocab(tokenizer: Any, vocab_size: int) -> GGUFVocab:
    """Token strings and types for every embedding row, as llama.cpp's converter writes them.

    Args:
        tokenizer: A fast (``tokenizers``-backed) Hugging Face tokenizer.
        vocab_size: Rows of the embedding matrix (``config.vocab_size``).

    Raises:
        ExportError: the tokenizer is not a byte-level BPE or is larger than the embedding.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ExportError("GGUF export needs a fast tokenizer (tokenizer.json); this model has a slow one")
    spec = json.loads(backend.to_str())
    if spec.get("model", {}).get("type") != "BPE":
        raise ExportError(
            f"GGUF export supports byte-level BPE tokenizers only; this one is {spec.get('model', {}).get('type')!r}"
        )
    pre = pre_tokenizer_name(spec.get("pre_tokenizer"))
    vocab = tokenizer.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise ExportError(
            f"the tokenizer has token id {max(vocab.values())} but the model embeds only {vocab_size} tokens"
        )
    by_id = {i: tok for tok, i in vocab.items()}
    added = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            token = by_id[i]
            # llama.cpp matches added tokens on normalized text, so store them as they decode.
            if not added[i].normalized:
                token = tokenizer.decode(tokenizer.encode(token, add_special_tokens=False))
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    # Whether encode() adds BOS/EOS is behaviour, not a config flag in every tokenizer: observe it.
    probe = tokenizer.encode("a")
    add_bos = tokenizer.bos_token_id is not None and probe[:1] == [tokenizer.bos_token_id]
    add_eos = tokenizer.eos_token_id is not None and probe[-1:] == [tokenizer.eos_token_id]
    return GGUFVocab(tokens, [int(t) for t in types], pre, add_bos, add_eos)


def write_vocab(writer: gguf.GGUFWriter, model_dir: Path, tokenizer: Any, vocab_size: int) -> GGUFVocab:
    """Add the ``tokenizer.*`` keys (tokens, types, merges, special ids, chat template) to a GGUF writer."""
    vocab = build_vocab(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_size)
    # The tokenizer object is the authority on special tokens (SpecialVocab only guesses from files).
    for kind in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tokenizer, f"{kind}_token_id", None)
        if token_id is not None:
            special.special_token_ids[kind] = int(token_id)
    special.add_special_token.update({"bos": vocab.add_bos, "eos": vocab.add_eos})
    if tokenizer.chat_template and isinstance(tokenizer.chat_template, str):
        special.chat_template = tokenizer.chat_template
    if not special.merges:
        raise ExportError(f"no BPE merges found in {model_dir}/tokenizer.json")
    special.add_to_gguf(writer, quiet=True)
    return vocab
