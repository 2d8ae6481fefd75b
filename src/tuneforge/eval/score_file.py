"""Score a file with a reward model (``tuneforge score``): preference pairs, or prompts with one completion each.

A pairs file (``prompt``/``chosen``/``rejected``, or chat pairs) gives each pair's two rewards
and the pairwise accuracy with its bootstrap CI (:func:`tuneforge.eval.preference.compare_rewards`);
a supervised file (prompt/completion, alpaca, chat, ShareGPT) gives one reward per row, for its
last assistant turn. Rows are read by the data loaders, so a bad row stops with ``file:line``,
and a run's ``data.system_prompt`` is applied as in training.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.errors import DataError


@dataclass
class ScoreResult:
    """What :func:`score_file` found.

    Attributes:
        kind: ``"pairs"`` or ``"completions"``.
        rows: One dict per input row: ``chosen_reward``/``rejected_reward``/``correct`` for pairs,
            ``reward`` for completions; each with its ``line`` in the file.
        eval: For pairs, the :class:`~tuneforge.eval.result.EvalResult` with ``pairwise_accuracy``
            and ``reward_margin`` (95% bootstrap CIs); ``None`` for completions.
    """

    kind: str
    rows: list[dict] = field(default_factory=list)
    eval: Any = None


def score_file(target: str | Path, data: str | Path, *, out: str | Path | None = None, batch_size: int = 16,
               samples: int = 1000, seed: int = 0, trust_remote_code: bool = False) -> ScoreResult:
    """Score every row of ``data`` with the reward model ``target``; write the rows to ``out`` (JSONL) if given.

    Raises:
        ModelError: ``target`` is not a reward model.
        DataError: ``data`` is missing, empty, or has a bad row (file:line), or a row has no answer to score.

    Example:
        >>> score_file("runs/reward", "pairs.jsonl").eval.metrics["pairwise_accuracy"].tuned  # doctest: +SKIP
        0.93
    """
    from tuneforge.eval.reward import load_reward_model

    kind, examples = read_scoring_rows(data, system_prompt=_system_prompt(target))
    scorer = load_reward_model(target, trust_remote_code=trust_remote_code)
    if kind == "pairs":
        result = _score_pairs(scorer, examples, batch_size=batch_size, samples=samples, seed=seed, name=str(target))
    else:
        prompts = [ex["messages"][:-1] for ex in examples]
        rewards = scorer.score(prompts, [ex["messages"][-1]["content"] for ex in examples], batch_size=batch_size)
        result = ScoreResult("completions", [{"line": ex["meta"]["line"], "reward": r} for ex, r in zip(examples, rewards)])
    if out is not None:
        Path(out).write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in result.rows), encoding="utf-8")
    return result


def read_scoring_rows(path: str | Path, *, system_prompt: str | None = None) -> tuple[str, list[dict]]:
    """``("pairs", canonical pairs)`` or ``("completions", canonical chats ending in the scored answer)``.

    Raises:
        DataError: as :func:`tuneforge.data.load.load_examples`, or a row without an assistant answer last.
    """
    from tuneforge.data.formats import detect_row_format
    from tuneforge.data.load import load_examples, location, read_rows

    votes = Counter(detect_row_format(r.data) for r in read_rows(path).rows if isinstance(r.data, dict))
    pairs = bool(votes) and votes.most_common(1)[0][0] == "preference"
    examples = load_examples(str(path), system_prompt=system_prompt, objective="reward" if pairs else "sft")
    if pairs:
        return "pairs", examples
    for ex in examples:
        if "messages" not in ex or ex["messages"][-1]["role"] != "assistant":
            raise DataError(f"{location(ex['meta'])}: nothing to score: give a prompt and a completion "
                            "(prompt/completion, alpaca, chat or sharegpt rows ending in an assistant answer)")
    return "completions", examples


def _score_pairs(scorer: Any, pairs: list[dict], *, batch_size: int, samples: int, seed: int, name: str) -> ScoreResult:
    from tuneforge.eval.preference import compare_rewards

    rewards = scorer.score_pairs(pairs, batch_size=batch_size)
    rows = [{"line": pair["meta"]["line"], "chosen_reward": float(r[0]), "rejected_reward": float(r[1]),
             "correct": bool(r[0] > r[1])} for pair, r in zip(pairs, rewards)]
    result = compare_rewards(None, rewards, samples=samples, seed=seed, tuned_name=name)
    return ScoreResult("pairs", rows, result)


def _system_prompt(target: str | Path) -> str | None:
    """The run's ``data.system_prompt``, so rows are rendered as the reward model saw them in training."""
    from tuneforge.rundir import RunDir

    run = RunDir(Path(target))
    if not run.config.is_file():
        return None
    from tuneforge.config.load import load_config

    return load_config(run.config).data.system_prompt
