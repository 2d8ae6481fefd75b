"""Format detection and conversion of single rows to canonical examples."""

from __future__ import annotations

import pytest

from tuneforge.data.formats import RowError, detect_format, detect_row_format, to_canonical, with_system_prompt
from tuneforge.errors import DataError

W = "f.jsonl:7"


def test_alpaca_joins_instruction_and_input():
    ex = to_canonical({"instruction": "Classify", "input": "my card was charged twice", "output": "billing"}, "alpaca", W)
    assert ex == {"messages": [
        {"role": "user", "content": "Classify\n\nmy card was charged twice"},
        {"role": "assistant", "content": "billing"},
    ]}


def test_alpaca_without_input_and_with_system():
    ex = to_canonical({"instruction": "Hi", "input": "  ", "output": "Hello", "system": "Be brief."}, "alpaca", W)
    assert ex["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
    ]
    assert to_canonical({"instruction": "Hi", "output": "Hello"}, "alpaca", W)["messages"][0]["content"] == "Hi"


def test_chat_messages_pass_through_extra_keys_dropped():
    row = {"messages": [{"role": "user", "content": "a", "name": "x"}, {"role": "assistant", "content": "b"}]}
    assert to_canonical(row, "chat", W)["messages"] == [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]


def test_sharegpt_roles_are_mapped():
    row = {"conversations": [
        {"from": "system", "value": "s"}, {"from": "human", "value": "q1"}, {"from": "gpt", "value": "a1"},
        {"from": "user", "value": "q2"}, {"from": "bot", "value": "a2"},
    ]}
    roles = [m["role"] for m in to_canonical(row, "sharegpt", W)["messages"]]
    assert roles == ["system", "user", "assistant", "user", "assistant"]


def test_sharegpt_with_role_content_keys():
    row = {"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    assert to_canonical(row, "sharegpt", W)["messages"][1] == {"role": "assistant", "content": "a"}


def test_sharegpt_wrong_role_names_file_line_and_field():
    row = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}, {"from": "robot", "value": "x"}]}
    with pytest.raises(RowError, match=r"f\.jsonl:7: conversations\[2\]\.from is 'robot'; expected one of human"):
        to_canonical(row, "sharegpt", W)


def test_prompt_completion_strings_and_conversational():
    assert to_canonical({"prompt": "p", "completion": "c"}, "prompt_completion", W)["messages"] == [
        {"role": "user", "content": "p"}, {"role": "assistant", "content": "c"},
    ]
    row = {"prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "p"}],
           "completion": [{"role": "assistant", "content": "c"}]}
    assert [m["role"] for m in to_canonical(row, "prompt_completion", W)["messages"]] == ["system", "user", "assistant"]


def test_text():
    assert to_canonical({"text": "raw"}, "text", W) == {"text": "raw"}


def test_missing_field_is_named_with_format():
    with pytest.raises(RowError, match=r"^f\.jsonl:7: field 'output' is missing \(alpaca format\)$"):
        to_canonical({"instruction": "x"}, "alpaca", W)


@pytest.mark.parametrize(
    ("row", "fmt", "message"),
    [
        ({"instruction": "x", "output": 3}, "alpaca", r"field 'output' must be a string, got int"),
        ({"messages": [{"role": "user", "content": ["a"]}]}, "chat", r"messages\[0\]\.content must be a string, got list"),
        ({"messages": "hello"}, "chat", r"field 'messages' must be a list, got str"),
        ({"messages": []}, "chat", r"field 'messages' is an empty list"),
        ({"messages": [{"content": "a"}]}, "chat", r"messages\[0\]\.role is missing"),
        ({"messages": [{"role": "tool", "content": "a"}]}, "chat", r"messages\[0\]\.role is 'tool'"),
        ({"messages": ["hi"]}, "chat", r"messages\[0\] must be an object, got str"),
        ({"text": None}, "text", r"field 'text' is missing"),
    ],
)
def test_wrong_types_are_malformed(row, fmt, message):
    with pytest.raises(RowError, match=message) as info:
        to_canonical(row, fmt, W)
    assert info.value.reason == "malformed"
    assert str(info.value).startswith(W)


