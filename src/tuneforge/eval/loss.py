"""Teacher-forced negative log-likelihood per example: the loss and perplexity metrics and the forgetting check.

Each example becomes ``input_ids`` + ``labels`` (``-100`` where no loss is
taken); a forward pass gives the summed NLL of the labelled tokens and their
count, so any set of examples aggregates to ``sum(nll) / sum(tokens)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

# Logits are (tokens x vocab) floats: 2,048 tokens x 49,152 (SmolLM2) x 4 bytes is ~400 MB,
# the most one batch may hold on a shared CPU machine.
TOKEN_BUDGET = 2048


def example_nll(
    model: Any, tokenizer: Any, examples: Sequence[dict], *, max_seq_length: int, too_long: str = "drop"
) -> np.ndarray:
    """Summed NLL of the labelled tokens of each example, with their count.

    The labels come from :func:`tuneforge.data.tokenize_example`, so evaluation
    scores exactly the tokens training learned: a conversation's answer tokens
    (incl. the end-of-turn token), every token of raw text. With ``too_long="drop"``
    an example longer than ``max_seq_length`` gets a ``[0, 0]`` row (no weight);
    ``"truncate"`` scores its first ``max_seq_length`` tokens.

    Returns:
        ``(n, 2)`` array of ``[summed NLL, labelled tokens]``.
    """
    from tuneforge.data import tokenize_example

    features = [tokenize_example(ex, tokenizer, max_seq_length=max_seq_length, too_long=too_long) for ex in examples]
    return features_nll(model, features, pad_token_id=tokenizer.pad_token_id)


def answer_nll(model: Any, tokenizer: Any, examples: Sequence[dict], *, limit: int | None) -> tuple[np.ndarray, int]:
    """Summed NLL of each test example's answer tokens, never dropping a row for the training length.

    Evaluation scores the user's test set as given: an example is scored in full up to
    ``limit`` (the model's context); a longer one keeps its *last* ``limit`` tokens, so the
    answer is scored on what fits and only the start of the prompt is lost (as in generation).

    Returns:
        ``(n, 2)`` rows of ``[summed NLL, answer tokens]`` and the number of examples cut to ``limit``.
    """
    from tuneforge.data import IGNORE_INDEX, tokenize_example

    features, cut = [], 0
    for ex in examples:
        f = tokenize_example(ex, tokenizer, max_seq_length=2**62)  # no length limit here: the cut is below
        if f is not None and limit is not None and len(f["input_ids"]) > limit:
            cut += 1
            f = {key: ids[-limit:] for key, ids in f.items()}
            f = f if any(label != IGNORE_INDEX for label in f["labels"]) else None
        features.append(f)
    return features_nll(model, features, pad_token_id=tokenizer.pad_token_id), cut


@torch.inference_mode()
def features_nll(model: Any, features: Sequence[dict | None], *, pad_token_id: int) -> np.ndarray:
    """Summed NLL and labelled-token count per feature dict (``None`` gives ``[0, 0]``).

    Features are sorted by length and batched under :data:`TOKEN_BUDGET` so padding and memory stay small.
    """
    rows = np.zeros((len(features), 2))
    order = sorted((i for i, f in enumerate(features) if f), key=lambda i: len(features[i]["input_ids"]))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        start = 0
        while start < len(order):
            longest = len(features[order[start]]["input_ids"])
            batch = [order[start]]
            # order is ascending, so the last member is the longest; grow while the padded batch fits.
            while start + len(batch) < len(order):
                nxt = len(features[order[start + len(batch)]]["input_ids"])
                if nxt * (len(batch) + 1) > TOKEN_BUDGET:
                    break
                batch.append(order[start + len(batch)])
                longest = nxt
            rows[batch] = _batch_nll(model, [features[i] for i in batch], longest, pad_token_id, device)
            start += len(batch)
    finally:
        model.train(was_training)
    return rows


def _batch_nll(model: Any, feats: list[dict], length: int, pad_token_id: int, device: Any) -> np.ndarray:
    from tuneforge.data import IGNORE_INDEX

    ids = torch.full((len(feats), length), pad_token_id, dtype=torch.long)
    labels = torch.full((len(feats), length), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(feats), length), dtype=torch.long)
    for row, f in enumerate(feats):
        n = len(f["input_ids"])
        ids[row, :n] = torch.as_tensor(f["input_ids"])
        labels[row, :n] = torch.as_tensor(f["labels"])
        mask[row, :n] = 1
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
    # Prompt tuning prepends virtual tokens to the logits; the last `length` positions are the input's.
    logits = logits[:, -length:].float()
    # Token t is predicted from positions < t: shift so logits[t] scores labels[t + 1].
    shift_logits, shift_labels = logits[:, :-1], labels[:, 1:].to(device)
    nll = torch.nn.functional.cross_entropy(
        shift_logits.transpose(1, 2), shift_labels, ignore_index=IGNORE_INDEX, reduction="none"
    )
    counted = (shift_labels != IGNORE_INDEX).sum(dim=1)
    return torch.stack([nll.sum(dim=1), counted.float()], dim=1).cpu().numpy()
