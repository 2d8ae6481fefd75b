"""Sequence-level distillation data: the teacher's answers to the prompts become the student's SFT data.

Prompts are the training split's inputs (their reference answers are replaced), or the
file ``distill.prompts``. Every answer is cached in the run as
``teacher_answers/<key>.json``, keyed by a hash of the prompt, the teacher and the
generation settings, and written the moment it arrives: a killed or resumed run asks
only for what is missing. A prompt the teacher did not answer is counted in the data
report under ``teacher_failed`` (with the error), never dropped silently.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tuneforge.config.distill import DistillConfig, EndpointTeacher
from tuneforge.config.schema import RunConfig
from tuneforge.data.clean import Dropped
from tuneforge.data.template import encode_example, prompt_messages
from tuneforge.distill.teacher import Failed, ask_endpoint, ask_local
from tuneforge.errors import DataError
from tuneforge.train.context import RunContext

CACHE = "teacher_answers"
"""The run's folder of cached teacher answers (kept when a never-checkpointed run restarts)."""


def teacher_id(teacher: str | EndpointTeacher) -> str:
    """What identifies the teacher in the cache key: the endpoint and model name, or the model reference."""
    if isinstance(teacher, EndpointTeacher):
        return f"{teacher.base_url}#{teacher.model}"
    return str(Path(teacher).expanduser().resolve()) if Path(teacher).expanduser().exists() else teacher