def test_no_assistant_turn_has_its_own_reason():
    with pytest.raises(RowError, match="no assistant turn") as info:
        to_canonical({"messages": [{"role": "user", "content": "a"}]}, "chat", W)
    assert info.value.reason == "no_assistant_turn"


def test_conversation_must_open_with_user():
    row = {"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]}
    with pytest.raises(RowError, match=r"messages\[1\] is the first turn after the system message and must be the user's"):
        to_canonical(row, "chat", W)


def test_csv_cell_with_json_list_is_parsed_and_bad_json_named():
    ex = to_canonical({"messages": '[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]'}, "chat", W)
    assert ex["messages"][1]["content"] == "b"
    with pytest.raises(RowError, match="field 'messages' is not a valid JSON list"):
        to_canonical({"messages": "[{oops"}, "chat", W)


def test_unknown_format_and_preference_rows():
    with pytest.raises(DataError, match="unknown data format 'xml'"):
        to_canonical({"text": "a"}, "xml", W)
    with pytest.raises(DataError, match=r"preference data .* trains with `training.objective: dpo`, not sft"):
        to_canonical({"prompt": "p", "chosen": "a", "rejected": "b", "completion": "c"}, "prompt_completion", W)


@pytest.mark.parametrize(
    ("row", "fmt"),
    [
        ({"instruction": "i", "input": "", "output": "o"}, "alpaca"),
        ({"messages": []}, "chat"),
        ({"conversations": []}, "sharegpt"),
        ({"prompt": "p", "completion": "c"}, "prompt_completion"),
        ({"text": "t", "id": 1}, "text"),
        ({"prompt": "p", "chosen": "a", "rejected": "b"}, "preference"),
        ({"question": "q", "answer": "a"}, None),
    ],
)
def test_detect_row_format(row, fmt):
    assert detect_row_format(row) == fmt


def test_detect_format_majority_vote():
    rows = [{"instruction": "i", "output": "o"}] * 3 + [{"text": "odd one"}]
    assert detect_format(rows, "f.jsonl") == "alpaca"


def test_detect_format_failures_name_the_file():
    with pytest.raises(DataError, match=r"f\.jsonl: cannot detect the data format from the fields \['answer', 'question'\]"):
        detect_format([{"question": "q", "answer": "a"}], "f.jsonl")
    with pytest.raises(DataError, match=r"f\.jsonl: preference data \(rows with chosen/rejected\) trains with `training.objective: dpo`"):
        detect_format([{"prompt": "p", "chosen": "a", "rejected": "b"}], "f.jsonl")


def test_with_system_prompt_only_when_missing():
    chat = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    assert with_system_prompt(chat, "S")["messages"][0] == {"role": "system", "content": "S"}
    assert chat["messages"][0]["role"] == "user"  # not mutated
    has = {"messages": [{"role": "system", "content": "mine"}, *chat["messages"]]}
    assert with_system_prompt(has, "S") is has
    assert with_system_prompt({"text": "t"}, "S") == {"text": "t"}
    assert with_system_prompt(chat, None) is chat


def test_distillation_takes_supervised_rows_and_refuses_the_others_as_sft_does():
    from tuneforge.data.formats import SUPERVISED, check_kind

    for fmt in SUPERVISED:
        check_kind(fmt, "distill", "d.jsonl")  # the student trains on SFT's examples
    with pytest.raises(DataError, match=r"d\.jsonl: preference data .* `training.objective: dpo`, not sft or distill"):
        check_kind("preference", "distill", "d.jsonl")
    with pytest.raises(DataError, match=r"d\.jsonl: holds unpaired rows, which supervised fine-tuning cannot learn from"):
        check_kind("unpaired", "distill", "d.jsonl")
