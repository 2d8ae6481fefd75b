"""Cleaning: pure functions from a canonical example to ``Kept`` or ``Dropped(reason)``.

Steps (each switchable in :class:`~tuneforge.config.schema.CleanConfig`):
unicode normalisation, whitespace normalisation, PII redaction and dropping of
empty rows. Duplicate detection is a key function (:func:`dedupe_key`); the
caller keeps the set of seen keys, across every source and split. Too-long
rows are handled where the tokens are known (:mod:`tuneforge.data.template`), after
:func:`check_length` has dropped those too long in characters to be worth tokenizing.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from tuneforge.config.schema import CleanConfig


@dataclass(frozen=True)
class Kept:
    """A cleaned example, with how many PII spans of each kind were redacted in it."""

    example: dict
    redactions: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Dropped:
    """A row left out, and why. ``reason`` is the key counted in the data report."""

    reason: str
    detail: str = ""


# --------------------------------------------------------------------------- text


# Unicode category Cc is exactly U+0000-001F and U+007F-009F; newline and tab are kept.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def normalize_unicode(text: str) -> str:
    """NFC-normalise, turn CR/CRLF into LF and remove control characters other than newline and tab."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    return _CONTROL.sub("", text)


_INNER_SPACE = re.compile(r"[ \t]+")
_MANY_NEWLINES = re.compile(r"\n{3,}")
_SPACE_BEFORE_NEWLINE = re.compile(r"[^\S\n]\n")  # whitespace (as str.rstrip sees it) at the end of a line


def normalize_whitespace(text: str) -> str:
    """Collapse runs of spaces/tabs inside lines, trim line ends, allow at most one blank line, trim.

    A line's leading indentation is kept as it is, because code and nested
    lists mean something by it.

    Example:
        >>> normalize_whitespace("  a   b \\n\\n\\n\\n    def f():  \\n        return 1  ")
        'a b\\n\\n    def f():\\n        return 1'
    """
    if ("\t" not in text and "  " not in text and "\n\n\n" not in text and text == text.strip()
            and not _SPACE_BEFORE_NEWLINE.search(text)):
        return text  # nothing to change (most rows): checked in C, instead of line by line below
    lines = []
    for line in text.split("\n"):
        body = line.lstrip(" \t")
        indent = line[: len(line) - len(body)]
        body = _INNER_SPACE.sub(" ", body).rstrip()
        lines.append(indent + body if body else "")
    return _MANY_NEWLINES.sub("\n\n", "\n".join(lines)).strip()


# --------------------------------------------------------------------------- PII

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# 13-19 digits, optionally grouped by spaces or dashes, not glued to other digits or letters.
_CARD = re.compile(r"(?<![\w+-])\d(?:[ -]?\d){12,18}(?![\w]|-\d)")
# Candidate phone shapes; _is_phone decides, so ordinary numbers (order ids, years, dates) survive.
_PHONE = re.compile(
    r"(?<![\w+\-./])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){0,4}(?![\w]|[-.:/]\d)"
)
_DATE = re.compile(r"^(?:19|20)\d\d[-./]\d{1,2}[-./]\d{1,2}")
_IP = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
PII_PLACEHOLDERS = {"email": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD]"}


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _is_card(candidate: str) -> bool:
    digits = re.sub(r"\D", "", candidate)
    # Issuer prefixes start with 2-6 (Mastercard, Amex/Diners/JCB, Visa, Mastercard, Discover);
    # requiring one halves the long ids that pass Luhn by chance.
    return 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn_valid(digits)


def _is_phone(candidate: str) -> bool:
    digits = sum(ch.isdigit() for ch in candidate)
    if candidate.startswith("+"):
        return 8 <= digits <= 15
    if "(" in candidate:
        return 9 <= digits <= 15
    separators = len(re.findall(r"\d[ .-]+(?=\d)", candidate))
    # A bare digit run is an id, not a phone number; dates and IP addresses have separators too.
    return 10 <= digits <= 15 and separators >= 2 and not _DATE.match(candidate) and not _IP.match(candidate)


