"""GRPO's reward sources: each built-in rule, weights and names, user functions and the reward-model source."""

from __future__ import annotations

import pytest

from tuneforge.config.grpo import RewardSource
from tuneforge.errors import ConfigError
from tuneforge.train.rewards import build_rewards, reference_labels, score_text

NORM = ["lower", "strip", "punctuation", "whitespace"]
LABELS = ["billing", "refund", "shipping"]


def score(source, text, reference=None, tokens=4, max_tokens=16):
    return score_text(RewardSource.model_validate(source), text, reference, normalize=NORM, labels=LABELS,
                      tokens=tokens, max_tokens=max_tokens)


@pytest.mark.parametrize(
    ("source", "text", "reference", "expected"),
    [
        ("exact_match", " Billing. ", "billing", 1.0),
        ("exact_match", "billing please", "billing", 0.0),
        ("label_match", "The queue is Refund.", "refund", 1.0),
        ("label_match", "The queue is Refund.", "billing", 0.0),
        ("label_match", "weather", "billing", 0.0),  # outside the label set
        ("label_match", "billing or refund", "billing", 0.0),  # two labels: unparseable, as eval counts it
        ("json_valid", '{"a": 1}', None, 1.0),
        ("json_valid", "{a: 1}", None, 0.0),
        ({"name": "json_field_match"}, '{"queue": "Billing", "urgent": true}', '{"queue": "billing", "urgent": false}', 0.5),
        ({"name": "json_field_match", "fields": ["queue"]}, '{"queue": "billing"}', '{"queue": "billing", "urgent": false}', 1.0),
        ({"regex": r"^Queue: \w+$"}, "Queue: billing", None, 1.0),
        ({"regex": r"^Queue: \w+$"}, "billing", None, 0.0),
    ],
)
def test_builtin_rewards(source, text, reference, expected):
    assert score(source, text, reference) == expected


def test_rewards_needing_a_reference_skip_rows_without_one():
    assert score("exact_match", "billing", None) is None
    assert score("label_match", "billing", None) is None
    assert score({"name": "json_field_match"}, "{}", "not json") is None


def test_length_penalty_is_free_up_to_the_target_then_falls_to_minus_one():
    assert score({"name": "length_penalty", "target_length": 4}, "x", tokens=4) == 0.0
    assert score({"name": "length_penalty", "target_length": 4}, "x", tokens=10) == pytest.approx(-0.5)
    assert score({"name": "length_penalty", "target_length": 4}, "x", tokens=16) == -1.0
    assert score("length_penalty", "x", tokens=8) == pytest.approx(-0.5)


def test_built_rewards_take_trl_arguments_and_are_named_for_the_logs():
    sources = [RewardSource.model_validate(s) for s in ("label_match", {"regex": "^b"}, {"regex": "y$"})]
    fns = build_rewards(sources, normalize=NORM, labels=LABELS, max_tokens=16)
    assert [f.__name__ for f in fns] == ["reward_label_match", "reward_regex_1", "reward_regex_2"]
    completions = [[{"role": "assistant", "content": "billing"}], [{"role": "assistant", "content": "refund"}]]
    out = fns[0](prompts=[[], []], completions=completions, completion_ids=[[1], [2]], reference=["billing", None])
    assert out == [1.0, None]
    assert fns[1](prompts=[[], []], completions=completions, completion_ids=[[1], [2]], reference=[None, None]) == [1.0, 0.0]


def test_label_set_defaults_to_the_references():
    rows = [{"reference": "b"}, {"reference": "a"}, {"reference": None}, {"reference": "a"}]
    assert reference_labels(rows, None) == ["a", "b"] and reference_labels(rows, ["x"]) == ["x"]


def test_user_functions_are_imported_only_when_named_and_checked(tmp_path, monkeypatch):
    (tmp_path / "user_rewards.py").write_text(
        "def good(prompts, completions, reference=None, **kwargs):\n"
        "    return [float(len(c[0]['content'])) for c in completions]\n"
        "def bad(completion):\n    return 1.0\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    [fn] = build_rewards([RewardSource(function="user_rewards:good")], normalize=NORM, labels=LABELS, max_tokens=8)
    assert fn.__name__ == "reward_function"
    assert fn(prompts=[[]], completions=[[{"role": "assistant", "content": "abc"}]], reference=["x"]) == [3.0]
    with pytest.raises(ConfigError, match=r"training.grpo.rewards\[0\].function: user_rewards:bad must be callable as "
                                          r"f\(prompts, completions, \*\*kwargs\).*its signature is bad\(completion\)"):
        build_rewards([RewardSource(function="user_rewards:bad")], normalize=NORM, labels=LABELS, max_tokens=8)
    with pytest.raises(ConfigError, match=r"rewards\[0\].function: module 'user_rewards' has no function 'missing'"):
        build_rewards([RewardSource(function="user_rewards:missing")], normalize=NORM, labels=LABELS, max_tokens=8)
    with pytest.raises(ConfigError, match=r"rewards\[0\].function: cannot import module 'no_such_module_xyz'"):
        build_rewards([RewardSource(function="no_such_module_xyz:f")], normalize=NORM, labels=LABELS, max_tokens=8)


def test_reward_model_source_needs_the_reward_objective():
    try:
        import tuneforge.eval.reward  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r"rewards\[0\].model: reward-model rewards land with the reward objective"):
            build_rewards([RewardSource(model="runs/rm")], normalize=NORM, labels=LABELS, max_tokens=8)
    else:  # merged with the reward branch: the loader itself refuses a folder that is no reward model
        with pytest.raises(Exception):
            build_rewards([RewardSource(model="/nonexistent/rm")], normalize=NORM, labels=LABELS, max_tokens=8)
