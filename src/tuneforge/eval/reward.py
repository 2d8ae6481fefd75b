"""Load a trained reward model and score (prompt, completion) pairs with it: the one scorer every caller uses.

A reward model is a run of ``training.objective: reward`` (a LoRA adapter whose ``score``
head, one output, is saved with it), or that run merged into a plain Hugging Face
sequence-classification folder (``tuneforge merge``). Training, ``tuneforge score``,
``tuneforge serve`` and other recipes (rewards for GRPO) all turn text into token ids with
:func:`encode`, so a completion is scored exactly as it was seen in training.

Example:
    >>> scorer = load_reward_model("runs/reward")              # doctest: +SKIP
    >>> scorer.score(["Classify: my card was charged twice"], ["billing"])  # doctest: +SKIP
    [2.31]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tuneforge.errors import DataError, ModelError

# Sequences scored per forward pass: the head reads one hidden state per sequence, so memory is
# the activations of batch x length tokens, like an evaluation batch.
SCORE_BATCH = 16

Prompt = str | list[dict]
"""A prompt: a user message as a string, or chat messages (``[{"role": ..., "content": ...}, ...]``)."""


def encode(tokenizer: Any, prompt: Prompt, completion: str, *, max_length: int | None = None) -> list[int]:
    """Token ids of a prompt answered by ``completion``: the chat template with the answer as the assistant turn.

    The same rendering as the supervised and preference data (:func:`tuneforge.data.template.encode_example`),
    end-of-turn token included, so the head reads the last token of a finished answer.

    Raises:
        DataError: the sequence is longer than ``max_length`` tokens (it is never truncated: the
            reward reads the end of the answer).
    """
    from tuneforge.data.clean import Dropped
    from tuneforge.data.template import encode_example

    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    encoded = encode_example({"messages": [*messages, {"role": "assistant", "content": completion}]}, tokenizer,
                             max_seq_length=max_length or 1 << 30)
    if isinstance(encoded, Dropped):
        raise DataError(f"cannot score this completion: {encoded.detail or encoded.reason}")
    return list(encoded.input_ids)


@dataclass
class RewardScorer:
    """A reward model ready to score. Build it with :func:`load_reward_model` (or from a model in training).

    Attributes:
        model: A sequence-classification model with one output (PEFT-wrapped or merged), in eval mode.
        tokenizer: Its tokenizer (with the chat template it was trained with).
        max_length: Longest prompt + completion in tokens (the run's ``training.max_seq_length``).
        source: Where it was loaded from, for messages.
    """

    model: Any
    tokenizer: Any
    max_length: int | None = None
    source: str = ""

    def score(self, prompts: Sequence[Prompt], completions: Sequence[str], *, batch_size: int = SCORE_BATCH) -> list[float]:
        """One scalar reward per (prompt, completion), higher = preferred.

        Args:
            prompts: Strings (one user turn each) or chat message lists.
            completions: The answers, one per prompt.
            batch_size: Sequences per forward pass.

        Raises:
            ValueError: ``prompts`` and ``completions`` differ in length.
            DataError: an input is longer than ``max_length`` tokens (naming its index).
        """
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions; give one completion per prompt")
        ids = []
        for i, (prompt, completion) in enumerate(zip(prompts, completions)):
            try:
                ids.append(encode(self.tokenizer, prompt, completion, max_length=self.max_length))
            except DataError as exc:
                raise DataError(f"input {i}: {exc}") from None
        return score_ids(self.model, ids, pad_token_id=self.tokenizer.pad_token_id, batch_size=batch_size)

    def score_pairs(self, pairs: Sequence[dict], *, batch_size: int = SCORE_BATCH) -> Any:
        """``(n, 2)`` array: the rewards of the chosen and the rejected answer of each canonical pair."""
        import numpy as np

        prompts = [pair["prompt"] for pair in pairs]
        return np.stack([self.score(prompts, [pair[k] for pair in pairs], batch_size=batch_size)
                         for k in ("chosen", "rejected")], axis=1)


@torch.no_grad()
def score_ids(model: Any, ids: Sequence[list[int]], *, pad_token_id: int, batch_size: int = SCORE_BATCH) -> list[float]:
    """Rewards of tokenized sequences, batched longest-first and right-padded as in training.

    The head reads the hidden state of each row's last non-pad token (transformers'
    ``*ForSequenceClassification`` locate it from ``config.pad_token_id``), so padding on the
    right, as TRL's collator does, leaves every score unchanged.
    """
    device = next(model.parameters()).device
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    scores = [0.0] * len(ids)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        width = max(len(ids[i]) for i in chunk)
        input_ids = torch.full((len(chunk), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):
            input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
            mask[row, : len(ids[i])] = 1
        logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
        for row, i in enumerate(chunk):
            scores[i] = float(logits[row, 0].float())
    return scores


def load_reward_model(path: str | Path, *, trust_remote_code: bool = False) -> RewardScorer:
    """Load a reward model: a ``training.objective: reward`` run, its merged folder, or any one-output
    ``*ForSequenceClassification`` folder.

    Raises:
        ModelError: nothing there, or not a reward model (a causal LM run or folder: the message says
            what it is and what to use instead).

    Example:
        >>> load_reward_model("runs/reward").score(["hi"], ["hello"])  # doctest: +SKIP
    """
    from transformers import AutoModelForSequenceClassification

    from tuneforge.config.schema import ModelConfig
    from tuneforge.models.load import load_model, load_tokenizer
    from tuneforge.models.target import resolve_target

    found = resolve_target(path)
    if found.task != "reward":
        raise ModelError(f"{path} is not a reward model (it is a {found.kind} of a causal language model); "
                         "train one with `training.objective: reward`")
    max_length = None
    if found.run is not None:
        from tuneforge.config.load import load_config

        stored = load_config(found.run.config)
        max_length = stored.training.max_seq_length
        if not found.run.adapter.is_dir():
            raise ModelError(f"{path}: a reward run keeps its head in adapter/, which is missing")
        return _with_adapter(stored.model.model_copy(update={"trust_remote_code": trust_remote_code}),
                             found.run.adapter, max_length, str(path))
    if found.kind == "adapter":
        base = json.loads((found.path / "adapter_config.json").read_text()).get("base_model_name_or_path")
        return _with_adapter(ModelConfig(name_or_path=base, trust_remote_code=trust_remote_code), found.path, None, str(path))
    model, _, folder = load_model(ModelConfig(name_or_path=str(path), trust_remote_code=trust_remote_code),
                                  auto_class=AutoModelForSequenceClassification, num_labels=1)
    return _ready(model, load_tokenizer(folder), None, str(path))


def _with_adapter(base_cfg: Any, adapter: Path, max_length: int | None, source: str) -> RewardScorer:
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from tuneforge.models.load import load_model, load_tokenizer
    from tuneforge.security.model_files import check_weight_files

    check_weight_files(adapter, allow_pickle=base_cfg.allow_pickle)
    # The base gets a new, random head here; the adapter brings the trained one (modules_to_save).
    model, _, _ = load_model(base_cfg, auto_class=AutoModelForSequenceClassification, num_labels=1)
    try:
        model = PeftModel.from_pretrained(model, str(adapter))
    except Exception as exc:
        raise ModelError(f"cannot load the reward adapter {adapter}: {exc}") from exc
    return _ready(model, load_tokenizer(adapter), max_length, source)


def _ready(model: Any, tokenizer: Any, max_length: int | None, source: str) -> RewardScorer:
    # The head locates each row's last token from config.pad_token_id, as in training.
    model.config.pad_token_id = tokenizer.pad_token_id
    return RewardScorer(model.eval(), tokenizer, max_length, source)
