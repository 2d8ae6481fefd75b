"""KTO's unpaired rows and GRPO's prompts: detection, canonical form, drops, splits, and clear errors."""

from __future__ import annotations

import pytest

from tuneforge.config.schema import DataConfig
from tuneforge.data.formats import RowError, detect_format, detect_row_format, to_canonical
from tuneforge.data.load import load_examples
from tuneforge.data.preferences import prepare_pairs
from tuneforge.errors import DataError

W = "k.jsonl:3"
U = lambda text: {"role": "user", "content": text}  # noqa: E731
A = lambda text: {"role": "assistant", "content": text}  # noqa: E731


def run(tokenizer, objective, max_seq_length=256, **data):
    return prepare_pairs(DataConfig(**data), tokenizer, max_seq_length=max_seq_length, seed=0, objective=objective)


@pytest.mark.parametrize(
    "row",
    [
        {"prompt": "q", "completion": "a", "label": True},
        {"prompt": [U("q")], "completion": [A("a")], "label": "true"},
        {"prompt": "q", "completion": "a", "label": 1},
    ],
    ids=["strings", "messages", "number"],
)
def test_unpaired_rows_have_one_canonical_form(row):
    assert detect_format([row], "k.jsonl", objective="kto") == "unpaired"
    assert to_canonical(row, "unpaired", W) == {"prompt": [U("q")], "completion": "a", "label": True}


def test_label_that_names_a_class_is_a_supervised_row_not_a_kto_row():
    # A prompt/completion file with a class-name "label" column stays supervised data for sft.
    assert detect_row_format({"prompt": "q", "completion": "a", "label": "billing"}) == "prompt_completion"
    assert detect_row_format({"prompt": "q", "completion": "a", "label": False}) == "unpaired"
    assert detect_row_format({"prompt": "q"}) == "prompt_only"
    assert detect_row_format({"prompt": [U("q")], "reference": "a"}) == "prompt_only"


def test_prompt_rows_keep_an_optional_reference_and_json_references_as_text():
    assert to_canonical({"prompt": "q"}, "prompt_only", W) == {"prompt": [U("q")], "reference": None}
    assert to_canonical({"prompt": "q", "reference": {"queue": "billing"}}, "prompt_only", W)["reference"] == '{"queue": "billing"}'


@pytest.mark.parametrize(
    ("row", "fmt", "message"),
    [
        ({"prompt": "q", "completion": "a", "label": "maybe"}, "unpaired",
         r"k\.jsonl:3: field 'label' must be true \(a desirable answer\) or false \(an undesirable one\), got 'maybe'"),
        ({"prompt": "q", "completion": "a"}, "unpaired", r"k\.jsonl:3: field 'label' must be true .*, got missing"),
        ({"prompt": "q", "label": True}, "unpaired", r"k\.jsonl:3: field 'completion' is missing \(unpaired format\)"),
        ({"prompt": 5, "completion": "a", "label": True}, "unpaired", r"k\.jsonl:3: field 'prompt' must be a string or a list, got int"),
        ({"prompt": [A("q")], "completion": "a", "label": True}, "unpaired",
         r"k\.jsonl:3: field 'prompt' must open and end with a user turn"),
        ({"prompt": "q", "completion": [A("a"), A("b")], "label": True}, "unpaired",
         r"k\.jsonl:3: field 'completion' must be one assistant message"),
        ({"reference": "a"}, "prompt_only", r"k\.jsonl:3: field 'prompt' is missing \(prompt_only format\)"),
        ({"prompt": "q", "reference": 3}, "prompt_only", r"k\.jsonl:3: field 'reference' must be a string or a JSON object, got int"),
        ({"prompt": [U("q"), {"role": "robot", "content": "x"}]}, "prompt_only", r"k\.jsonl:3: prompt\[1\]\.role is 'robot'"),
    ],
)
def test_bad_rows_name_file_line_and_field(row, fmt, message):
    with pytest.raises(RowError, match=message):
        to_canonical(row, fmt, W)


