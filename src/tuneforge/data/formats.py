"""Record formats: detect a row's format from its fields and convert it to the canonical example.

The canonical example is the contract every other package uses::

    chat-like  {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...], "meta": {...}}
    raw text   {"text": str, "meta": {...}}

Supported record formats (after ``field_map`` renaming):

==================  ==========================================================
alpaca              ``instruction``, optional ``input``, ``output`` (optional ``system``)
chat                ``messages``: a list of ``{role, content}``
sharegpt            ``conversations``: a list of ``{from, value}`` (or ``{role, content}``)
prompt_completion   ``prompt`` and ``completion``: strings or lists of messages
text                ``text``: raw text for continued pre-training
preference          ``chosen`` and ``rejected`` (+ optional ``prompt``): a preference pair
==================  ==========================================================

Preference pairs come as TRL writes them: ``prompt``/``chosen``/``rejected`` with strings
or message lists, or "chat pairs" (``chosen``/``rejected`` whole conversations sharing
every turn but the last). Their canonical form is different from the supervised one::

    preference {"prompt": [{"role", "content"}, ...], "chosen": str, "rejected": str, "meta": {...}}

Supervised objectives refuse preference data and preference objectives refuse
supervised data (``kind`` in :func:`detect_format`), each saying what to give instead.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Callable

from tuneforge.errors import DataError

FORMATS = ("alpaca", "chat", "sharegpt", "prompt_completion", "text", "preference")
ROLES = ("system", "user", "assistant")
_SAME_ROLES = {r: r for r in ROLES}
# ShareGPT exports disagree on speaker names; these are the ones seen in the common dumps.
SHAREGPT_ROLES = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "bot": "assistant", "model": "assistant", "chatgpt": "assistant",
    "system": "system",
}
PREFERENCE_ERROR = (
    "preference data (rows with chosen/rejected) trains with `training.objective: dpo`, not sft; "
    "for supervised fine-tuning give alpaca, chat, sharegpt, prompt/completion or text rows"
)
SUPERVISED_ERROR = (
    "holds supervised {fmt} rows, but training.objective {objective!r} learns from preference pairs: "
    "give rows with prompt/chosen/rejected (strings or message lists) or chosen/rejected conversations "
    "sharing their first turns, or use `training.objective: sft`"
)


class RowError(DataError):
    """One row cannot be converted. ``reason`` is the drop reason counted when bad rows are skipped."""

    def __init__(self, message: str, reason: str = "malformed"):
        super().__init__(message)
        self.reason = reason


def detect_row_format(row: dict) -> str | None:
    """The format a single row's fields point to, ``"preference"``, or None when nothing fits."""
    keys = set(row)
    if {"chosen", "rejected"} <= keys:
        return "preference"
    if "messages" in keys:
        return "chat"
    if "conversations" in keys:
        return "sharegpt"
    if "instruction" in keys:
        return "alpaca"
    if "prompt" in keys or "completion" in keys:
        return "prompt_completion"
    if "text" in keys:
        return "text"
    return None


def detect_format(rows: list[dict], path: str, *, objective: str = "sft") -> str:
    """Detect a source's format by majority vote over its rows' fields.

    A vote, rather than the first row, keeps one odd row from deciding the
    format; the odd rows then fail validation with their line number.

    Args:
        rows: The source's records (fields already renamed).
        path: The source, for error messages.
        objective: ``"sft"`` (supervised) refuses preference data; any other objective
            (``"dpo"``) learns from pairs and refuses supervised data.

    Raises:
        DataError: data of the other kind than ``objective`` needs, or fields that fit no format.
    """
    return format_by_vote(Counter(detect_row_format(row) for row in rows), {k for row in rows[:20] for k in row}, path,
                          objective=objective)


def format_by_vote(votes: Counter, first_fields: set[str], path: str, *, objective: str = "sft") -> str:
    """:func:`detect_format` from the votes of every row (counted while streaming a source).

    Args:
        votes: ``detect_row_format`` of each row.
        first_fields: The fields of the first 20 rows (named in the error when no format fits).
    """
    votes = Counter(votes)
    votes.pop(None, None)
    if not votes:
        fields = sorted(first_fields)
        raise DataError(
            f"{path}: cannot detect the data format from the fields {fields}; expected one of "
            "alpaca (instruction/input/output), chat (messages), sharegpt (conversations), "
            "prompt_completion (prompt/completion) or text (text). Set `format:` on the source "
            "or rename fields with `field_map:`"
        )
    fmt = votes.most_common(1)[0][0]
    check_kind(fmt, objective, path)
    return fmt


