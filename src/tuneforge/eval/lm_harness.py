"""Score a run's held-out split with EleutherAI's lm-evaluation-harness, for base and tuned.

Users already trust lm-eval's numbers; this puts ours next to them on the same
data. ``write_task`` turns the run's ``data/test.jsonl`` into a local task
(a JSONL of prompt/answer pairs and a task YAML that lm-eval loads with the
``json`` dataset builder: no download). The prompt is rendered here with
tuneforge's own :func:`~tuneforge.data.render_prompt`, chat template and
system prompt included, rather than by lm-eval's ``--apply_chat_template``,
which renders only a single user turn: so lm-eval sees exactly the text
``tuneforge eval`` generates from, multi-turn examples included.
``run_lm_eval`` then evaluates the merged tuned model and the base model
(lm-eval's ``hf`` backend on local folders) and writes both results.

The same task runs from lm-eval's own CLI::

    lm_eval --model hf --model_args pretrained=RUN/merged --include_path RUN/eval/lm_eval \\
        --tasks tuneforge_heldout --device cpu
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tuneforge.errors import EvalError

log = logging.getLogger("tuneforge.eval")

TASK_NAME = "tuneforge_heldout"
METRIC = "exact_match"
FILTER = "strip"


@dataclass(frozen=True)
class LmEvalTask:
    """A local lm-eval task written from a run's held-out split."""

    name: str
    folder: Path
    """Pass as ``--include_path`` (or ``TaskManager(include_path=...)``)."""
    yaml_path: Path
    data_path: Path
    examples: int


@dataclass(frozen=True)
class LmEvalResult:
    """lm-eval's exact match of each model on the task, and where the full results are."""

    task: LmEvalTask
    scores: dict[str, float]
    """``{"base": 0.1, "tuned": 0.85}``: exact match (after stripping whitespace), per model."""
    stderr: dict[str, float]
    results_path: Path

    def table(self) -> str:
        rows = [f"| model | lm-eval {METRIC} ({self.task.examples} held-out examples) | stderr |", "|---|---|---|"]
        rows += [f"| {name} | {value:.3f} | {self.stderr.get(name, float('nan')):.3f} |" for name, value in self.scores.items()]
        return "\n".join(rows)


def task_rows(examples: list[dict], tokenizer: Any) -> list[dict]:
    """Each example as lm-eval reads it: the prompt as the model sees it, and the reference answer."""
    from tuneforge.data import prompt_messages, reference, render_prompt

    return [{"prompt": render_prompt(prompt_messages(ex), tokenizer), "answer": reference(ex).strip()} for ex in examples]


