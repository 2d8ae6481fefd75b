"""Preference pairs: pure functions from a canonical pair to ``Kept`` or ``Dropped(reason)``.

A canonical pair is ``{"prompt": [messages], "chosen": str, "rejected": str, "meta": {...}}``
(:mod:`tuneforge.data.formats`). Cleaning reuses the supervised rules
(:func:`~tuneforge.data.clean.clean_example`) on the prompt and both answers at once,
so PII redactions are counted once, then adds the drops only a pair can have:

===================  ==============================================================
empty                a user turn of the prompt is empty
empty_side           the chosen or the rejected answer is empty
identical_sides      chosen and rejected are the same text (nothing to prefer)
too_long             prompt + either answer does not fit ``max_seq_length`` tokens
===================  ==============================================================

(``prompt_mismatch``, chat pairs whose first turns differ, is found when the row is read.)
"""

from __future__ import annotations

from typing import Any

from tuneforge.config.schema import CleanConfig
from tuneforge.data.clean import Dropped, Kept, check_length, clean_example, dedupe_key
from tuneforge.data.template import encode_example

PAIR_DROPS = ("empty", "empty_side", "identical_sides", "too_long", "prompt_mismatch")


def side(pair: dict, which: str) -> dict:
    """One side of a pair as a supervised chat example (prompt + that answer), ``meta`` kept.

    Example:
        >>> side({"prompt": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": "b"}, "chosen")
        {'messages': [{'role': 'user', 'content': 'q'}, {'role': 'assistant', 'content': 'a'}]}
    """
    out = {"messages": [*pair["prompt"], {"role": "assistant", "content": pair[which]}]}
    if "meta" in pair:
        out["meta"] = pair["meta"]
    return out


def _as_chat(pair: dict) -> dict:
    """Prompt, then chosen and rejected as two assistant turns: one example the supervised cleaner takes."""
    answers = [{"role": "assistant", "content": pair[k]} for k in ("chosen", "rejected")]
    return {"messages": [*pair["prompt"], *answers]}


def clean_prompted(row: dict, answers: tuple[str, ...], cfg: CleanConfig, empty_answer: str = "empty_side") -> Kept | Dropped:
    """Clean a row's prompt turns and its ``answers`` fields together, as supervised data is cleaned.

    The shared step of every preference-style row (pairs, KTO rows, GRPO prompts): one pass of
    :func:`~tuneforge.data.clean.clean_example`, so PII redactions are counted once; then an empty
    user turn drops the row (``empty``), and so does an empty answer (``empty_answer``).
    """
    turns = [{"role": "assistant", "content": row[k]} for k in answers]
    kept = clean_example({"messages": [*row["prompt"], *turns]}, cfg.model_copy(update={"drop_empty": False}))
    messages = kept.example["messages"]
    prompt, cleaned = messages[: len(row["prompt"])], messages[len(row["prompt"]):]
    if cfg.drop_empty:
        for i, m in enumerate(prompt):
            if m["role"] == "user" and not m["content"].strip():
                return Dropped("empty", f"the user turn prompt[{i}] is empty")
    for name, answer in zip(answers, cleaned):
        if not answer["content"].strip():
            return Dropped(empty_answer, f"the {name} answer is empty")
    out = {**row, "prompt": prompt, **{name: answer["content"] for name, answer in zip(answers, cleaned)}}
    return Kept(out, kept.redactions)


def clean_pair(pair: dict, cfg: CleanConfig) -> Kept | Dropped:
    """Clean a pair's texts as supervised data is cleaned, then apply the pair drops (see the module docstring).

    Example:
        >>> clean_pair({"prompt": [{"role": "user", "content": "q"}], "chosen": "a ", "rejected": "a"}, CleanConfig()).reason
        'identical_sides'
    """
    kept = clean_prompted(pair, ("chosen", "rejected"), cfg)
    if isinstance(kept, Kept) and kept.example["chosen"] == kept.example["rejected"]:
        return Dropped("identical_sides", "chosen and rejected are the same text")
    return kept


def pair_key(pair: dict, mode: str) -> str | None:
    """Dedupe key of a pair (prompt and both answers), as :func:`~tuneforge.data.clean.dedupe_key` for examples."""
    return dedupe_key(_as_chat(pair), mode)


def check_pair_length(pair: dict, tokenizer: Any, max_seq_length: int,
                      answers: tuple[str, ...] = ("chosen", "rejected")) -> Dropped | None:
    """``Dropped("too_long")`` when prompt + any of its ``answers`` is longer than ``max_seq_length`` tokens.

    Pairs are never truncated: cutting the answers' ends off would hide the very
    tokens that make one answer better than the other. With ``tokenizer=None`` only
    characters are counted (:func:`~tuneforge.data.clean.check_length`), which is
    cheap enough to run before cleaning.
    """
    for which in answers:
        example = side(pair, which)
        dropped = check_length(example, max_seq_length)  # characters first: spares tokenizing a huge row
        if dropped is None and tokenizer is not None:
            encoded = encode_example(example, tokenizer, max_seq_length=max_seq_length, too_long="drop")
            dropped = encoded if isinstance(encoded, Dropped) else None
        if dropped is not None:
            return Dropped(dropped.reason, f"{which}: {dropped.detail}")
    return None


def snippet(pair: dict) -> str:
    """The texts of a pair, for the data report's examples of dropped rows."""
    return " / ".join([*(m["content"] for m in pair["prompt"]), f"+ {pair['chosen']}", f"- {pair['rejected']}"])
