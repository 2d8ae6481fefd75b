"""Batched answer generation for evaluation: chat template, left padding, KV cache, seeded decoding.

Prompts are the messages before each example's final assistant turn, rendered
with the tokenizer's chat template and ``add_generation_prompt=True``. They are
sorted by length so a batch holds prompts of similar length (little padding),
generated greedily or by sampling (``eval.generation``), stopped at the
end-of-turn token, and returned in the original order. The tokens every prompt
starts with are run once and shared through the KV cache (:class:`SharedPrefix`).

Each answer that reached ``max_new_tokens`` without a stop token is flagged
``truncated``: it was cut, not finished, and the report counts it apart from
answers that are simply wrong. A prompt longer than the model's context minus
``max_new_tokens`` is cut from the left (the question and the generation
prompt are at the end) and flagged ``prompt_truncated``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
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
    model: Any, tokenizer: Any, examples: Sequence[dict], gen: GenerationConfig, *, seed: int = 42,
    progress: Callable[[int, int], None] | None = None,
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
        progress: Called after each batch with ``(answers done, answers in all)``.

    Returns:
        :class:`Generations` with the stripped answers in example order.

    Example:
        >>> out = generate_answers(model, tokenizer, examples, GenerationConfig(max_new_tokens=16))
        >>> out.texts[0]
        'billing'
    """
    return generate_texts(model, tokenizer, render_prompts(tokenizer, examples), gen, seed=seed, progress=progress)


def generate_texts(
    model: Any, tokenizer: Any, prompts: Sequence[str], gen: GenerationConfig, *, seed: int = 42,
    progress: Callable[[int, int], None] | None = None,
) -> Generations:
    """Generate one answer per already-rendered prompt (see :func:`generate_answers`)."""
    from tuneforge.eval.length import prompt_budget

    if gen.max_new_tokens is None:
        raise ValueError("generate_texts needs gen.max_new_tokens; resolve it first (tuneforge.eval.length)")
    limit = prompt_budget(model, gen.max_new_tokens)
    ids, prompt_truncated = encode_prompts(tokenizer, prompts, limit)
    # Longest first: a batch that does not fit in memory fails at once, not at the end.
    order = sorted(range(len(prompts)), key=lambda i: -len(ids[i]))
    stops = stop_token_ids(tokenizer, model)
    settings: dict[str, Any] = {
        "max_new_tokens": gen.max_new_tokens, "do_sample": gen.do_sample, "use_cache": True,
        "eos_token_id": stops, "pad_token_id": tokenizer.pad_token_id,
    }
    if gen.do_sample:  # passing these to greedy decoding only triggers warnings
        settings.update(temperature=gen.temperature, top_p=gen.top_p)
    else:
        settings.update(temperature=None, top_p=None, top_k=None)
    device = next(model.parameters()).device
    texts: list[str] = [""] * len(prompts)
    truncated = [False] * len(prompts)
    new_tokens = 0
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.inference_mode():
            torch.manual_seed(seed)
            prefix = SharedPrefix.build(model, ids, device)
            for b in range(0, len(order), gen.batch_size):
                batch = order[b : b + gen.batch_size]
                input_ids, mask = prefix.pad([ids[i] for i in batch], tokenizer.pad_token_id, device)
                out = model.generate(input_ids=input_ids, attention_mask=mask,
                                     cache=prefix.cache_for(len(batch)), **settings)
                answers = out[:, input_ids.shape[1] :]
                new_tokens += int((answers != tokenizer.pad_token_id).sum())
                # No stop token anywhere in the row: generation ran out of budget mid-answer
                # (finished rows are padded after their stop token, so padding never hides one).
                stopped = torch.isin(answers, torch.tensor(stops, device=answers.device)).any(dim=1).tolist()
                for i, text, done in zip(batch, tokenizer.batch_decode(answers, skip_special_tokens=True), stopped):
                    texts[i] = text.strip()
                    truncated[i] = not done
                if progress is not None:
                    progress(b + len(batch), len(prompts))
    finally:
        model.train(was_training)
    return Generations(texts, time.perf_counter() - start, new_tokens, truncated, prompt_truncated)


def encode_prompts(tokenizer: Any, prompts: Sequence[str], limit: int | None) -> tuple[list[list[int]], list[bool]]:
    """Token ids of each rendered prompt, tokenized once, and whether it was cut to ``limit``.

    A prompt too long for the context keeps its end (the question and the generation prompt).
    """
    ids = tokenizer(list(prompts), add_special_tokens=add_special_tokens(tokenizer))["input_ids"]
    cut = [limit is not None and len(row) > limit for row in ids]
    return [row[-limit:] if c else row for row, c in zip(ids, cut)], cut


MIN_SHARED_TOKENS = 8
"""Shorter common prefixes are recomputed per row: copying their cache would cost more than it saves."""


@dataclass
class SharedPrefix:
    """The tokens every prompt starts with (system prompt, instruction, template header) and their KV cache.

    Evaluation prompts of one task share most of their tokens: on the quickstart tickets
    ~70 of ~105 (chat template, system prompt, the instruction listing the labels). The
    prefill of those tokens is most of the work of answering 8 tokens, so they are run
    once and every batch starts from a copy of their cache; each row then feeds only its
    own tokens, left padded *after* the prefix (the attention mask hides the padding and
    positions come from its cumulative sum, as with ordinary left padding).
    """

    length: int = 0
    cache: Any = None

    @classmethod
    def build(cls, model: Any, ids: Sequence[Sequence[int]], device: Any) -> SharedPrefix:
        length = shared_prefix_length(ids)
        # Prompt-learning adapters (prefix/prompt tuning) bring their own past or virtual tokens.
        if length < MIN_SHARED_TOKENS or _is_prompt_learning(model):
            return cls()
        prefix = torch.tensor([list(ids[0][:length])], device=device)
        out = model(input_ids=prefix, attention_mask=torch.ones_like(prefix), use_cache=True, logits_to_keep=1)
        return cls(length, out.cache)

    def cache_for(self, rows: int) -> Any:
        """A fresh copy of the prefix cache for a batch of ``rows`` (generation extends it in place)."""
        if self.cache is None:
            return None
        cache = copy.deepcopy(self.cache)
        cache.batch_repeat_interleave(rows)
        return cache

    def pad(self, rows: Sequence[Sequence[int]], pad_id: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Full prompts as ``input_ids``/``attention_mask``, padding between the shared prefix and each row's rest."""
        rests = [list(r[self.length :]) for r in rows]
        width = max(len(r) for r in rests)
        ids = torch.full((len(rows), self.length + width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        if self.length:
            ids[:, : self.length] = torch.as_tensor(list(rows[0][: self.length]))
            mask[:, : self.length] = 1
        for n, rest in enumerate(rests):
            ids[n, ids.shape[1] - len(rest) :] = torch.as_tensor(rest)
            mask[n, ids.shape[1] - len(rest) :] = 1
        return ids.to(device), mask.to(device)


def shared_prefix_length(ids: Sequence[Sequence[int]]) -> int:
    """Tokens every row starts with, leaving at least one token per row to feed (its logits start the answer)."""
    if not ids:
        return 0
    first, n = ids[0], min(len(r) for r in ids) - 1
    for row in ids[1:]:
        n = next((k for k in range(n) if row[k] != first[k]), n)
    return max(n, 0)


def _is_prompt_learning(model: Any) -> bool:
    config = getattr(model, "active_peft_config", None)
    return bool(getattr(config, "is_prompt_learning", False))
