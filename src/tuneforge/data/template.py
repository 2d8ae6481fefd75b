"""Chat template and answer-only labels: canonical example -> ``{"input_ids", "labels"}``.

The loss covers only what the model must learn to say: every assistant turn's
content and the end-of-turn token after it (``<|im_end|>`` for ChatML), which
is what teaches a tuned model to stop. Labels are found by rendering the
conversation prefix by prefix to get each answer's character span, then
tokenizing the full text once with offsets.

Tokenizers without a chat template use a documented fallback format::

    ### System:
    {system}

    ### User:
    {user}

    ### Assistant:
    {assistant}{eos}

Raw text examples are trained on every token (labels = input_ids, eos appended).
"""

from __future__ import annotations

import bisect
import operator
import weakref
from dataclasses import dataclass
from typing import Any, Sequence

from tuneforge.data.clean import Dropped
from tuneforge.errors import DataError

IGNORE_INDEX = -100
FALLBACK_HEADERS = {"system": "### System:\n", "user": "### User:\n", "assistant": "### Assistant:\n"}
FALLBACK_SEPARATOR = "\n\n"
_PROBE = "TUNEFORGE_END_OF_TURN_PROBE"


@dataclass(frozen=True)
class Encoded:
    """A tokenized example and whether it was cut to fit."""

    input_ids: Sequence[int]
    labels: Sequence[int]
    """Lists, or compact ``array("i")`` while preparation holds many rows (:func:`~tuneforge.data.assess.assess`)."""
    truncated: bool = False

    def as_dict(self) -> dict[str, list[int]]:
        # Fresh lists: a row repeated by a mixing weight must not share (mutable) lists.
        return {"input_ids": list(self.input_ids), "labels": list(self.labels)}

    @property
    def answer_tokens(self) -> int:
        return len(self.labels) - self.labels.count(IGNORE_INDEX)  # lists and arrays count in C


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def describe_template(tokenizer: Any) -> str:
    """One line for the data report: which prompt format training uses."""
    if has_chat_template(tokenizer):
        return f"the tokenizer's chat template (end of turn {end_of_turn_token(tokenizer)!r})"
    return "fallback '### User:/### Assistant:' format + eos (the tokenizer has no chat template)"


def prompt_messages(example: dict) -> list[dict]:
    """The messages before the final assistant turn: what the model is asked.

    Raises:
        DataError: the example is raw text or has no assistant turn.
    """
    return example_messages(example)[: _last_assistant(example)]


def reference(example: dict) -> str:
    """The final assistant turn's content: the expected answer."""
    return example_messages(example)[_last_assistant(example)]["content"]


def example_messages(example: dict) -> list[dict]:
    if "messages" not in example:
        raise DataError("a raw text example has no prompt or reference answer (it has no messages)")
    return example["messages"]


def _last_assistant(example: dict) -> int:
    messages = example_messages(example)
    for i in range(len(messages) - 1, -1, -1):
        if messages[i]["role"] == "assistant":
            return i
    raise DataError("the example has no assistant turn")


class _DirectTemplate:
    """``apply_chat_template(..., tokenize=False)`` for plain ``{"role", "content"}`` string messages, minus its overhead.

    Written by hand because preparation renders every conversation twice (with and without the
    answer), and transformers' ``apply_chat_template`` spends more time normalising its inputs
    (message objects, ``None`` keys, media placeholders, reasoning-field aliases) than Jinja spends
    rendering. For messages that are already dicts of exact strings with only ``role`` and ``content``,
    that normalisation is the identity, so the template compiled by transformers (same sandbox, same
    ``raise_exception`` and ``strftime_now``) is called directly with the arguments
    ``apply_chat_template`` would pass it: the messages, ``tools=None``, ``documents=None``,
    ``add_generation_prompt`` and the tokenizer's special tokens. Any other message goes through
    ``apply_chat_template``. Built once per tokenizer and template, and used only if it renders a probe
    conversation exactly as ``apply_chat_template`` does (another transformers version that passes the
    template something else turns it off).
    """

    def __init__(self, tokenizer: Any):
        self.source = tokenizer.chat_template
        self.ok = False
        try:
            from transformers.utils.chat_template_utils import _compile_jinja_template, _plain_template_data

            self.specials = _plain_template_data(dict(tokenizer.special_tokens_map))
            self.compiled = _compile_jinja_template(tokenizer.get_chat_template())
            # The probe checks how the template is called, not what it accepts: a user turn and an answer,
            # which every chat template takes (some refuse system turns).
            probe = [{"role": "user", "content": "u  x\n"}, {"role": "assistant", "content": _PROBE}]
            self.ok = all(
                self.render(probe[:n], add_generation_prompt=g)
                == tokenizer.apply_chat_template(probe[:n], add_generation_prompt=g, tokenize=False)
                for n in (1, 2) for g in (False, True)
            )
        except Exception:  # a template that cannot render the probe, or transformers without these helpers: the library's path
            pass

    def render(self, messages: list[dict], *, add_generation_prompt: bool) -> str:
        chat = [{"role": m["role"], "content": m["content"]} for m in messages]
        return self.compiled.render(messages=chat, tools=None, documents=None, add_generation_prompt=add_generation_prompt, **self.specials)