def task_config(name: str, data_path: Path, stop: str, max_gen_toks: int) -> dict:
    """The lm-eval task YAML: greedy generation until the end-of-turn token, exact match after stripping."""
    return {
        "task": name,
        "dataset_path": "json",  # datasets' packaged JSON builder: reads the local file, downloads nothing
        "dataset_kwargs": {"data_files": {"test": str(data_path.resolve())}},
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": "{{prompt}}",
        "doc_to_target": "{{answer}}",
        # The prompt already ends with the template's generation prompt ("<|im_start|>assistant\n").
        "target_delimiter": "",
        "generation_kwargs": {"until": [stop], "do_sample": False, "max_gen_toks": max_gen_toks},
        "filter_list": [{"name": FILTER, "filter": [{"function": "regex", "regex_pattern": r"(?s)^\s*(.*?)\s*$"},
                                                   {"function": "take_first"}]}],
        "metric_list": [{"metric": METRIC, "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }


def write_task(examples: list[dict], tokenizer: Any, folder: Path, *, name: str = TASK_NAME,
               max_gen_toks: int = 32) -> LmEvalTask:
    """Write ``folder/<name>.yaml`` and ``folder/<name>.jsonl`` for lm-eval.

    Raises:
        EvalError: no examples, or an example without an assistant answer.
    """
    from tuneforge.data import end_of_turn_token
    from tuneforge.errors import DataError

    if not examples:
        raise EvalError("the held-out split is empty: nothing for lm-eval to score")
    try:
        rows = task_rows(examples, tokenizer)
    except DataError as exc:
        raise EvalError(f"cannot build the lm-eval task: {exc}") from exc
    folder.mkdir(parents=True, exist_ok=True)
    data_path = folder / f"{name}.jsonl"
    data_path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    yaml_path = folder / f"{name}.yaml"
    yaml_path.write_text(yaml.safe_dump(task_config(name, data_path, end_of_turn_token(tokenizer), max_gen_toks),
                                        sort_keys=False, allow_unicode=True))
    return LmEvalTask(name, folder, yaml_path, data_path, len(rows))


def evaluate_model(task: LmEvalTask, model_dir: str | Path, *, batch_size: int = 8, device: str = "cpu") -> dict:
    """Run lm-eval's ``hf`` backend on a local model folder; returns lm-eval's result dict for the task."""
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError as exc:
        raise EvalError("the lm-eval path needs lm-evaluation-harness: pip install 'tuneforge[interop]'") from exc
    # include_defaults=False: only our task; indexing lm-eval's thousands of bundled YAMLs costs seconds.
    manager = TaskManager(include_path=str(task.folder), include_defaults=False)
    out = lm_eval.simple_evaluate(
        model="hf", model_args={"pretrained": str(model_dir), "dtype": "float32"},
        tasks=[task.name], task_manager=manager, batch_size=batch_size, device=device,
        log_samples=False, random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0,
    )
    return out["results"][task.name]


def run_lm_eval(run_dir: str | Path, *, data: str | Path | None = None, max_examples: int | None = None,
                batch_size: int = 8, max_gen_toks: int = 32) -> LmEvalResult:
    """Score the base and the tuned model of a run with lm-eval on the run's held-out split.

    Args:
        run_dir: A run directory (``runs/NAME``) with trained weights.
        data: Examples to use instead of ``RUN/data/test.jsonl`` (canonical messages JSONL).
        max_examples: Keep the first N examples.
        batch_size: lm-eval's generation batch size.
        max_gen_toks: Generation limit per answer.

    Returns:
        An :class:`LmEvalResult`; files in ``RUN/eval/lm_eval/`` (task YAML, JSONL, ``results.json``).

    Raises:
        EvalError: not a run, no held-out split, or lm-eval is not installed.

    Example:
        >>> print(run_lm_eval("runs/quickstart").table())
    """
    from tuneforge.config.load import load_config
    from tuneforge.eval.jsonl import parse_json_lines
    from tuneforge.export.merging import find_source, is_current, merge_source
    from tuneforge.models import load_tokenizer, resolve
    from tuneforge.rundir import RunDir

    from tuneforge.security.at_rest import run_security

    run = RunDir(Path(run_dir))
    if not run.is_run():
        raise EvalError(f"{run_dir} is not a run directory with trained weights (config.yaml + adapter/ or model/)")
    if run_security(run.root).get("encrypt"):
        # lm-eval reads its task JSONL and the merged weights from disk, in plaintext.
        raise EvalError(f"{run_dir} is encrypted (security.encrypt) and lm-eval reads plaintext files only; "
                        "use `tuneforge eval`, which decrypts in memory")
    data_path = Path(data) if data is not None else run.test_split
    if not data_path.is_file():
        raise EvalError(f"no held-out examples at {data_path}; give --data FILE.jsonl")
    examples = parse_json_lines(data_path.read_text(), data_path, require={"messages": list})
    examples = examples[:max_examples] if max_examples else examples
    source = find_source(run.root)
    if not is_current(source, run.merged):
        log.info("merging %s into %s for lm-eval", source.weights, run.merged)
        merge_source(source, run.merged)
    base = resolve(load_config(run.config).model)
    task = write_task(examples, load_tokenizer(run.merged), run.eval / "lm_eval", max_gen_toks=max_gen_toks)
    results = {"base": evaluate_model(task, base, batch_size=batch_size),
               "tuned": evaluate_model(task, run.merged, batch_size=batch_size)}
    key = f"{METRIC},{FILTER}"
    scores = {name: float(r[key]) for name, r in results.items()}
    stderr = {name: float(r.get(f"{METRIC}_stderr,{FILTER}", float("nan"))) for name, r in results.items()}
    results_path = task.folder / "results.json"
    results_path.write_text(json.dumps({"task": task.name, "examples": task.examples, "models": {
        "base": str(base), "tuned": str(run.merged)}, "results": results}, indent=2, default=str))
    return LmEvalResult(task, scores, stderr, results_path)
