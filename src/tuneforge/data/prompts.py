"""Prompts for generation and the tokens that end an answer: one place for eval, generate, chat and serve.

Training renders conversations with :mod:`tuneforge.data.template` (the chat
template, or the documented ``### User:/### Assistant:`` fallback for a
tokenizer without one). Everything that *generates* must render the prompt the
same way and stop at the same token the model learned to emit, or a tuned
model rambles past its end-of-turn marker (``<|im_end|>`` for ChatML). These
functions are that contract.
"""

from __future__ import annotations

from typing import Any

from tuneforge.data.template import end_of_turn_token, has_chat_template, render_prompt

__all__ = ["add_special_tokens", "encode_prompt", "render_prompt", "stop_token_ids"]


def add_special_tokens(tokenizer: Any) -> bool:
    """Whether tokenizing a rendered prompt must add special tokens (BOS).

    A chat template writes its own; the fallback format relies on the tokenizer adding them,
    as it did when the model was trained on it.
    """
    return not has_chat_template(tokenizer)


def encode_prompt(messages: list[dict], tokenizer: Any) -> list[int]:
    """Token ids of ``messages`` followed by an opened assistant turn: what the model continues.

    Raises:
        DataError: the chat template cannot render these messages.
    """
    text = render_prompt(messages, tokenizer)
    return tokenizer(text, add_special_tokens=add_special_tokens(tokenizer))["input_ids"]


def stop_token_ids(tokenizer: Any, model: Any | None = None) -> list[int]:
    """Token ids that end an answer: the template's end-of-turn token, eos, and the model's own eos ids.

    Example:
        >>> stop_token_ids(smollm2_tokenizer)  # <|im_end|>, then <|endoftext|>
        [2, 0]
    """
    ids = [tokenizer.convert_tokens_to_ids(end_of_turn_token(tokenizer)), tokenizer.eos_token_id]
    model_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += model_eos if isinstance(model_eos, list) else [model_eos]
    return list(dict.fromkeys(i for i in ids if i is not None))
