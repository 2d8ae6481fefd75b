"""Cleaning: unicode, whitespace, PII redaction (positives and negatives), empty rows, dedupe keys."""

from __future__ import annotations

import pytest

from tuneforge.config.schema import CleanConfig
from tuneforge.data.clean import (
    Dropped,
    Kept,
    clean_example,
    dedupe_key,
    luhn_valid,
    normalize_unicode,
    normalize_whitespace,
    redact_pii,
)


def chat(user: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}], "meta": {"line": 1}}


def test_normalize_unicode_nfc_newlines_and_control_chars():
    assert normalize_unicode("cafe\u0301") == "caf\u00e9"
    assert normalize_unicode("a\r\nb\rc") == "a\nb\nc"
    assert normalize_unicode("ok\x00\x07\x1b[0m\tdone\n") == "ok[0m\tdone\n"
    assert normalize_unicode("emoji 👩\u200d💻 stays") == "emoji 👩\u200d💻 stays"


def test_normalize_whitespace_keeps_indentation_and_limits_blank_lines():
    text = "  Here   is\tcode:  \n\n\n\n```python\ndef f(x):\n    if x:   # note\n        return  1\n```\n  "
    assert normalize_whitespace(text) == "Here is code:\n\n```python\ndef f(x):\n    if x: # note\n        return 1\n```"
    assert normalize_whitespace("a\n \t \nb") == "a\n\nb"


def test_normalize_whitespace_on_random_text_follows_its_rules():
    """Text that needs nothing comes back at once (a check in C); either way the result follows the rules below."""
    import random
    import re

    def by_the_rules(text: str) -> str:
        lines = [(line[: len(line) - len(line.lstrip(" \t"))], line.lstrip(" \t")) for line in text.split("\n")]
        lines = [indent + re.sub(r"[ \t]+", " ", body).rstrip() if body.strip() else "" for indent, body in lines]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()

    rng = random.Random(0)
    alphabet = ["a", "b", " ", " ", "\t", "\n", "\u00a0", "\r", "\x0c", "é"]
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        assert normalize_whitespace(text) == by_the_rules(text), repr(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to jane.doe+tickets@example.co.uk today", "write to [EMAIL] today"),
        ("call +1 555 123 4567.", "call [PHONE]."),
        ("call (555) 123-4567 now", "call [PHONE] now"),
        ("call 555-123-4567 now", "call [PHONE] now"),
        ("call 555.123.4567", "call [PHONE]"),
        ("UK office +44 20 7946 0958", "UK office [PHONE]"),
        ("mobile +4915112345678", "mobile [PHONE]"),
        ("card 4111 1111 1111 1111 expires", "card [CARD] expires"),
        ("card 4111-1111-1111-1111", "card [CARD]"),
        ("card 5500005555555559.", "card [CARD]."),
        ("amex 3782 822463 10005", "amex [CARD]"),
    ],
)
def test_pii_positives(text, expected):
    assert redact_pii(text)[0] == expected


@pytest.mark.parametrize(
    "text",
    [
        "order number 1234567 shipped",
        "order #100234-88 shipped",
        "Order ORD-2024-000123 is late",
        "order id 5551234567 (ten bare digits)",
        "in 1999 and 2023 we grew",
        "invoice dated 2024-01-15 10:30",
        "card 4111 1111 1111 1112 (fails Luhn)",
        "number 4111111111111112",
        "tracking 1Z999AA10123456784",
        "server 192.168.10.10 is down",
        "price $1,234.56, version 1.2.3, zip 94103",
        "a 19-digit id 1234567890123456789",
    ],
)
def test_pii_negatives_survive(text):
    redacted, counts = redact_pii(text)
    assert redacted == text and not counts


def test_pii_counts_and_type_selection():
    text = "a@b.io, +1 555 123 4567, 4111 1111 1111 1111, c@d.org"
    redacted, counts = redact_pii(text)
    assert counts == {"email": 2, "phone": 1, "card": 1}
    assert redacted == "[EMAIL], [PHONE], [CARD], [EMAIL]"
    only_email, counts = redact_pii(text, ["email"])
    assert only_email == "[EMAIL], +1 555 123 4567, 4111 1111 1111 1111, [EMAIL]" and counts == {"email": 2}


def test_luhn():
    assert luhn_valid("4111111111111111") and luhn_valid("79927398713")
    assert not luhn_valid("4111111111111112") and not luhn_valid("79927398710")


def test_clean_example_cleans_every_turn_without_mutating():
    ex = chat("  Hello\u00a0  world  ", "Fine  thanks\n\n\n\nbye")
    result = clean_example(ex, CleanConfig())
    assert isinstance(result, Kept)
    assert [m["content"] for m in result.example["messages"]] == ["Hello\u00a0 world", "Fine thanks\n\nbye"]
    assert result.example["meta"] == {"line": 1}
    assert ex["messages"][0]["content"] == "  Hello\u00a0  world  "


def test_clean_steps_can_be_switched_off():
    ex = chat("a  b", "cafe\u0301  x")
    off = CleanConfig(normalize_unicode=False, strip_whitespace=False)
    assert clean_example(ex, off).example["messages"][1]["content"] == "cafe\u0301  x"


def test_pii_redaction_in_examples_is_counted():
    cfg = CleanConfig(redact_pii=True)
    result = clean_example(chat("I am bob@corp.com", "Call +1 555 123 4567 or bob@corp.com"), cfg)
    assert result.example["messages"][1]["content"] == "Call [PHONE] or [EMAIL]"
    assert result.redactions == {"email": 2, "phone": 1}
    assert clean_example(chat("bob@corp.com", "x"), CleanConfig()).example["messages"][0]["content"] == "bob@corp.com"


@pytest.mark.parametrize(
    ("example", "detail"),
    [
        (chat("question", "   "), "the assistant turn messages[1] is empty"),
        (chat("\n\t", "answer"), "the user turn messages[0] is empty"),
        ({"text": " \x00 "}, "the text is empty"),
    ],
)
def test_empty_rows_are_dropped(example, detail):
    result = clean_example(example, CleanConfig())
    assert result == Dropped("empty", detail)
    assert isinstance(clean_example(example, CleanConfig(drop_empty=False)), Kept)


def test_empty_system_message_alone_is_not_a_drop():
    ex = {"messages": [{"role": "system", "content": ""}, *chat("q", "a")["messages"]]}
    assert isinstance(clean_example(ex, CleanConfig()), Kept)


def test_dedupe_keys():
    a, b = chat("Hello  World", "Yes"), chat("hello world", "YES")
    assert dedupe_key(a, "exact") != dedupe_key(b, "exact")
    assert dedupe_key(a, "normalized") == dedupe_key(b, "normalized")
    assert dedupe_key(a, "exact") == dedupe_key({**a, "meta": {"line": 99}}, "exact")
    assert dedupe_key(a, "none") is None
    swapped = {"messages": [{"role": "assistant", "content": "Hello  World"}, {"role": "user", "content": "Yes"}]}
    assert dedupe_key(swapped, "exact") != dedupe_key(a, "exact")
    # Turn boundaries matter: moving text between turns is a different example.
    assert dedupe_key(chat("a b", "c"), "normalized") != dedupe_key(chat("a", "b c"), "normalized")
    assert dedupe_key({"text": "Doc  one"}, "normalized") == dedupe_key({"text": "doc one"}, "normalized")