def _plain(messages: list[dict]) -> bool:
    return all(type(m) is dict and m.keys() <= {"role", "content"} and type(m.get("role")) is str
               and type(m.get("content")) is str for m in messages)


_DIRECT: "weakref.WeakKeyDictionary[Any, _DirectTemplate]" = weakref.WeakKeyDictionary()


def _direct(tokenizer: Any) -> _DirectTemplate | None:
    """The tokenizer's direct renderer, built once per template (also when it is off, so that is decided once)."""
    try:
        found = _DIRECT.get(tokenizer)
        if found is None or found.source != tokenizer.chat_template:
            found = _DIRECT[tokenizer] = _DirectTemplate(tokenizer)
    except TypeError:  # a tokenizer that cannot be a weak dictionary key
        return None
    return found if found.ok else None


def _render(tokenizer: Any, messages: list[dict], *, add_generation_prompt: bool = False) -> str:
    try:
        direct = _direct(tokenizer) if messages and _plain(messages) else None
        if direct is not None:
            return direct.render(messages, add_generation_prompt=add_generation_prompt)
        return tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)
    except Exception as exc:  # jinja raises TemplateError and templates call raise_exception() themselves
        raise DataError(f"the tokenizer's chat template cannot render this conversation: {exc}") from exc


def render_prompt(messages: list[dict], tokenizer: Any) -> str:
    """The text a model sees before it answers: the template with a generation prompt (or the fallback)."""
    if has_chat_template(tokenizer):
        return _render(tokenizer, messages, add_generation_prompt=True)
    return "".join(FALLBACK_HEADERS[m["role"]] + m["content"] + FALLBACK_SEPARATOR for m in messages) + FALLBACK_HEADERS["assistant"]


def render_conversation(messages: list[dict], tokenizer: Any) -> tuple[str, list[tuple[int, int]]]:
    """Render a conversation and find each assistant answer's character span.

    A span runs from the end of the generation prompt to the end of the
    end-of-turn marker; whitespace the template writes after the marker is
    left out, since the model never has to generate it.

    Raises:
        DataError: the template rewrites earlier text when a turn is added (so an
            answer cannot be located), or fails to render.
    """
    if not has_chat_template(tokenizer):
        return _render_fallback(messages, tokenizer)
    full = _render(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], add_generation_prompt=True)
        # The last turn's prefix is the whole conversation: reuse its rendering (a third of the renders).
        upto = full if i == len(messages) - 1 else _render(tokenizer, messages[: i + 1])
        if not (upto.startswith(before) and full.startswith(upto)):
            raise DataError(
                "the tokenizer's chat template does not render conversations prefix by prefix (adding turn "
                f"{i} changes the text before it), so the answer tokens cannot be located for answer-only "
                "labels; use a model whose template renders turns incrementally"
            )
        spans.append((len(before), len(upto.rstrip())))
    return full, spans


def _render_fallback(messages: list[dict], tokenizer: Any) -> tuple[str, list[tuple[int, int]]]:
    eos = tokenizer.eos_token or ""
    text, spans = "", []
    for m in messages:
        text += FALLBACK_HEADERS[m["role"]]
        start = len(text)
        text += m["content"] + (eos if m["role"] == "assistant" else "")
        if m["role"] == "assistant":
            spans.append((start, len(text)))
        text += FALLBACK_SEPARATOR
    return text, spans


def end_of_turn_token(tokenizer: Any) -> str:
    """The token that ends an assistant turn, found by rendering the template (e.g. ``<|im_end|>``).

    Falls back to the eos token when the template writes no special token after an answer.
    """
    if not has_chat_template(tokenizer):
        return tokenizer.eos_token
    text = _render(tokenizer, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE}])
    tail = text[text.rindex(_PROBE) + len(_PROBE):].lstrip()
    candidates = set(tokenizer.all_special_tokens) | set(tokenizer.get_added_vocab())
    for token in sorted(candidates, key=len, reverse=True):
        if token and tail.startswith(token):
            return token
    return tokenizer.eos_token


