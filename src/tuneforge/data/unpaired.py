"""Rows that are not pairs: KTO's judged answers and GRPO's prompts, from canonical row to ``Kept | Dropped``.

Canonical forms (:mod:`tuneforge.data.formats`)::

    unpaired  {"prompt": [messages], "completion": str, "label": bool, "meta": {...}}
    prompt    {"prompt": [messages], "reference": str | None, "meta": {...}}

Cleaning is the pairs' (:func:`~tuneforge.data.pairs.clean_prompted`: the supervised rules
on the prompt and the answer at once), with these drops:

===================  ==============================================================
empty                a user turn of the prompt is empty
empty_answer         a KTO completion (or a GRPO reference given as text) is empty
too_long             the prompt + answer (or, without a reference, the prompt) does
                     not fit ``max_seq_length`` tokens
===================  ==============================================================

Deduplication keys on the texts only, so a second copy of a KTO answer is dropped whatever
its label says (the first one read wins, as for every other kind of row).
"""

from __future__ import annotations

from typing import Any

from tuneforge.config.schema import CleanConfig
from tuneforge.data.clean import Dropped, Kept, check_length, dedupe_key
from tuneforge.data.pairs import check_pair_length, clean_prompted
from tuneforge.data.prompts import encode_prompt


def clean_unpaired(row: dict, cfg: CleanConfig) -> Kept | Dropped:
    """Clean a KTO row's prompt and completion.

    Example:
        >>> clean_unpaired({"prompt": [{"role": "user", "content": "q"}], "completion": " ", "label": True},
        ...                CleanConfig()).reason
        'empty_answer'
    """
    return clean_prompted(row, ("completion",), cfg, empty_answer="empty_answer")


def clean_prompt(row: dict, cfg: CleanConfig) -> Kept | Dropped:
    """Clean a GRPO prompt, and its reference when it has one."""
    return clean_prompted(row, ("reference",) if row.get("reference") is not None else (), cfg, empty_answer="empty_answer")


def as_chat(row: dict) -> dict:
    """The row as one chat example (prompt, then its answer when it has one): what keys and snippets read."""
    answer = row.get("completion", row.get("reference"))
    turns = [{"role": "assistant", "content": answer}] if answer is not None else []
    return {"messages": [*row["prompt"], *turns]}


def unpaired_key(row: dict, mode: str) -> str | None:
    """Dedupe key of a KTO row or a GRPO prompt: its texts (not the label, see the module docstring)."""
    return dedupe_key(as_chat(row), mode)


def check_unpaired_length(row: dict, tokenizer: Any, max_seq_length: int) -> Dropped | None:
    """``Dropped("too_long")`` when prompt + answer (or a bare prompt) does not fit ``max_seq_length`` tokens.

    A GRPO prompt without a reference is measured as the model will see it, with the generation
    prompt; the completions it samples are bounded by ``training.grpo.max_completion_length``.
    """
    answer = "completion" if "completion" in row else "reference" if row.get("reference") is not None else None
    if answer is not None:
        return check_pair_length(row, tokenizer, max_seq_length, answers=(answer,))
    dropped = check_length({"messages": row["prompt"]}, max_seq_length)
    if dropped is None and tokenizer is not None:
        n = len(encode_prompt(row["prompt"], tokenizer))
        if n > max_seq_length:
            dropped = Dropped("too_long", f"the prompt is {n} tokens > max_seq_length {max_seq_length}")
    return dropped


def unpaired_snippet(row: dict) -> str:
    """The texts of a KTO row or GRPO prompt, for the data report's examples of dropped rows."""
    answer = row.get("completion", row.get("reference"))
    mark = {True: "+ ", False: "- "}.get(row.get("label"), "= ")
    return " / ".join([*(m["content"] for m in row["prompt"]), *([mark + answer] if answer is not None else [])])


def prompt_from_supervised(example: dict) -> dict:
    """A supervised chat example as a GRPO prompt: every turn before the last answer, that answer the reference.

    Example:
        >>> prompt_from_supervised({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
        {'prompt': [{'role': 'user', 'content': 'q'}], 'reference': 'a'}
    """
    messages = example["messages"]
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    out = {"prompt": messages[:last], "reference": messages[last]["content"]}
    if "meta" in example:
        out["meta"] = example["meta"]
    return out


def as_example(row: dict) -> dict | None:
    """A row as the supervised example the generation eval scores (prompt + the desirable answer or reference).

    None for a KTO row labelled undesirable and for a prompt without a reference: nothing to compare against.
    """
    answer = row.get("reference") if "reference" in row else (row["completion"] if row.get("label") else None)
    if answer is None:
        return None
    out = {"messages": [*row["prompt"], {"role": "assistant", "content": answer}]}
    if "meta" in row:
        out["meta"] = row["meta"]
    return out
