"""Preference pairs: detection, canonical form, pair drops, splits, and clear errors for bad rows."""

from __future__ import annotations

import pytest

from tuneforge.config.schema import CleanConfig, DataConfig
from tuneforge.data.formats import RowError, detect_format, to_canonical
from tuneforge.data.load import load_examples
from tuneforge.data.pairs import clean_pair, side
from tuneforge.data.preferences import prepare_pairs
from tuneforge.errors import DataError

W = "p.jsonl:3"
U = lambda text: {"role": "user", "content": text}  # noqa: E731
A = lambda text: {"role": "assistant", "content": text}  # noqa: E731


def pairs(n: int, start: int = 0) -> list[dict]:
    return [{"prompt": f"Ticket {i}: my card was charged twice", "chosen": "billing", "rejected": f"It is about {i}."}
            for i in range(start, start + n)]


def run(tokenizer, max_seq_length=256, **data):
    return prepare_pairs(DataConfig(**data), tokenizer, max_seq_length=max_seq_length, seed=0, objective="dpo")


@pytest.mark.parametrize(
    "row",
    [
        {"prompt": "q", "chosen": "a", "rejected": "b"},
        {"prompt": [U("q")], "chosen": [A("a")], "rejected": [A("b")]},
        {"chosen": [U("q"), A("a")], "rejected": [U("q"), A("b")]},
    ],
    ids=["strings", "trl-conversational", "chat-pairs"],
)
def test_every_preference_shape_has_one_canonical_form(row):
    assert detect_format([row], "p.jsonl", objective="dpo") == "preference"
    assert to_canonical(row, "preference", W) == {"prompt": [U("q")], "chosen": "a", "rejected": "b"}


@pytest.mark.parametrize(
    ("row", "message", "reason"),
    [
        ({"prompt": "q", "chosen": "a"}, r"p\.jsonl:3: field 'rejected' is missing \(preference format\)", "malformed"),
        ({"prompt": "q", "chosen": 3, "rejected": "b"}, r"p\.jsonl:3: field 'chosen' must be a string or a list, got int", "malformed"),
        ({"chosen": [U("q"), A("a")], "rejected": [U("other q"), A("b")]},
         r"p\.jsonl:3: chosen and rejected must share every turn but the last; they differ at chosen\[0\] / rejected\[0\]",
         "prompt_mismatch"),
        ({"chosen": "a", "rejected": "b"}, r"p\.jsonl:3: field 'chosen' is a string but the row has no 'prompt'", "malformed"),
        ({"chosen": [U("q"), A("a")], "rejected": [U("q"), U("b")]}, r"p\.jsonl:3: rejected\[1\] must be the assistant's answer", "malformed"),
        ({"prompt": [U("q")], "chosen": [A("a"), A("c")], "rejected": [A("b")]},
         r"p\.jsonl:3: field 'chosen' must be one assistant message when the row has a 'prompt'", "malformed"),
        ({"prompt": [A("q")], "chosen": "a", "rejected": "b"}, r"p\.jsonl:3: the prompt must open and end with a user turn", "malformed"),
        ({"prompt": [U("q"), {"role": "robot", "content": "x"}], "chosen": "a", "rejected": "b"},
         r"p\.jsonl:3: prompt\[1\]\.role is 'robot'", "malformed"),
    ],
)
def test_bad_pairs_name_file_line_and_field(row, message, reason):
    with pytest.raises(RowError, match=message) as info:
        to_canonical(row, "preference", W)
    assert info.value.reason == reason


def test_pair_drops_have_reasons():
    p = {"prompt": [U("q")], "chosen": "  billing ", "rejected": "billing"}
    assert clean_pair(p, CleanConfig()).reason == "identical_sides"  # equal once whitespace is normalised
    assert clean_pair({**p, "rejected": "  "}, CleanConfig()).reason == "empty_side"
    assert clean_pair({**p, "prompt": [U(" ")], "rejected": "x"}, CleanConfig()).reason == "empty"
    kept = clean_pair({"prompt": [U("mail ann@x.org")], "chosen": "a", "rejected": "b"}, CleanConfig(redact_pii=True))
    assert kept.example["prompt"][0]["content"] == "mail [EMAIL]" and kept.redactions == {"email": 1}
    assert side(kept.example, "rejected")["messages"][-1] == A("b")


