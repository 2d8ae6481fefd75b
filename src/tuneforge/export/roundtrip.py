"""Check an exported GGUF against the model it came from: same prompts, greedy decoding, compare.

Both sides go through transformers (the GGUF is dequantized on load by its own
reader, independent of our writer), and each side's tokenizer encodes the
prompts, so the check covers the weights, the rotary permutation, the
hyperparameters and the tokenizer metadata at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.errors import ExportError

DEFAULT_PROMPTS = (
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "List three colors.",
)


@dataclass(frozen=True)
class PromptCheck:
    """One prompt's greedy completions from the reference and the exported model."""

    prompt: str
    reference: str
    exported: str
    token_agreement: float
    """Teacher-forced: fraction of the reference completion's tokens that the exported model
    also ranks first when fed the same prefix (free-running greedy decoding diverges for good
    after one different token, so it would measure only where the first difference falls)."""
    same_prompt_tokens: bool
    """Whether both tokenizers turned the chat prompt into the same ids."""
    max_logit_diff: float
    """Largest absolute difference of the two models' logits over the reference completion."""
    identical: bool
    """Whether the exported model's greedy completion equals the reference token for token."""


@dataclass(frozen=True)
class RoundtripReport:
    """How closely an exported model reproduces its reference."""

    checks: list[PromptCheck] = field(default_factory=list)

    @property
    def agreement(self) -> float:
        """Fraction of prompts whose greedy completion is identical."""
        return sum(c.identical for c in self.checks) / len(self.checks) if self.checks else 0.0

    @property
    def token_agreement(self) -> float:
        """Mean token-level agreement over prompts."""
        return sum(c.token_agreement for c in self.checks) / len(self.checks) if self.checks else 0.0

    @property
    def max_logit_diff(self) -> float:
        return max((c.max_logit_diff for c in self.checks), default=0.0)

    def summary(self) -> str:
        return (
            f"round-trip: {self.agreement:.0%} of {len(self.checks)} prompts identical, "
            f"token agreement {self.token_agreement:.1%}, max logit diff {self.max_logit_diff:.2e}"
        )


def check_inputs(gguf_path: str | Path, prompts: list[str] | tuple[str, ...], who: str) -> tuple[Path, list[str]]:
    """The GGUF path and prompts of a check, refused when the file is missing or there is no prompt."""
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise ExportError(f"GGUF file not found: {gguf_path}")
    if not prompts:
        raise ExportError(f"{who} needs at least one prompt")
    return gguf_path, list(prompts)


def _prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    from tuneforge.data.prompts import encode_prompt

    return list(encode_prompt([{"role": "user", "content": prompt}], tokenizer))


def _generate(model: Any, tokenizer: Any, prompts: list[list[int]], max_new_tokens: int) -> tuple[list[list[int]], Any]:
    """Greedy completions of all prompts in one left-padded batch, each cut after its end-of-turn token,
    and the logits that chose each token (``[batch, step, vocab]``)."""
    import torch

    from tuneforge.data.prompts import stop_token_ids

    stops = stop_token_ids(tokenizer, model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
            eos_token_id=stops, pad_token_id=pad, return_dict_in_generate=True, output_logits=True,
        )
    completions = []
    for row in out.sequences[:, width:].tolist():
        end = next((i for i, t in enumerate(row) if t in stops), len(row) - 1)
        completions.append(row[: end + 1])
    return completions, torch.stack(out.logits, dim=1)


def _teacher_forced_logits(model: Any, prompts: list[list[int]], completions: list[list[int]], pad: int) -> list[Any]:
    """For each prompt + completion, the model's logits at the positions that predict the completion."""
    import torch

    seqs = [p + c for p, c in zip(prompts, completions)]
    width = max(len(s) for s in seqs)
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])  # right padding: earlier positions unaffected
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    return [logits[i, len(p) - 1 : len(p) - 1 + len(c)] for i, (p, c) in enumerate(zip(prompts, completions))]


def check_roundtrip(
    merged_dir: str | Path, gguf_path: str | Path, prompts: list[str] | tuple[str, ...] = DEFAULT_PROMPTS,
    max_new_tokens: int = 16,
) -> RoundtripReport:
    """Compare greedy completions of a model folder and a GGUF file exported from it.

    The reference model decodes greedily; the exported model then reads the same
    prompt + completion in one forward pass. Where it ranks every reference token
    first, its own greedy decoding is that same completion, so it only decodes
    on its own (to show what it says instead) for prompts where it does not.

    Args:
        merged_dir: The reference Hugging Face folder (the merged model).
        gguf_path: The exported ``.gguf`` file.
        prompts: User messages, each wrapped in the chat template when there is one.
        max_new_tokens: Tokens generated per prompt.

    Returns:
        A :class:`RoundtripReport` (per-prompt completions, agreement, logit difference).

    Raises:
        ExportError: either side cannot be loaded.

    Example:
        >>> check_roundtrip("runs/demo/merged", "runs/demo/export/gguf/model-f16.gguf").agreement
        1.0
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.models import load_model

    gguf_path, prompts = check_inputs(gguf_path, prompts, "check_roundtrip")
    ref_model, ref_tok, _ = load_model(str(merged_dir))
    try:
        tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    except Exception as exc:  # transformers raises many kinds for files it cannot read
        raise ExportError(f"transformers cannot load the exported {gguf_path}: {exc}") from exc
    ref_model.eval()
    model.eval()
    ref_prompts = [_prompt_ids(ref_tok, p) for p in prompts]
    exp_prompts = [_prompt_ids(tok, p) for p in prompts]
    ref_out, ref_logits = _generate(ref_model, ref_tok, ref_prompts, max_new_tokens)
    pad = ref_tok.pad_token_id if ref_tok.pad_token_id is not None else ref_tok.eos_token_id
    exp_logits = _teacher_forced_logits(model, ref_prompts, ref_out, pad)
    checks = []
    for i, prompt in enumerate(prompts):
        ref_ids, logits = ref_out[i], exp_logits[i]
        predicted = logits.argmax(-1).tolist()
        agreement = sum(a == b for a, b in zip(predicted, ref_ids)) / len(ref_ids) if ref_ids else 1.0
        identical = agreement == 1.0 and ref_prompts[i] == exp_prompts[i]
        exported = ref_ids if identical else _generate(model, tok, [exp_prompts[i]], max_new_tokens)[0][0]
        checks.append(PromptCheck(
            prompt=prompt,
            reference=ref_tok.decode(ref_ids, skip_special_tokens=True),
            exported=tok.decode(exported, skip_special_tokens=True),
            token_agreement=agreement,
            same_prompt_tokens=ref_prompts[i] == exp_prompts[i],
            max_logit_diff=(ref_logits[i, : len(ref_ids)] - logits).abs().max().item() if ref_ids else 0.0,
            identical=identical,
        ))
    return RoundtripReport(checks)
