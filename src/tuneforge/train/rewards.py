"""GRPO's rewards: ``training.grpo.rewards`` → functions TRL calls as ``f(prompts, completions, **columns)``.

Built-in verifiable rewards score a completion's text against the row's ``reference`` with the
eval's own metrics (:mod:`tuneforge.eval.metrics`: the same normalisation, label parsing and JSON
reading the final evaluation uses), so what GRPO optimises is what eval measures:

================  ==============================================================================
exact_match       1 when the answer equals the reference after ``eval.normalize``, else 0
label_match       1 when the answer parses to the reference's label (``eval.labels``, else the
                  set of training references), else 0; an answer outside the label set scores 0
json_valid        1 when the answer parses as JSON, else 0
json_field_match  share of the reference object's fields (or ``fields``) the answer gets right
regex             1 when the answer matches the pattern (``re.search``), else 0
length_penalty    0 up to ``target_length`` tokens, then falling linearly to -1 at max_completion_length
================  ==============================================================================

A row without a reference gets ``None`` from the rewards that need one (TRL leaves it out of that
reward's mean). ``function: "module:function"`` imports and runs the user's code, only when named;
``model: RUN`` scores with a trained reward model (:func:`tuneforge.eval.reward.load_reward_model`).
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Sequence
from typing import Any

from tuneforge.config.grpo import RewardSource
from tuneforge.errors import ConfigError
from tuneforge.eval.metrics import exact_match, json_field_accuracy, json_validity, parse_json, parse_label, normalize_text

RewardFn = Callable[..., list[float | None]]


def completion_text(completion: Any) -> str:
    """A completion as TRL hands it over: text, or (conversational data) a list of assistant messages."""
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content") or "" for m in completion)


def score_text(source: RewardSource, text: str, reference: str | None, *, normalize: Sequence[str],
               labels: Sequence[str], tokens: int, max_tokens: int) -> float | None:
    """One built-in or regex reward of one completion (pure; see the module docstring for each rule).

    Example:
        >>> score_text(RewardSource(name="label_match"), "It is Billing.", "billing", normalize=["lower", "punctuation"],
        ...            labels=["billing", "refund"], tokens=4, max_tokens=16)
        1.0
    """
    if source.regex is not None:
        return float(re.search(source.regex, text) is not None)
    name = source.name
    if name == "json_valid":
        return json_validity(text)
    if name == "length_penalty":
        free = source.target_length or 0
        return -min(1.0, max(0, tokens - free) / max(1, max_tokens - free))
    if reference is None:
        return None
    if name == "exact_match":
        return exact_match(text, reference, normalize)
    if name == "label_match":
        parsed = parse_label(text, labels, normalize)
        return float(parsed is not None and normalize_text(parsed, normalize) == normalize_text(reference, normalize))
    ok, expected = parse_json(reference)
    if not ok or not isinstance(expected, dict):
        return None  # json_field_match on a row whose reference is no JSON object: nothing to compare
    return json_field_accuracy(text, expected, source.fields, normalize)


def build_rewards(sources: Sequence[RewardSource], *, normalize: Sequence[str], labels: Sequence[str],
                  max_tokens: int) -> list[RewardFn]:
    """One TRL reward function per source, named ``reward_<label>`` (TRL logs ``rewards/<name>/mean``).

    Raises:
        ConfigError: a ``function`` that cannot be imported or called as a reward, or a ``model``
            reward without the reward-model loader.
    """
    out = []
    for i, source in enumerate(sources):
        where = f"training.grpo.rewards[{i}]"
        if source.function is not None:
            fn = load_function(source.function, where)
        elif source.model is not None:
            fn = _reward_model(source.model, where)
        else:
            fn = _builtin(source, normalize=normalize, labels=labels, max_tokens=max_tokens)
        fn.__name__ = f"reward_{source.label}" if sum(s.label == source.label for s in sources) == 1 else f"reward_{source.label}_{i}"
        out.append(fn)
    return out


def _builtin(source: RewardSource, *, normalize: Sequence[str], labels: Sequence[str], max_tokens: int) -> RewardFn:
    def reward(prompts: list, completions: list, completion_ids: list | None = None, reference: list | None = None,
               **_: Any) -> list[float | None]:
        refs = reference or [None] * len(completions)
        ids = completion_ids or [[]] * len(completions)
        return [score_text(source, completion_text(c), ref, normalize=normalize, labels=labels, tokens=len(t),
                           max_tokens=max_tokens) for c, ref, t in zip(completions, refs, ids)]

    return reward


def load_function(spec: str, where: str) -> RewardFn:
    """Import the user's ``module:function`` and check it can be called as ``f(prompts, completions, **columns)``.

    Raises:
        ConfigError: naming ``where``, when the module or function is missing or the signature cannot take
            those arguments.
    """
    module_name, attr = spec.split(":")
    try:
        module = importlib.import_module(module_name)  # runs the user's module: documented on the field
    except ImportError as exc:
        raise ConfigError(f"{where}.function: cannot import module {module_name!r} ({exc}); is it on the Python path?") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"{where}.function: module {module_name!r} has no function {attr!r}")
    params = inspect.signature(fn).parameters.values()
    kinds = {p.kind for p in params}
    names = {p.name for p in params}
    takes_args = inspect.Parameter.VAR_POSITIONAL in kinds or {"prompts", "completions"} <= names
    if not (takes_args and inspect.Parameter.VAR_KEYWORD in kinds):
        raise ConfigError(
            f"{where}.function: {spec} must be callable as f(prompts, completions, **kwargs) -> list[float | None] "
            f"(kwargs are the data's columns, such as reference); its signature is {attr}{inspect.signature(fn)}"
        )

    def reward(prompts: list, completions: list, **kwargs: Any) -> list[float | None]:
        return fn(prompts=prompts, completions=completions, **kwargs)

    return reward


def _reward_model(run: str, where: str) -> RewardFn:
    from tuneforge.eval.reward import load_reward_model  # RLHF: the scorer `tuneforge score` and /v1/rewards use

    scorer = load_reward_model(run)

    def reward(prompts: list, completions: list, **_: Any) -> list[float | None]:
        return [float(x) for x in scorer.score(prompts, [completion_text(c) for c in completions])]

    return reward


def reference_labels(rows: Sequence[dict], labels: Sequence[str] | None) -> list[str]:
    """The label set of ``label_match``: ``eval.labels``, else every distinct reference of the training rows."""
    if labels:
        return list(labels)
    return sorted({r["reference"] for r in rows if r.get("reference") is not None})

