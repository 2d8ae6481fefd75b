"""Steps every training recipe shares: load the model, prepare and record the data, attach the
logging callbacks, save the weights, write the manifest, evaluate.

Recipes (:mod:`tuneforge.train.recipes`) call these in order, so each recipe
reads top to bottom and holds only what is particular to its objective. Every
file a step writes goes through the :class:`~tuneforge.train.context.RunContext`.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from tuneforge.config.schema import RunConfig
from tuneforge.train.context import RunContext


def load_base(cfg: RunConfig, **model_kwargs: Any) -> tuple[Any, Any, str]:
    """Seed everything, then load the starting model and tokenizer as the method needs them.

    Seeding first also makes a new head (the reward model's ``score``) the same on every run.

    Args:
        model_kwargs: For :func:`tuneforge.models.load.load_model` (``auto_class``, ``num_labels``, ...).

    Returns:
        ``(model, tokenizer, base_path)``.
    """
    from transformers import set_seed

    from tuneforge import methods
    from tuneforge.models.load import load_model

    set_seed(cfg.training.seed)
    return load_model(cfg.model, **methods.load_kwargs(cfg.method), **model_kwargs)


def prepare_data(ctx: RunContext, cfg: RunConfig, tokenizer: Any, console: Any) -> Any:
    """Load, clean, split and tokenize the data, then record it in the run (its first write).

    Returns:
        The :class:`tuneforge.data.PreparedData`.
    """
    from tuneforge import data as data_stage
    from tuneforge.data.cache import cache_folder
    from tuneforge.data.store import lengths_of

    prepared = data_stage.prepare(cfg.data, tokenizer, max_seq_length=cfg.training.max_seq_length, seed=cfg.training.seed,
                                  cache_dir=cache_folder(cfg), key=ctx.sealer.key, labels=cfg.eval.labels)
    if prepared.reused and ctx.is_main:
        console.print(f"data: reused prepared cache {prepared.cache_key}")
    ctx.begin(
        report=prepared.report, sources=prepared.sources,
        splits={"test": prepared.test_examples, "validation": prepared.validation_examples},
    )
    if ctx.is_main:
        # The training split is not stored (it can be large); its token lengths are, for the dashboard's
        # histogram: one [length, count] pair per distinct length, so at most max_seq_length pairs.
        lengths = Counter(int(n) for n in lengths_of(prepared.train))  # offsets only: no example is read
        ctx.write_json("data/lengths.json", {"train": sorted(lengths.items())})
        console.print(prepared.report.table())
    return prepared


def prepare_pairs(ctx: RunContext, cfg: RunConfig, tokenizer: Any, console: Any) -> Any:
    """Load, clean and split preference pairs, then record them in the run (its first write).

    Returns:
        The :class:`tuneforge.data.preferences.PreferenceData`.
    """
    from tuneforge.data.preferences import prepare_pairs as prepare

    pairs = prepare(
        cfg.data, tokenizer, max_seq_length=cfg.training.max_seq_length, seed=cfg.training.seed,
        objective=cfg.training.objective, key=ctx.sealer.key,
    )
    ctx.begin(report=pairs.report, sources=pairs.sources, splits={"test": pairs.test, "validation": pairs.validation})
    if ctx.is_main:
        console.print(pairs.report.table())
    return pairs


def attach_logging(ctx: RunContext, trainer: Any, console: Any, extra: Sequence[Any] = (), *,
                   step_seconds: float | None = None, eval_batches: int = 0) -> Any:
    """Progress bar, ``metrics.jsonl``, TensorBoard and per-rank reports on a ``Trainer``, then ``extra`` callbacks.

    With ``training.max_time``, the :class:`~tuneforge.train.budget.TimeBudgetCallback` comes first, so
    the progress bar and the logs read the steps it plans (every recipe calls this, so none can miss it).
    ``extra`` come last, so they see each evaluation after it is logged (the search prunes there).

    Args:
        step_seconds: The pre-training estimate per optimizer step, for the budget's first plan.
        eval_batches: Validation batches per evaluation, for the budget's first plan.

    Returns:
        The :class:`tuneforge.train.callbacks.ThroughputMeter` measuring real tokens/s.
    """
    from transformers.trainer_callback import PrinterCallback

    from tuneforge.train import callbacks as cb

    trainer.remove_callback(PrinterCallback)  # added by disable_tqdm; the rich callback prints instead
    tokens_seen = lambda: trainer.tokens_seen  # noqa: E731
    meter = cb.ThroughputMeter(tokens_seen)
    max_time = ctx.cfg.training.max_time
    if max_time is not None:
        from tuneforge.train.budget import TimeBudgetCallback

        trainer.add_callback(TimeBudgetCallback(max_time, upper_bound=ctx.cfg.training.max_steps,
                                                estimated_step_seconds=step_seconds, eval_batches=eval_batches))
    trainer.add_callback(cb.RankReportCallback(ctx.write_json, tokens_seen, trainer.model))
    trainer.add_callback(cb.NonFiniteCallback())  # a diverged run stops with an error, unsaved
    if ctx.sealer.key is not None:  # checkpoints encrypted in memory, never written in plaintext
        from tuneforge.train.sealed_checkpoints import seal_checkpoints

        seal_checkpoints(trainer, ctx.sealer)
    if ctx.is_main:
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        # The metrics log first: it adds tokens_per_second to the logs the progress bar shows.
        trainer.add_callback(cb.MetricsLogCallback(ctx.append_metrics, meter))
        trainer.add_callback(cb.RichProgressCallback(console))
        trainer.add_callback(TensorBoardCallback(SummaryWriter(log_dir=str(ctx.paths.tensorboard))))
    for callback in extra:
        trainer.add_callback(callback)
    return meter


def budget_summary(trainer: Any) -> tuple[dict[str, Any], str]:
    """The manifest fields and the closing-line words of a run with ``training.max_time`` (``({}, "")`` without)."""
    from tuneforge.train.budget import TimeBudgetCallback

    budget = next((cb for cb in trainer.callback_handler.callbacks if isinstance(cb, TimeBudgetCallback)), None)
    if budget is None:
        return {}, ""
    from tuneforge.config.duration import format_duration

    numbers = {**budget.report(), "epochs_reached": round(trainer.state.epoch or 0.0, 3)}
    why = "stopped at the deadline" if numbers["stopped_at_deadline"] else f"{numbers['planned_steps']} planned"
    return numbers, (f" (budget {format_duration(numbers['max_time_seconds'])}: {why}, "
                     f"{numbers['epochs_reached']:.2f} epochs, loop {numbers['train_loop_seconds']:.0f}s)")


def save_weights(ctx: RunContext, model: Any, tokenizer: Any, *, full: bool) -> Path:
    """Save the adapter (or the whole model) with a generation config that stops at the end-of-turn token.

    A model that cannot generate (a reward model's classification head) is saved without one.
    """
    from tuneforge.data.prompts import stop_token_ids

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    gen = getattr(inner, "generation_config", None)
    if gen is None or not inner.can_generate():
        return ctx.save_weights(model, tokenizer, "model" if full else "adapter")
    stop_ids = stop_token_ids(tokenizer)  # eos + the template's end-of-turn token
    gen.eos_token_id = stop_ids if len(stop_ids) > 1 else stop_ids[0]
    gen.pad_token_id = tokenizer.pad_token_id
    return ctx.save_weights(model, tokenizer, "model" if full else "adapter", generation_config=gen)


def train(ctx: RunContext, trainer: Any, meter: Any) -> tuple[Any, Any]:
    """Run ``trainer.train()`` (resuming from the run's checkpoint, if any).

    Returns:
        ``(output of trainer.train(), FinetuneResult with step, loss and tokens/s)``.
    """
    from tuneforge.train.result import FinetuneResult

    output = trainer.train(resume_from_checkpoint=ctx.checkpoint)
    result = FinetuneResult(
        run_dir=ctx.root, global_step=trainer.state.global_step,
        train_loss=output.training_loss, tokens_per_second=meter.overall(),
    )
    return output, result


def save_run(ctx: RunContext, cfg: RunConfig, trainer: Any, tokenizer: Any, output: Any, meter: Any,
             sources: dict[str, str], *, full: bool, **numbers: Any) -> tuple[Path, dict[str, Any]]:
    """Save a finished ``Trainer``'s weights and write the manifest with its step, loss and throughput.

    Args:
        output: What ``trainer.train()`` returned.
        meter: From :func:`attach_logging`.
        numbers: The recipe's own manifest fields (wall_seconds, precision, packing, ...).

    Returns:
        ``(weights folder, manifest)``.
    """
    weights = save_weights(ctx, trainer.model, tokenizer, full=full)
    manifest = write_manifest(
        ctx, cfg, sources, tokens_seen=trainer.tokens_seen, tokens_per_second=meter.overall(),
        global_step=trainer.state.global_step, train_loss=output.training_loss, world_size=trainer.args.world_size,
        **budget_summary(trainer)[0], **numbers,
    )
    return weights, manifest


def write_manifest(ctx: RunContext, cfg: RunConfig, sources: dict[str, str], **numbers: Any) -> dict[str, Any]:
    """Write ``manifest.json`` (versions, data hashes, seed and the run's numbers) and return it."""
    from tuneforge.models.from_run import PARENT_FILE
    from tuneforge.train.manifest import build_manifest, peak_gpu_mb, peak_rss_mb

    # The parent as recorded when the run started (checked unchanged on resume), not hashed a second time.
    recorded = ctx.root / PARENT_FILE
    parent = json.loads(recorded.read_text(encoding="utf-8")) if recorded.is_file() else None
    gpu = peak_gpu_mb()
    manifest = build_manifest(cfg, sources, parent=parent, peak_rss_mb=peak_rss_mb(),
                              **({"peak_gpu_mb": gpu} if gpu is not None else {}), **numbers)
    ctx.write_json("manifest.json", manifest)
    return manifest


def evaluate(ctx: RunContext, cfg: RunConfig, model: Any, tokenizer: Any, base_path: str, prepared: Any,
             console: Any, manifest: dict[str, Any]) -> Any:
    """Tuned vs baseline on the held-out test split; adds ``eval_seconds`` to the manifest.

    eval resolves ``eval.baseline``: for an adapter the base is the same weights with the
    adapter switched off, so nothing is loaded twice. Returns ``None`` when there is nothing to
    evaluate.
    """
    if not cfg.eval.enabled:
        return None
    if not prepared.test_examples:  # no eval/ folder and no word about it would look like a silent failure
        from tuneforge.eval import NO_TEST_ROWS

        console.print(f"[bold yellow]{NO_TEST_ROWS}[/]")
        manifest["eval_skipped"] = NO_TEST_ROWS
        ctx.write_json("manifest.json", manifest)
        return None
    from tuneforge.eval import run as run_eval
    from tuneforge.models.load import LoadedModel

    started = time.perf_counter()
    model.eval()
    paths = ctx.paths
    tuned = LoadedModel(model, tokenizer, base_path, run=paths, adapter_path=paths.adapter if paths.adapter.is_dir() else None)
    # eval writes its report files through the run's sealer (encrypted when the run is).
    result = run_eval(
        cfg.eval, tuned=tuned, examples=prepared.test_examples, out_dir=paths.eval,
        data_format=prepared.format, metrics_log=paths.metrics, seed=cfg.training.seed,
        max_seq_length=cfg.training.max_seq_length, sealer=ctx.sealer,
        # For the dashboard's "evaluating: k / n examples" line; atomic, so a reader never sees half a file.
        progress=lambda p: ctx.write_json("eval/progress.json", p) if ctx.is_main else None,
    )
    console.print(result.summary_table())
    manifest["eval_seconds"] = round(time.perf_counter() - started, 1)
    ctx.write_json("manifest.json", manifest)
    return result


def evaluate_pairs(ctx: RunContext, cfg: RunConfig, model: Any, tokenizer: Any, rows: list[dict], console: Any,
                   manifest: dict[str, Any], *, beta: float | None = None) -> Any:
    """Preference measures of base vs tuned on held-out rows, into ``eval/preference.json``.

    Pairs give preference accuracy and the implied reward margin; KTO's judged answers give the
    implied reward's agreement with their labels (both when a KTO run mixes them). The base is the
    same weights with the adapter switched off, as in training. ``beta`` scales the implied reward
    (default ``training.dpo.beta``). Returns ``None`` when evaluation is off or there is nothing to score.
    """
    pairs = [r for r in rows if "chosen" in r]
    judged = [r for r in rows if "label" in r]
    if not cfg.eval.enabled or not (pairs or judged):
        return None
    from tuneforge.eval.preference import compare_judged, compare_pairs, judged_logps, pair_logps

    started = time.perf_counter()
    beta = cfg.training.dpo.beta if beta is None else beta
    common = {"beta": beta, "samples": cfg.eval.bootstrap_samples, "seed": cfg.training.seed, "tuned_name": cfg.name}
    model.eval()
    results = []
    for chosen, logps, compare, extra in ((pairs, pair_logps, compare_pairs, {}),
                                          (judged, judged_logps, compare_judged, {"labels": [r["label"] for r in judged]})):
        if not chosen:
            continue
        tuned = logps(model, tokenizer, chosen)
        with model.disable_adapter():
            base = logps(model, tokenizer, chosen)
        results.append(compare(base, tuned, **extra, **common))
    result = results[0]
    if len(results) > 1:  # one report: the pairs' metrics and the judged answers' side by side
        from dataclasses import replace

        result = replace(result, metrics={**result.metrics, **results[1].metrics}, examples=len(pairs) + len(judged),
                         settings={**result.settings, "kind": "preference pairs and judged answers"})
    ctx.write_json("eval/preference.json", result.to_dict())
    console.print(result.summary_table())
    manifest["preference_eval_seconds"] = round(time.perf_counter() - started, 1)
    ctx.write_json("manifest.json", manifest)
    return result
