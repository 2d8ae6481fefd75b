"""Batched answer generation for evaluation: chat template, left padding, KV cache, seeded decoding.

Prompts are the messages before each example's final assistant turn, rendered
with the tokenizer's chat template and ``add_generation_prompt=True``. They are
sorted by length so a batch holds prompts of similar length (little padding),
generated greedily or by sampling (``eval.generation``), stopped at the
end-of-turn token, and returned in the original order.

Each answer that reached ``max_new_tokens`` without a stop token is flagged
``truncated``: it was cut, not finished, and the report counts it apart from
answers that are simply wrong. A prompt longer than the model's context minus
``max_new_tokens`` is cut from the left (the question and the generation
prompt are at the end) and flagged ``prompt_truncated``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from tuneforge.config.schema import GenerationConfig
from tuneforge.data.prompts import add_special_tokens, stop_token_ids  # noqa: F401  (stop_token_ids: re-exported)


@dataclass(frozen=True)
class Generations:
    """Generated answers, in example order, and how long they took."""

    texts: list[str]
    seconds: float
    new_tokens: int
    truncated: list[bool] = field(default_factory=list)
    """Per answer: it hit ``max_new_tokens`` without generating a stop token."""
    prompt_truncated: list[bool] = field(default_factory=list)
    """Per prompt: it was longer than the model's context allows and lost its first tokens."""

    @property
    def examples_per_second(self) -> float:
        return len(self.texts) / self.seconds if self.seconds > 0 else float("inf")


def render_prompts(tokenizer: Any, examples: Sequence[dict]) -> list[str]:
    """Each example's prompt messages as the model sees them before answering (chat template + generation prompt)."""
    from tuneforge.data import prompt_messages
    from tuneforge.data.prompts import render_prompt

    return [render_prompt(prompt_messages(ex), tokenizer) for ex in examples]


def generate_answers(
    model: Any, tokenizer: Any, examples: Sequence[dict], gen: GenerationConfig, *, seed: int = 42
) -> Generations:
    """Generate one answer per example.

    Args:
        model: A causal LM (a ``PeftModel`` too; run it under ``disable_adapter()`` for the base).
        tokenizer: Its tokenizer, with a chat template.
        examples: Canonical chat examples.
        gen: ``max_new_tokens`` (must be set: see :func:`tuneforge.eval.length.resolve_generation`),
            ``do_sample``, ``temperature``, ``top_p``, ``batch_size``.
        seed: Seeds sampling. The global torch RNG is forked, so a caller's RNG stream
            (the trainer's) is left as it was.

    Returns:
        :class:`Generations` with the stripped answers in example order.

    Example:
        >>> out = generate_answers(model, tokenizer, examples, GenerationConfig(max_new_tokens=16))
        >>> out.texts[0]
        'billing'
    """
    return generate_texts(model, tokenizer, render_prompts(tokenizer, examples), gen, seed=seed)


def generate_texts(model: Any, tokenizer: Any, prompts: Sequence[str], gen: GenerationConfig, *, seed: int = 42) -> Generations:
    """Generate one answer per already-rendered prompt (see :func:`generate_answers`)."""
    from tuneforge.eval.length import prompt_budget

    if gen.max_new_tokens is None:
        raise ValueError("generate_texts needs gen.max_new_tokens; resolve it first (tuneforge.eval.length)")
    special = add_special_tokens(tokenizer)
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=special)["input_ids"]]
    limit = prompt_budget(model, gen.max_new_tokens)
    prompt_truncated = [limit is not None and n > limit for n in lengths]
    # Longest first: a batch that does not fit in memory fails at once, not at the end.
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    stops = stop_token_ids(tokenizer, model)
    settings: dict[str, Any] = {
        "max_new_tokens": gen.max_new_tokens, "do_sample": gen.do_sample, "use_cache": True,
        "eos_token_id": stops, "pad_token_id": tokenizer.pad_token_id,
    }
    if gen.do_sample:  # passing these to greedy decoding only triggers warnings
        settings.update(temperature=gen.temperature, top_p=gen.top_p)
    else:
        settings.update(temperature=None, top_p=None, top_k=None)
    fit = {"truncation": True, "max_length": limit} if limit is not None else {}
    device = next(model.parameters()).device
    texts: list[str] = [""] * len(prompts)
    truncated = [False] * len(prompts)
    new_tokens = 0
    sides, was_training = (tokenizer.padding_side, tokenizer.truncation_side), model.training
    # Decoder-only models continue from the last position of each row; a prompt too long for the
    # context keeps its end (the question and the generation prompt).
    tokenizer.padding_side, tokenizer.truncation_side = "left", "left"
    model.eval()
    start = time.perf_counter()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.inference_mode():
            torch.manual_seed(seed)
            for b in range(0, len(order), gen.batch_size):
                batch = order[b : b + gen.batch_size]
                enc = tokenizer([prompts[i] for i in batch], return_tensors="pt", padding=True,
                                add_special_tokens=special, **fit)
                out = model.generate(**enc.to(device), **settings)
                answers = out[:, enc["input_ids"].shape[1] :]
                new_tokens += int((answers != tokenizer.pad_token_id).sum())
                # No stop token anywhere in the row: generation ran out of budget mid-answer
                # (finished rows are padded after their stop token, so padding never hides one).
                stopped = torch.isin(answers, torch.tensor(stops, device=answers.device)).any(dim=1).tolist()
                for i, text, done in zip(batch, tokenizer.batch_decode(answers, skip_special_tokens=True), stopped):
                    texts[i] = text.strip()
                    truncated[i] = not done
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = sides
        model.train(was_training)
    return Generations(texts, time.perf_counter() - start, new_tokens, truncated, prompt_truncated)
