"""How long evaluation may generate, and how much prompt fits: both come from the task and the model.

A fixed generation cap silently scores answers cut short as wrong (an 8-token
cap turns ``apple_pay_or_google_pay`` into ``apple_pay_or_google_``). So unless
the user sets ``eval.generation.max_new_tokens``, the cap is derived from the
test set: the longest reference (or label) in tokens, plus one token for the
stop token that ends the answer, plus :data:`MARGIN` tokens because a word
tokenizes slightly differently after the generation prompt than on its own.

Prompts are never cut to the *training* length (a user's test file is the
benchmark); only a prompt longer than the model's context minus the generation
budget is cut, from the left, so the question and the generation prompt at the
end survive.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tuneforge.config.schema import GenerationConfig
from tuneforge.errors import EvalError

MARGIN = 4
"""Extra tokens beyond the longest reference: in-context tokenization can differ by a token or two."""
STOP_TOKENS = 1
"""Generation ends on the first stop token, which is generated (and counted) like any other."""


def answer_budget(tokenizer: Any, references: Sequence[str], labels: Sequence[str] | None = None) -> int:
    """Tokens an answer may need: the longest reference or label, plus the stop token and :data:`MARGIN`.

    Example:
        >>> answer_budget(tokenizer, ["billing", "refund"], ["billing", "apple_pay_or_google_pay"])
        15
    """
    texts = [*references, *(labels or [])]
    longest = max((len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]), default=0)
    return longest + STOP_TOKENS + MARGIN


def resolve_generation(gen: GenerationConfig, tokenizer: Any, references: Sequence[str] | None,
                       labels: Sequence[str] | None = None) -> GenerationConfig:
    """``gen`` with ``max_new_tokens`` set: the user's value when given, else :func:`answer_budget`.

    Raises:
        EvalError: no value is set and there are no references to derive it from.
    """
    if gen.max_new_tokens is not None:
        return gen
    if not references:
        raise EvalError("eval.generation.max_new_tokens is not set and there are no reference answers to derive it from")
    return gen.model_copy(update={"max_new_tokens": answer_budget(tokenizer, references, labels)})


def context_length(model: Any) -> int | None:
    """The model's context in tokens (``max_position_embeddings``), or ``None`` when it does not say."""
    value = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return value if isinstance(value, int) and value > 0 else None


def prompt_budget(model: Any, max_new_tokens: int) -> int | None:
    """Longest prompt that leaves room for ``max_new_tokens`` in the model's context (``None``: no limit).

    Raises:
        EvalError: the generation budget alone fills the context.
    """
    context = context_length(model)
    if context is None:
        return None
    if max_new_tokens >= context:
        raise EvalError(
            f"eval.generation.max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's "
            f"context of {context} tokens; lower it"
        )
    return context - max_new_tokens