def test_sft_refuses_pairs_and_dpo_refuses_supervised_rows(write_jsonl, alpaca_rows):
    pref = write_jsonl("p.jsonl", pairs(3))
    with pytest.raises(DataError, match=rf"{pref}: preference data .* trains with `training.objective: dpo`, not sft"):
        load_examples(str(pref))
    sup = write_jsonl("a.jsonl", alpaca_rows(3))
    with pytest.raises(DataError, match=rf"{sup}: holds supervised alpaca rows, but training.objective 'dpo' learns from preference pairs"):
        load_examples(str(sup), objective="dpo")
    # a forced format is checked the same way
    from tuneforge.config.schema import DatasetSource

    with pytest.raises(DataError, match="preference data"):
        load_examples(DatasetSource(path=str(pref), format="preference"))


def test_prepare_counts_every_drop_and_splits_without_leaks(write_jsonl, tiny_tokenizer):
    rows = pairs(40) + [
        {"prompt": "q1", "chosen": "same", "rejected": "same"},
        {"prompt": "q2", "chosen": "", "rejected": "b"},
        {"chosen": [U("q3"), A("a")], "rejected": [U("q4"), A("b")]},
        {"prompt": "q5 " + "word " * 400, "chosen": "a", "rejected": "b"},
        pairs(1)[0],  # duplicate of the first pair
    ]
    path = write_jsonl("p.jsonl", rows)
    with pytest.raises(DataError, match=rf"{path}:43: chosen and rejected must share every turn but the last"):
        run(tiny_tokenizer, train=[str(path)])
    data = run(tiny_tokenizer, train=[str(path)], on_bad_rows="skip", split={"validation": 0.1, "test": 0.1})
    stats = data.report.sources[str(path)]
    drops = {reason: d.count for reason, d in stats.drops.items()}
    assert drops == {"prompt_mismatch": 1, "identical_sides": 1, "empty_side": 1, "too_long": 1, "duplicate": 1}
    assert stats.rows_read == stats.rows_kept + stats.dropped == 45
    assert data.report.splits == {"train": 32, "validation": 4, "test": 4}
    assert data.report.format == "preference"
    keys = lambda ps: {p["prompt"][-1]["content"] for p in ps}  # noqa: E731
    assert not keys(data.train) & keys(data.test) and not keys(data.validation) & keys(data.test)
    assert data.test_examples[0]["messages"][-1] == A("billing")


def test_no_pairs_left_is_a_clear_error(write_jsonl, tiny_tokenizer):
    path = write_jsonl("p.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "a"}] * 2)
    with pytest.raises(DataError, match=r"no training pairs left after cleaning \(2 read, 2 dropped"):
        run(tiny_tokenizer, train=[str(path)])


def test_system_prompt_is_prepended_to_pair_prompts(write_jsonl, tiny_tokenizer):
    path = write_jsonl("p.jsonl", pairs(10))
    data = run(tiny_tokenizer, train=[str(path)], system_prompt="Answer with the queue.", split={"validation": 0, "test": 0})
    assert all(p["prompt"][0] == {"role": "system", "content": "Answer with the queue."} for p in data.train)


def test_the_bundled_ticket_pairs_are_current_and_load_clean(tiny_tokenizer):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).parents[2] / "examples" / "data" / "make_preferences.py"
    spec = importlib.util.spec_from_file_location("make_preferences", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--check"]) == 0  # the checked-in file is what the script writes
    data = run(tiny_tokenizer, max_seq_length=512, train=[str(module.OUT)])
    assert data.report.dropped == 0 and sum(data.report.splits.values()) == 1200
    assert all(p["chosen"] in module.LABELS and p["rejected"] != p["chosen"] for p in data.train)