def cache_key(messages: list[dict], teacher: str, max_new_tokens: int) -> str:
    """A stable hash of what decides an answer: the prompt, the teacher and the generation settings."""
    blob = json.dumps({"messages": messages, "teacher": teacher, "max_new_tokens": max_new_tokens, "greedy": True},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def load_prompts(path: str | Path) -> list[dict]:
    """Prompt-only examples from a ``.txt`` file (one prompt a line) or ``.jsonl`` (``prompt`` or ``messages``).

    Returns:
        ``{"messages": [...], "meta": {"source", "line"}}`` per prompt (no assistant turn).

    Raises:
        DataError: the file is missing, empty, or a line is not a prompt (with file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"distill.prompts: file not found: {path}")
    examples = []
    from tuneforge.security.at_rest import read_text  # an encrypted prompt file is read like encrypted data

    for n, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        if path.suffix == ".txt":
            messages = [{"role": "user", "content": line.strip()}]
        else:
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise DataError(f"{where}: not a JSON object ({exc.msg})") from None
            if isinstance(row, dict) and isinstance(row.get("prompt"), str) and row["prompt"].strip():
                messages = [{"role": "user", "content": row["prompt"]}]
            elif isinstance(row, dict) and isinstance(row.get("messages"), list) and row["messages"]:
                messages = row["messages"][:-1] if row["messages"][-1].get("role") == "assistant" else row["messages"]
            else:
                raise DataError(f"{where}: field 'prompt' (a non-empty string) or 'messages' (a list) is missing")
        examples.append({"messages": messages, "meta": {"source": str(path), "line": n}})
    if not examples:
        raise DataError(f"distill.prompts: {path} holds no prompt")
    return examples


def answered_data(ctx: RunContext, cfg: RunConfig, tokenizer: Any, prepared: Any, console: Any) -> tuple[Any, dict]:
    """Replace the training answers of ``prepared`` with the teacher's, and record it in the data report.

    Returns:
        ``(prepared, counts)``: the same object with ``train``/``train_examples`` replaced, and
        ``{"prompts", "cached", "asked", "answered", "failed"}`` for the manifest.

    Raises:
        ConfigError: the teacher endpoint cannot be reached or refuses the key.
        DataError: the teacher answered none of the prompts.
    """
    distill: DistillConfig = cfg.distill
    report = prepared.report
    if distill.prompts:
        inputs = load_prompts(distill.prompts)
        _count_prompt_file(report, distill.prompts, inputs, prepared)
    else:
        inputs = prepared.train_examples
    prompts = [ex["messages"] if distill.prompts else prompt_messages(ex) for ex in inputs]
    ident = teacher_id(distill.teacher)
    keys = [cache_key(p, ident, distill.max_new_tokens) for p in prompts]
    answers = _cached(ctx.root / CACHE, keys)
    missing = {k: p for k, p in zip(keys, prompts) if k not in answers}  # a repeated prompt is asked once
    wanted = list(missing)
    if missing and ctx.is_main:
        console.print(f"asking the teacher {ident} for {len(missing)} answers ({len(answers)} cached)")

    def keep(i: int, text: str) -> None:
        answers[wanted[i]] = text
        ctx.write_json(f"{CACHE}/{wanted[i]}.json", {"answer": text, "teacher": ident, "messages": missing[wanted[i]]})

    failed = _ask(distill, tokenizer, list(missing.values()), keep) if missing else {}
    failures = {wanted[i]: f for i, f in failed.items()}

    train, examples, lost = [], [], set()
    for ex, key, messages in zip(inputs, keys, prompts):
        meta = ex.get("meta", {})
        where = f"{meta.get('source', 'prompt')}:{meta.get('line', '?')}"
        if where in lost:  # a row repeated by its source's mixing weight is counted once
            continue
        if key not in answers:
            lost.add(where)
            why = failures.get(key, Failed("no answer", 0))
            _drop(report, meta, "teacher_failed", where, f"{why.reason} after {why.attempts} attempts")
            continue
        example = {"messages": messages + [{"role": "assistant", "content": answers[key]}], "meta": meta}
        encoded = encode_example(example, tokenizer, max_seq_length=cfg.training.max_seq_length,
                                 too_long=cfg.data.clean.too_long)
        if isinstance(encoded, Dropped):  # an empty or overlong teacher answer
            lost.add(where)
            _drop(report, meta, f"teacher_{encoded.reason}", where, encoded.detail)
            continue
        train.append(encoded.as_dict())
        examples.append(example)
    report.splits["train"] = len(train)
    report.notes.append(f"training answers come from the teacher {ident} (sequence-level distillation); "
                        "token statistics describe the data's own answers")
    if ctx.is_main:
        ctx.write_json("data_report.json", report.to_dict())
    if not train:
        reasons = sorted({f.reason for f in failures.values()})
        raise DataError(f"the teacher answered none of the {len(inputs)} training prompts usably "
                        f"(errors: {', '.join(reasons) or 'empty or overlong answers'}); see {ctx.paths.data_report}")
    prepared.train, prepared.train_examples = train, examples
    counts = {"prompts": len(inputs), "cached": len(keys) - len(missing), "asked": len(missing),
              "answered": len(train), "failed": len(inputs) - len(train)}
    return prepared, counts


def _ask(distill: DistillConfig, tokenizer: Any, prompts: list[list[dict]], keep: Any) -> dict[int, Failed]:
    """Ask the configured teacher; return the failures by prompt index (answers go to ``keep``)."""
    if isinstance(distill.teacher, EndpointTeacher):
        results = ask_endpoint(distill.teacher, prompts, max_new_tokens=distill.max_new_tokens,
                               concurrency=distill.concurrency, max_retries=distill.max_retries,
                               backoff_seconds=distill.backoff_seconds, on_answer=keep)
    else:
        from tuneforge.models import load

        teacher = load(distill.teacher, merge=True)  # its own tokenizer renders its own chat template
        results = ask_local(teacher.model, teacher.tokenizer, prompts, max_new_tokens=distill.max_new_tokens,
                            on_answer=keep)
    return {i: r for i, r in results.items() if isinstance(r, Failed)}


def _cached(folder: Path, keys: list[str]) -> dict[str, str]:
    """Answers already in the run's cache (an unreadable file, from a crash mid-write, is asked again)."""
    from tuneforge.security.at_rest import read_text  # encrypted, like every data file, when the run is

    found = {}
    for key in set(keys):
        try:
            found[key] = json.loads(read_text(folder / f"{key}.json"))["answer"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


def _count_prompt_file(report: Any, path: str, inputs: list[dict], prepared: Any) -> None:
    """The prompt file as a training source of the report; the data's own training rows are not trained on."""
    from tuneforge.data.load import source_digest

    stats = report.source(str(path))
    stats.role, stats.format, stats.sha256 = "train", "prompts", source_digest(path)
    stats.rows_read = stats.rows_kept = stats.split["train"] = stats.rows_in_training = len(inputs)
    prepared.sources[str(path)] = stats.sha256
    for other in report.sources.values():
        if other is not stats:
            other.rows_in_training = 0
    report.notes.append(f"distill.prompts: the teacher answers the prompts of {path}; the training split of "
                        "data.train is not trained on (validation and test come from it)")


def _drop(report: Any, meta: dict, reason: str, where: str, detail: str) -> None:
    """Count a training row lost to the teacher in its source's numbers (rows_read = kept + dropped holds)."""
    source = meta.get("source")
    if source is None:
        return
    report.drop(source, reason, where, detail)
    stats = report.source(source)
    stats.rows_kept -= 1
    stats.split["train"] -= 1
    stats.rows_in_training = max(0, stats.rows_in_training - 1)
