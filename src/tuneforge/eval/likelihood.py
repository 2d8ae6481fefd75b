"""Label scoring by log-likelihood: which allowed label the model finds most probable, without generating.

For a classification task the model is asked the prompt, then every label is
scored as the answer training teaches (the label's tokens and the end-of-turn
token) by its summed log-probability; the prediction is the argmax. There is
no free text to parse, so no answer is unparseable, and it shows what the
model *knows* even when its generated answers ramble (a base model answering
in sentences).

The sum, not the per-token mean, picks the label: it is the probability of
answering exactly that label and stopping, which is what greedy generation
approximates. A mean would favour long labels whose later tokens are easy.

Cost: the prompts' common prefix (template, system prompt, instruction) is run
once (:class:`tuneforge.eval.generate.SharedPrefix`); each batch of prompts is
then run once on its own tokens, and its cache repeated for the labels, whose
tokens go through the model together in one forward pass.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

BATCH_SIZE = 16
"""Prompts per forward pass; the label pass holds ``BATCH_SIZE x labels x label tokens`` rows of logits."""


@dataclass(frozen=True)
class LabelScores:
    """Summed log-probability of each label (columns, in ``labels`` order) for each example (rows)."""

    logprobs: np.ndarray
    seconds: float

    @property
    def predicted(self) -> np.ndarray:
        """Index of the most probable label per example."""
        return self.logprobs.argmax(axis=1)

    @property
    def examples_per_second(self) -> float:
        return len(self.logprobs) / self.seconds if self.seconds > 0 else float("inf")


def label_continuations(tokenizer: Any, example: dict, labels: Sequence[str]) -> list[list[int]]:
    """The tokens that follow the rendered prompt when each label is the answer, as training labels them.

    Uses :func:`tuneforge.data.tokenize_example` on the example with its answer replaced by the
    label, so the tokens (label text and end-of-turn token) are exactly those training learned.
    The generation prompt ends the header line, so a label tokenizes the same after any prompt.
    """
    from tuneforge.data import IGNORE_INDEX, prompt_messages, tokenize_example

    prompt = prompt_messages(example)
    out = []
    for label in labels:
        f = tokenize_example({"messages": [*prompt, {"role": "assistant", "content": label}]}, tokenizer,
                             max_seq_length=2**62)
        ids, marks = f["input_ids"], f["labels"]
        # Only the final answer's run of labelled tokens: earlier assistant turns of the prompt are labelled too.
        end = max(i for i, mark in enumerate(marks) if mark != IGNORE_INDEX) + 1
        start = end
        while start > 0 and marks[start - 1] != IGNORE_INDEX:
            start -= 1
        out.append(list(ids[start:end]))
    return out


def score_labels(
    model: Any, tokenizer: Any, examples: Sequence[dict], labels: Sequence[str], *, batch_size: int = BATCH_SIZE
) -> LabelScores:
    """Summed log-probability of every label as the answer to every example.

    Args:
        model: A causal LM (a ``PeftModel`` too; run it under ``disable_adapter()`` for the base).
        tokenizer: Its tokenizer.
        examples: Canonical chat examples (their own answers are ignored).
        labels: The allowed labels.
        batch_size: Prompts per forward pass.

    Returns:
        :class:`LabelScores` with an ``(examples, labels)`` array of log-probabilities.

    Example:
        >>> scores = score_labels(model, tokenizer, examples, ["billing", "refund"])
        >>> [labels[i] for i in scores.predicted]
        ['billing', 'refund', ...]
    """
    from tuneforge.eval.generate import SharedPrefix, _is_prompt_learning, encode_prompts, render_prompts
    from tuneforge.eval.length import prompt_budget

    conts = label_continuations(tokenizer, examples[0], labels)
    ids, _ = encode_prompts(tokenizer, render_prompts(tokenizer, examples), prompt_budget(model, max(map(len, conts))))
    device = next(model.parameters()).device
    out = np.zeros((len(examples), len(labels)))
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        with torch.inference_mode():
            if _is_prompt_learning(model):  # virtual tokens or an injected past: no cache sharing
                out[:] = _full_rows(model, tokenizer, ids, conts)
            else:
                prefix = SharedPrefix.build(model, ids, device)
                order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
                for b in range(0, len(order), batch_size):
                    batch = order[b : b + batch_size]
                    out[batch] = _batch_logprobs(model, prefix, [ids[i] for i in batch], conts,
                                                 tokenizer.pad_token_id, device)
    finally:
        model.train(was_training)
    return LabelScores(out, time.perf_counter() - start)


def _batch_logprobs(model: Any, prefix: Any, rows: list[Sequence[int]], conts: list[list[int]], pad_id: int,
                    device: Any) -> np.ndarray:
    n, k = len(rows), len(conts)
    input_ids, mask = prefix.pad(rows, pad_id, device)
    # Positions count real tokens only (padding sits between the prefix and each row's own tokens).
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    first = model(input_ids=input_ids[:, prefix.length :], attention_mask=mask, position_ids=positions[:, prefix.length :],
                  cache=prefix.cache_for(n), use_cache=True, logits_to_keep=1)
    # The prompt's last position predicts each label's first token.
    logprobs = torch.log_softmax(first.logits[:, -1].float(), dim=-1)[:, [c[0] for c in conts]]  # (n, k)
    # Each prompt row becomes k rows (one per label), sharing its cache; a label's tokens but the
    # last are fed (right padded: padding after them cannot change them), each predicting the next.
    cache = first.cache
    cache.batch_repeat_interleave(k)
    width = max(len(c) for c in conts) - 1
    feed = torch.full((k, width), pad_id, dtype=torch.long)
    feed_mask = torch.zeros((k, width), dtype=torch.long)
    target = torch.zeros((k, width), dtype=torch.long)
    for j, c in enumerate(conts):
        feed[j, : len(c) - 1] = torch.as_tensor(c[:-1])
        feed_mask[j, : len(c) - 1] = 1
        target[j, : len(c) - 1] = torch.as_tensor(c[1:])
    feed, feed_mask, target = (t.repeat(n, 1).to(device) for t in (feed, feed_mask, target))
    full_mask = torch.cat([mask.repeat_interleave(k, dim=0), feed_mask], dim=1)
    start = mask.sum(dim=1).repeat_interleave(k).unsqueeze(1)
    rest = model(input_ids=feed, attention_mask=full_mask, position_ids=start + torch.arange(width, device=device),
                 cache=cache, use_cache=True).logits.float()
    token_lp = torch.log_softmax(rest, dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1) * feed_mask
    return (logprobs + token_lp.sum(dim=1).view(n, k)).cpu().numpy()


def _full_rows(model: Any, tokenizer: Any, ids: list[Sequence[int]], conts: list[list[int]]) -> np.ndarray:
    """Every (prompt, label) pair as one teacher-forced row: slower, but works for any model."""
    from tuneforge.data import IGNORE_INDEX
    from tuneforge.eval.loss import features_nll

    features = [{"input_ids": [*p, *c], "labels": [IGNORE_INDEX] * len(p) + list(c)} for p in ids for c in conts]
    nll = features_nll(model, features, pad_token_id=tokenizer.pad_token_id)[:, 0]
    return -nll.reshape(len(ids), len(conts))