def check_kind(fmt: str, objective: str, path: str) -> None:
    """Refuse a format the objective cannot learn from (pairs for sft, single answers for dpo).

    Raises:
        DataError: naming the source, what it holds and what to give instead.
    """
    if objective == "sft" and fmt == "preference":
        raise DataError(f"{path}: {PREFERENCE_ERROR}")
    if objective != "sft" and fmt != "preference":
        raise DataError(f"{path}: " + SUPERVISED_ERROR.format(fmt=fmt, objective=objective))


def to_canonical(row: dict, fmt: str, where: str) -> dict:
    """Convert one row (fields already renamed) to a canonical example without ``meta``.

    Args:
        row: The record.
        fmt: One of :data:`FORMATS`.
        where: ``file:line`` (or ``file: record N``), used in error messages.

    Raises:
        RowError: a field is missing or has the wrong type, a role is unknown, or the
            conversation has no assistant turn (reason ``no_assistant_turn``).
        DataError: ``fmt`` is not a known format.

    Example:
        >>> to_canonical({"instruction": "Hi", "input": "", "output": "Hello"}, "alpaca", "f.jsonl:1")
        {'messages': [{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello'}]}
    """
    if fmt != "preference" and {"chosen", "rejected"} <= set(row):
        raise DataError(f"{where}: {PREFERENCE_ERROR}")
    try:
        convert = _CONVERTERS[fmt]
    except KeyError:
        raise DataError(f"{where}: unknown data format {fmt!r}; expected one of {', '.join(FORMATS)}") from None
    return convert(row, where)


def with_system_prompt(example: dict, system_prompt: str | None) -> dict:
    """Prepend ``system_prompt`` as a system message when a chat example (or a pair's prompt) has none."""
    key = "messages" if "messages" in example else "prompt"
    messages = example.get(key)
    if not system_prompt or not isinstance(messages, list) or any(m["role"] == "system" for m in messages):
        return example
    return {**example, key: [{"role": "system", "content": system_prompt}, *messages]}


# --------------------------------------------------------------------------- converters


def _alpaca(row: dict, where: str) -> dict:
    instruction = _field(row, "instruction", str, "alpaca", where)
    output = _field(row, "output", str, "alpaca", where)
    extra = _optional(row, "input", where)
    system = _optional(row, "system", where)
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    messages = [{"role": "system", "content": system}] if system.strip() else []
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    return {"messages": messages}


def _chat(row: dict, where: str) -> dict:
    turns = _field(row, "messages", list, "chat", where)
    return {"messages": _messages(turns, "messages", "role", "content", _SAME_ROLES, where)}


def _sharegpt(row: dict, where: str) -> dict:
    turns = _field(row, "conversations", list, "sharegpt", where)
    # Some exports use role/content inside `conversations`; accept both spellings.
    role_key, content_key = ("role", "content") if turns and isinstance(turns[0], dict) and "role" in turns[0] else ("from", "value")
    return {"messages": _messages(turns, "conversations", role_key, content_key, SHAREGPT_ROLES, where)}


def _prompt_completion(row: dict, where: str) -> dict:
    prompt = _field(row, "prompt", (str, list), "prompt_completion", where)
    completion = _field(row, "completion", (str, list), "prompt_completion", where)
    # TRL's "conversational" prompt/completion holds message lists instead of strings.
    prompt_turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    completion_turns = [{"role": "assistant", "content": completion}] if isinstance(completion, str) else completion
    messages = _messages(prompt_turns, "prompt", "role", "content", _SAME_ROLES, where, check=False)
    messages += _messages(completion_turns, "completion", "role", "content", _SAME_ROLES, where, check=False)
    _check_turn_order(messages, "prompt", where)
    return {"messages": messages}


def _text(row: dict, where: str) -> dict:
    return {"text": _field(row, "text", str, "text", where)}