def _label_tokens(tokenizer: Any, text: str, spans: list[tuple[int, int]], add_special: bool) -> tuple[list[int], list[int]]:
    """Tokenize ``text`` once and keep labels for tokens that overlap an answer span."""
    backend = getattr(tokenizer, "_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if backend is not None and backend.truncation is None and backend.padding is None:
        # The Rust tokenizer itself: what ``tokenizer(text, return_offsets_mapping=True)`` runs, without the
        # BatchEncoding around it (a quarter of the tokenizing time of preparation, which does this per row).
        enc = backend.encode(text, add_special_tokens=add_special)
        ids, offsets = enc.ids, enc.offsets
    else:
        try:
            enc = tokenizer(text, add_special_tokens=add_special, return_offsets_mapping=True)
        except NotImplementedError:  # slow (Python) tokenizers have no offsets: tokenize span by span
            return _label_by_segments(tokenizer, text, spans, add_special)
        ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    return ids, answer_labels(ids, offsets, spans)


def answer_labels(ids: Sequence[int], offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[int]:
    """Each token's id where it is not empty and overlaps an answer span (sorted, disjoint), else ``IGNORE_INDEX``.

    Tokenizers give offsets in text order, so each span's tokens are one slice, found by bisection
    (a row is tokenized once per preparation, and this runs for every row); offsets out of order
    are checked token by token.
    """
    labels = [IGNORE_INDEX] * len(ids)
    if not spans or not ids:
        return labels
    starts, ends = zip(*offsets)
    if all(map(operator.le, starts, starts[1:])) and all(map(operator.le, ends, ends[1:])):
        for span_start, span_end in spans:
            # From the first token that ends after the span starts to the last that starts before it ends.
            first, stop = bisect.bisect_right(ends, span_start), bisect.bisect_left(starts, span_end)
            labels[first:stop] = ids[first:stop]
            for k in range(first, stop):
                if starts[k] == ends[k]:
                    labels[k] = IGNORE_INDEX
        return labels
    for k, (start, end) in enumerate(offsets):
        if end > start and any(end > a and start < b for a, b in spans):
            labels[k] = ids[k]
    return labels


def _label_by_segments(tokenizer: Any, text: str, spans: list[tuple[int, int]], add_special: bool) -> tuple[list[int], list[int]]:
    cuts = sorted({0, len(text), *(p for span in spans for p in span)})
    ids, labels = [], []
    for a, b in zip(cuts, cuts[1:]):
        piece = tokenizer(text[a:b], add_special_tokens=add_special and a == 0)["input_ids"]
        answer = any(s <= a and b <= e for s, e in spans)
        ids += piece
        labels += piece if answer else [IGNORE_INDEX] * len(piece)
    return ids, labels


def encode_example(example: dict, tokenizer: Any, *, max_seq_length: int, too_long: str = "drop") -> Encoded | Dropped:
    """Tokenize an example with answer-only labels, or say why it must be dropped.

    Drop reasons: ``too_long`` (longer than ``max_seq_length`` with ``too_long="drop"``, or
    no answer token left after truncation) and ``no_answer_tokens``.
    """
    if "text" in example:
        ids = list(tokenizer(example["text"], add_special_tokens=True)["input_ids"])
        if tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
            ids.append(tokenizer.eos_token_id)
        labels = list(ids)
    else:
        text, spans = render_conversation(example["messages"], tokenizer)
        # A chat template writes its own BOS; the fallback relies on the tokenizer's.
        ids, labels = _label_tokens(tokenizer, text, spans, add_special=not has_chat_template(tokenizer))
    if labels.count(IGNORE_INDEX) == len(labels):
        return Dropped("no_answer_tokens", "no token of the answer is trained on")
    if len(ids) <= max_seq_length:
        return Encoded(ids, labels)
    if too_long == "drop":
        return Dropped("too_long", f"{len(ids)} tokens > max_seq_length {max_seq_length}")
    ids, labels = ids[:max_seq_length], labels[:max_seq_length]
    if labels.count(IGNORE_INDEX) == len(labels):
        return Dropped("too_long", f"no answer token left after truncating {len(ids)}+ tokens to {max_seq_length}")
    return Encoded(ids, labels, truncated=True)


def tokenize_example(example: dict, tokenizer: Any, *, max_seq_length: int, too_long: str = "drop") -> dict | None:
    """Tokenize a canonical example for training.

    Args:
        example: A canonical example (messages or text).
        tokenizer: A Hugging Face tokenizer (fast tokenizers give exact offsets).
        max_seq_length: Longest sequence in tokens.
        too_long: ``"drop"`` longer examples, or ``"truncate"`` them from the right (kept only
            while an answer token remains).

    Returns:
        ``{"input_ids", "labels"}`` with labels -100 except answer tokens (each assistant
        turn's content and its end-of-turn token), or None when the example must be dropped.

    Example:
        >>> chat = {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}
        >>> tokens = tokenize_example(chat, tokenizer, max_seq_length=64)
        >>> tokenizer.decode([t for t in tokens["labels"] if t != -100])
        '4<|im_end|>'
    """
    result = encode_example(example, tokenizer, max_seq_length=max_seq_length, too_long=too_long)
    return result.as_dict() if isinstance(result, Encoded) else None