def test_each_objective_refuses_the_data_it_cannot_learn_from(write_jsonl, alpaca_rows):
    kto = write_jsonl("k.jsonl", [{"prompt": "q", "completion": "a", "label": True}])
    prompts = write_jsonl("g.jsonl", [{"prompt": "q", "reference": "a"}])
    sup = write_jsonl("a.jsonl", alpaca_rows(2))
    with pytest.raises(DataError, match=rf"{kto}: holds unpaired rows, which supervised fine-tuning cannot .*`training.objective: kto` "
                                        r"\(if 'label' is not a judgement of the completion, set `format: prompt_completion`"):
        load_examples(str(kto))
    from tuneforge.config.schema import DatasetSource

    forced = load_examples(DatasetSource(path=str(kto), format="prompt_completion"))
    assert forced[0]["messages"][-1] == A("a")
    with pytest.raises(DataError, match=rf"{prompts}: holds prompt_only rows, .*`training.objective: grpo`"):
        load_examples(str(prompts))
    with pytest.raises(DataError, match=rf"{prompts}: holds prompt_only rows, but training.objective 'dpo' learns from preference pairs"):
        load_examples(str(prompts), objective="dpo")
    with pytest.raises(DataError, match=rf"{sup}: holds supervised alpaca rows, but training.objective 'kto' learns from judged answers"):
        load_examples(str(sup), objective="kto")
    with pytest.raises(DataError, match=rf"{kto}: holds unpaired rows, but training.objective 'orpo' learns from preference pairs"):
        load_examples(str(kto), objective="orpo")


def test_kto_prepare_counts_drops_and_takes_pairs_too(write_jsonl, tiny_tokenizer):
    rows = [{"prompt": f"Ticket {i}: charged twice", "completion": "billing", "label": i % 2 == 0} for i in range(30)]
    rows += [
        {"prompt": "q1", "completion": " ", "label": True},
        {"prompt": " ", "completion": "x", "label": False},
        {"prompt": "q3 " + "word " * 400, "completion": "a", "label": True},
        rows[0],
        '{"prompt": "q", "completion": "a", "label": "perhaps"}',
    ]
    path = write_jsonl("k.jsonl", rows)
    with pytest.raises(DataError, match=rf"{path}:35: field 'label' must be true"):
        run(tiny_tokenizer, "kto", train=[str(path)])
    data = run(tiny_tokenizer, "kto", train=[str(path)], on_bad_rows="skip", split={"validation": 0.1, "test": 0.1})
    drops = {reason: d.count for reason, d in data.report.sources[str(path)].drops.items()}
    assert drops == {"empty_answer": 1, "empty": 1, "too_long": 1, "duplicate": 1, "malformed": 1}
    assert data.report.splits == {"train": 24, "validation": 3, "test": 3} and data.report.format == "unpaired"
    # Only desirable answers are references for the generation eval.
    assert all(ex["messages"][-1] == A("billing") for ex in data.test_examples)
    assert len(data.test_examples) == sum(r["label"] for r in data.test)
    pairs = write_jsonl("p.jsonl", [{"prompt": f"q{i}", "chosen": "good", "rejected": "bad"} for i in range(10)])
    mixed = run(tiny_tokenizer, "kto", train=[str(path), str(pairs)], on_bad_rows="skip", split={"validation": 0, "test": 0})
    assert sum("chosen" in r for r in mixed.train) == 10 and mixed.pairs["train"] == [r for r in mixed.train if "chosen" in r]


def test_grpo_prepare_takes_prompts_and_supervised_rows_as_references(write_jsonl, alpaca_rows, tiny_tokenizer):
    prompts = write_jsonl("g.jsonl", [{"prompt": f"Say {i}", "reference": str(i)} for i in range(10)]
                          + [{"prompt": "no reference"}, {"prompt": "empty reference", "reference": ""}])
    sup = write_jsonl("a.jsonl", alpaca_rows(8))
    data = run(tiny_tokenizer, "grpo", train=[str(prompts), str(sup)], split={"validation": 0, "test": 0})
    assert data.report.format == "prompt_only" and data.report.splits["train"] == 19
    drops = {reason: d.count for reason, d in data.report.sources[str(prompts)].drops.items()}
    assert drops == {"empty_answer": 1}
    from_alpaca = [r for r in data.train if r["meta"]["source"] == str(sup)]
    assert from_alpaca[0]["prompt"][-1]["role"] == "user" and from_alpaca[0]["reference"].startswith("Answer ")
    assert any(r["reference"] is None for r in data.train)
    # A bare prompt longer than max_seq_length tokens is dropped with its token count.
    long = write_jsonl("l.jsonl", [{"prompt": "word " * 300}, {"prompt": "short"}])
    fitted = run(tiny_tokenizer, "grpo", max_seq_length=64, train=[str(long)], split={"validation": 0, "test": 0})
    assert fitted.report.sources[str(long)].drops["too_long"].count == 1
