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
unpaired            ``prompt``, ``completion`` and ``label: true|false``: one judged answer (KTO)
prompt_only         ``prompt`` (+ optional ``reference``): a prompt to answer online (GRPO)
==================  ==========================================================

Preference pairs come as TRL writes them: ``prompt``/``chosen``/``rejected`` with strings
or message lists, or "chat pairs" (``chosen``/``rejected`` whole conversations sharing
every turn but the last). Their canonical form is different from the supervised one::

    preference {"prompt": [{"role", "content"}, ...], "chosen": str, "rejected": str, "meta": {...}}

Unpaired and prompt-only rows have their own canonical forms::

    unpaired    {"prompt": [messages], "completion": str, "label": bool, "meta": {...}}
    prompt_only {"prompt": [messages], "reference": str | None, "meta": {...}}

Each objective accepts the formats of :data:`ACCEPTS` and refuses the others, saying what to
give instead (:func:`check_kind`). KTO also takes pairs (each becomes a desirable and an
undesirable answer when it trains); GRPO also takes supervised rows with an answer (the last
answer becomes the ``reference`` its rewards compare against).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Callable

from tuneforge.errors import DataError

FORMATS = ("alpaca", "chat", "sharegpt", "prompt_completion", "text", "preference", "unpaired", "prompt_only")
SUPERVISED = ("alpaca", "chat", "sharegpt", "prompt_completion", "text")
ANSWERED = ("alpaca", "chat", "sharegpt", "prompt_completion")
# Which record formats each objective learns from; check_kind refuses the others by name.
ACCEPTS: dict[str, tuple[str, ...]] = {
    "sft": SUPERVISED,
    "distill": SUPERVISED,  # the student trains on the same examples (sequence mode: the teacher answers their prompts)
    "dpo": ("preference",),
    "orpo": ("preference",),
    "kto": ("unpaired", "preference"),
    "grpo": ("prompt_only", *ANSWERED),
}
# What to give instead, per objective, for the error that refuses a format.
WANTS = {
    "dpo": "rows with prompt/chosen/rejected (strings or message lists) or chosen/rejected conversations sharing their first turns",
    "kto": "rows with prompt/completion/label (label true or false), or prompt/chosen/rejected pairs",
    "grpo": "rows with a prompt (and an optional reference), or supervised rows whose answer becomes the reference",
}
WANTS["orpo"] = WANTS["dpo"]
ROLES = ("system", "user", "assistant")
_SAME_ROLES = {r: r for r in ROLES}
# ShareGPT exports disagree on speaker names; these are the ones seen in the common dumps.
SHAREGPT_ROLES = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "bot": "assistant", "model": "assistant", "chatgpt": "assistant",
    "system": "system",
}
PREFERENCE_ERROR = (
    "preference data (rows with chosen/rejected) trains with `training.objective: dpo`, not sft or distill; "
    "for supervised fine-tuning give alpaca, chat, sharegpt, prompt/completion or text rows"
)
SUPERVISED_ERROR = "holds {kind} rows, but training.objective {objective!r} learns from {learns}: give {wants}"
LEARNS = {"dpo": "preference pairs", "orpo": "preference pairs", "kto": "judged answers (or pairs)",
          "grpo": "prompts (with a reference for verifiable rewards)"}


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
    # A boolean label marks a judged answer (KTO); any other label (a class name) is a supervised row's metadata.
    if {"prompt", "completion", "label"} <= keys and str(row["label"]).strip().lower() in _LABELS:
        return "unpaired"
    if "prompt" in keys and "completion" not in keys:
        return "prompt_only"
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
    """Refuse a format the objective cannot learn from (:data:`ACCEPTS`: pairs for sft, single answers for dpo, ...).

    Raises:
        DataError: naming the source, what it holds and what to give instead.
    """
    accepted = ACCEPTS.get(objective, ACCEPTS["dpo"])
    if fmt in accepted:
        return
    supervised = accepted == SUPERVISED  # sft, and distill (its student trains on the same examples)
    if supervised and fmt == "preference":
        raise DataError(f"{path}: {PREFERENCE_ERROR}")
    if supervised:
        # A yes/no `label` column of supervised rows also reads as a KTO judgement: say how to override.
        hint = " (if 'label' is not a judgement of the completion, set `format: prompt_completion` on the source)"
        raise DataError(f"{path}: holds {fmt} rows, which supervised fine-tuning cannot learn from: give alpaca, chat, "
                        f"sharegpt, prompt/completion or text rows, or use `training.objective: "
                        f"{'kto' if fmt == 'unpaired' else 'grpo'}`" + hint * (fmt == "unpaired"))
    kind = f"supervised {fmt}" if fmt in SUPERVISED else fmt
    raise DataError(f"{path}: " + SUPERVISED_ERROR.format(
        kind=kind, objective=objective, learns=LEARNS.get(objective, LEARNS["dpo"]), wants=WANTS.get(objective, WANTS["dpo"]))
                    + ", or use `training.objective: sft`" * (fmt in SUPERVISED))


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
    if fmt in SUPERVISED and {"chosen", "rejected"} <= set(row):
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


def _prompt_turns(row: dict, fmt: str, where: str) -> list[dict]:
    """A ``prompt`` field (a string or message list) as turns that open and end with the user (after any system)."""
    prompt = _field(row, "prompt", (str, list), fmt, where)
    turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    messages = _messages(turns, "prompt", "role", "content", _SAME_ROLES, where, check=False)
    first = next((m for m in messages if m["role"] != "system"), None)
    if first is None or first["role"] != "user" or messages[-1]["role"] != "user":
        raise RowError(f"{where}: field 'prompt' must open and end with a user turn (after any system message)")
    return messages


# Spellings of a label a CSV cell or a hand-written file may use; anything else is refused, never guessed.
_LABELS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def _unpaired(row: dict, where: str) -> dict:
    prompt = _prompt_turns(row, "unpaired", where)
    completion = _answer(_field(row, "completion", (str, list), "unpaired", where), "completion", where)
    label = row.get("label")
    if isinstance(label, (str, int)) and not isinstance(label, bool) and str(label).strip().lower() in _LABELS:
        label = _LABELS[str(label).strip().lower()]  # CSV cells and 0/1 columns
    if not isinstance(label, bool):
        got = "missing" if label is None else f"{label!r} ({type(label).__name__})"
        raise RowError(f"{where}: field 'label' must be true (a desirable answer) or false (an undesirable one), got {got}")
    return {"prompt": prompt, "completion": completion, "label": label}


def _prompt_only(row: dict, where: str) -> dict:
    prompt = _prompt_turns(row, "prompt_only", where)
    reference = row.get("reference")
    if isinstance(reference, (dict, list)):  # a JSON answer: rewards parse it back (json_field_match)
        reference = json.dumps(reference, ensure_ascii=False)
    if reference is not None and not isinstance(reference, str):
        raise RowError(f"{where}: field 'reference' must be a string or a JSON object, got {type(reference).__name__}")
    return {"prompt": prompt, "reference": reference}


_CONVERTERS: dict[str, Callable[[dict, str], dict]] = {
    "alpaca": _alpaca, "chat": _chat, "sharegpt": _sharegpt, "prompt_completion": _prompt_completion, "text": _text,
    "preference": _preference, "unpaired": _unpaired, "prompt_only": _prompt_only,
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