def _preference(row: dict, where: str) -> dict:
    chosen = _field(row, "chosen", (str, list), "preference", where)
    rejected = _field(row, "rejected", (str, list), "preference", where)
    if row.get("prompt") is not None:
        prompt = _field(row, "prompt", (str, list), "preference", where)
        turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        messages = _messages(turns, "prompt", "role", "content", _SAME_ROLES, where, check=False)
        answers = [_answer(side, name, where) for side, name in ((chosen, "chosen"), (rejected, "rejected"))]
    else:  # a chat pair: two whole conversations that differ only in the last (assistant) turn
        sides = []
        for side, name in ((chosen, "chosen"), (rejected, "rejected")):
            if isinstance(side, str):
                raise RowError(f"{where}: field '{name}' is a string but the row has no 'prompt'; give a prompt "
                               "or whole conversations (message lists) on both sides")
            sides.append(_messages(side, name, "role", "content", _SAME_ROLES, where, check=False))
        for turns, name in zip(sides, ("chosen", "rejected")):
            if turns[-1]["role"] != "assistant":
                raise RowError(f"{where}: {name}[{len(turns) - 1}] must be the assistant's answer, got '{turns[-1]['role']}'")
        (*messages, last_chosen), (*other, last_rejected) = sides
        if messages != other:
            i = next((i for i, (a, b) in enumerate(zip(messages, other)) if a != b), min(len(messages), len(other)))
            raise RowError(
                f"{where}: chosen and rejected must share every turn but the last; they differ at "
                f"chosen[{i}] / rejected[{i}]", "prompt_mismatch",
            )
        answers = [last_chosen["content"], last_rejected["content"]]
    if not messages:
        raise RowError(f"{where}: the pair has no prompt (no turn before the answers)")
    first = next((m for m in messages if m["role"] != "system"), None)
    if first is None or first["role"] != "user" or messages[-1]["role"] != "user":
        raise RowError(f"{where}: the prompt must open and end with a user turn (after any system message)")
    return {"prompt": messages, "chosen": answers[0], "rejected": answers[1]}


def _answer(side: str | list, name: str, where: str) -> str:
    """One side of a pair that has a separate prompt: a string, or one assistant message (TRL's form)."""
    if isinstance(side, str):
        return side
    turns = _messages(side, name, "role", "content", _SAME_ROLES, where, check=False)
    if len(turns) != 1 or turns[0]["role"] != "assistant":
        raise RowError(f"{where}: field '{name}' must be one assistant message when the row has a 'prompt' "
                       f"(got {len(turns)} turns, the first '{turns[0]['role']}')")
    return turns[0]["content"]


_CONVERTERS: dict[str, Callable[[dict, str], dict]] = {
    "alpaca": _alpaca, "chat": _chat, "sharegpt": _sharegpt, "prompt_completion": _prompt_completion, "text": _text,
    "preference": _preference,
}


# --------------------------------------------------------------------------- validation


def _type_name(types: type | tuple[type, ...]) -> str:
    names = {str: "a string", list: "a list", dict: "an object"}
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join(names.get(t, t.__name__) for t in types)


def _field(row: dict, name: str, types: type | tuple[type, ...], fmt: str, where: str) -> Any:
    value = row.get(name)
    if value is None:
        raise RowError(f"{where}: field '{name}' is missing ({fmt} format)")
    if isinstance(value, str) and list in (types if isinstance(types, tuple) else (types,)) and value.lstrip().startswith("["):
        value = _json_list(value, name, where)  # CSV cells hold lists as JSON text
    if not isinstance(value, types):
        raise RowError(f"{where}: field '{name}' must be {_type_name(types)}, got {type(value).__name__}")
    return value


def _optional(row: dict, name: str, where: str) -> str:
    value = row.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RowError(f"{where}: field '{name}' must be a string, got {type(value).__name__}")
    return value


def _json_list(text: str, name: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RowError(f"{where}: field '{name}' is not a valid JSON list: {exc.msg}") from None


def _messages(
    turns: list, field: str, role_key: str, content_key: str, role_map: dict[str, str], where: str, *, check: bool = True
) -> list[dict]:
    """Validate a list of turns and map their roles to system/user/assistant."""
    if not turns:
        raise RowError(f"{where}: field '{field}' is an empty list")
    out = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise RowError(f"{where}: {field}[{i}] must be an object, got {type(turn).__name__}")
        role, content = turn.get(role_key), turn.get(content_key)
        if role is None:
            raise RowError(f"{where}: {field}[{i}].{role_key} is missing")
        if not isinstance(role, str) or role.lower() not in role_map:
            raise RowError(f"{where}: {field}[{i}].{role_key} is {role!r}; expected one of {', '.join(role_map)}")
        if content is None:
            raise RowError(f"{where}: {field}[{i}].{content_key} is missing")
        if not isinstance(content, str):
            raise RowError(f"{where}: {field}[{i}].{content_key} must be a string, got {type(content).__name__}")
        out.append({"role": role_map[role.lower()], "content": content})
    if check:
        _check_turn_order(out, field, where)
    return out


def _check_turn_order(messages: list[dict], field: str, where: str) -> None:
    """A conversation opens with a user turn (after any system message) and has an assistant turn."""
    first = next((i for i, m in enumerate(messages) if m["role"] != "system"), None)
    if first is not None and messages[first]["role"] != "user":
        raise RowError(
            f"{where}: {field}[{first}] is the first turn after the system message and must be the user's, "
            f"got '{messages[first]['role']}'"
        )
    if not any(m["role"] == "assistant" for m in messages):
        raise RowError(f"{where}: the conversation in '{field}' has no assistant turn to learn from", "no_assistant_turn")