def redact_pii(text: str, types: Iterable[str] = ("email", "phone", "card")) -> tuple[str, Counter]:
    """Replace emails, card numbers and phone numbers with ``[EMAIL]``, ``[CARD]``, ``[PHONE]``.

    Regex + checksum rules, written here because no installed library does this
    (presidio and scrubadub pull large models). Cards must pass the Luhn check;
    phones need a ``+`` prefix, an area code in parentheses or two separators,
    so order ids, years and dates are left alone.

    Returns:
        The redacted text and a Counter of replacements by kind.

    Example:
        >>> redact_pii("mail ann@x.org or call +1 555 123 4567, order 20240117")[0]
        'mail [EMAIL] or call [PHONE], order 20240117'
    """
    counts: Counter = Counter()
    rules = (("email", _EMAIL, None), ("card", _CARD, _is_card), ("phone", _PHONE, _is_phone))
    for kind, pattern, accept in rules:
        if kind not in types or (kind == "email" and "@" not in text):
            continue

        def replace(m: re.Match, kind: str = kind, accept=accept) -> str:
            if accept is not None and not accept(m.group()):
                return m.group()
            counts[kind] += 1
            return PII_PLACEHOLDERS[kind]

        text = pattern.sub(replace, text)
    return text, counts


# --------------------------------------------------------------------------- examples


def texts(example: dict) -> list[str]:
    """Every text of an example: the raw text, or each message's content."""
    return [example["text"]] if "text" in example else [m["content"] for m in example["messages"]]


def clean_example(example: dict, cfg: CleanConfig) -> Kept | Dropped:
    """Clean one canonical example (a new dict; the input is not changed).

    Returns:
        :class:`Kept` with the cleaned example, or :class:`Dropped` with reason ``"empty"``
        when ``cfg.drop_empty`` and the text, a user turn or an assistant turn is empty.

    Example:
        >>> clean_example({"text": "  hi  there "}, CleanConfig()).example
        {'text': 'hi there'}
    """
    redactions: Counter = Counter()

    def fix(text: str) -> str:
        if cfg.normalize_unicode:
            text = normalize_unicode(text)
        if cfg.strip_whitespace:
            text = normalize_whitespace(text)
        if cfg.redact_pii:
            text, found = redact_pii(text, cfg.pii_types)
            redactions.update(found)
        return text

    if "text" in example:
        out = {**example, "text": fix(example["text"])}
        if cfg.drop_empty and not out["text"].strip():
            return Dropped("empty", "the text is empty")
        return Kept(out, dict(redactions))
    messages = [{**m, "content": fix(m["content"])} for m in example["messages"]]
    if cfg.drop_empty:
        for i, m in enumerate(messages):
            if m["role"] != "system" and not m["content"].strip():
                return Dropped("empty", f"the {m['role']} turn messages[{i}] is empty")
    return Kept({**example, "messages": messages}, dict(redactions))


# A token of any real tokenizer spans a few characters (about 4 for English BPE, 1-2 for CJK or
# digits); 32 is far above that, so a row longer than max_seq_length * 32 characters cannot fit
# max_seq_length tokens. Checking characters first spares tokenizing (and cleaning) a
# multi-megabyte row only to drop it: one 50 MB row took 84 s and 12.5 GB to tokenize.
CHARS_PER_TOKEN_BOUND = 32


def check_length(example: dict, max_seq_length: int) -> Dropped | None:
    """``Dropped("too_long")`` when an example has more characters than ``max_seq_length`` tokens can hold.

    Applies with ``clean.too_long: truncate`` too: such a row would lose more than 31/32 of
    its text, and truncating it would still mean tokenizing all of it.

    Example:
        >>> check_length({"text": "x" * 5000}, max_seq_length=128).reason
        'too_long'
    """
    limit = max_seq_length * CHARS_PER_TOKEN_BOUND
    chars = sum(len(t) for t in texts(example))
    if chars <= limit:
        return None
    return Dropped(
        "too_long",
        f"{chars} characters > {limit} (max_seq_length {max_seq_length} x {CHARS_PER_TOKEN_BOUND}); not tokenized",
    )


def dedupe_key(example: dict, mode: str) -> str | None:
    """A hash that equal examples share: ``exact`` text, or ``normalized`` (case and whitespace folded).

    Returns None for mode ``none``. Roles are part of the key, ``meta`` is not.
    """
    if mode == "none":
        return None
    if "text" in example:
        parts: list = [example["text"]]
    else:
        parts = [[m["role"], m["content"]] for m in example["messages"]]
    if mode == "normalized":
        fold = lambda s: " ".join(s.casefold().split())  # noqa: E731
        parts = [fold(p) if isinstance(p, str) else [p[0], fold(p[1])] for p in parts]
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()
