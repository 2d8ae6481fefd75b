"""The whole fine-tuning path for one config, reading top to bottom:

setup (run dir, seed, precision) → model → data → method → train → save → manifest → evaluate.

Every process of a multi-process launch (``accelerate launch``) runs this;
only the main process writes the run directory and evaluates.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tuneforge.config.load import load_config
from tuneforge.config.schema import RunConfig
from tuneforge.errors import ConfigError
from tuneforge.rundir import RunDir

log = logging.getLogger("tuneforge.train")

_LOSS_METRICS = {"loss", "eval_loss"}


@dataclass
class FinetuneResult:
    """What a run produced: where it is, the training numbers and (main process) the evaluation."""

    run_dir: Path
    global_step: int
    train_loss: float | None
    tokens_per_second: float
    manifest: dict[str, Any] = field(default_factory=dict)
    eval: Any = None


def finetune(config: RunConfig | str | Path, *, resume: bool = False, console: Any = None) -> FinetuneResult:
    """Prepare data, train, save, and evaluate one run.

    Args:
        config: A :class:`RunConfig` or the path of a YAML config.
        resume: Continue from the newest checkpoint in ``RUN/checkpoints`` (after a crash or kill).
        console: A ``rich.console.Console`` for progress and tables (default: stderr).

    Returns:
        A :class:`FinetuneResult`.

    Raises:
        ConfigError: the run directory already holds a finished or started run and ``resume`` is off,
            or ``resume`` is on and there is no checkpoint.
    """
    import torch
    from rich.console import Console
    from transformers import set_seed

    from tuneforge import data as data_stage
    from tuneforge import methods
    from tuneforge.data.pack import Collator
    from tuneforge.models.load import load_model
    from tuneforge.train import callbacks as cb
    from tuneforge.train.args import loader_items, packing_enabled, resolve_precision, training_arguments
    from tuneforge.train.estimate import MIB, check_run
    from tuneforge.train.manifest import build_manifest, peak_rss_mb
    from tuneforge.train.trainer import TuneforgeTrainer

    cfg = config if isinstance(config, RunConfig) else load_config(config)
    console = console or Console(stderr=True)
    run = RunDir(cfg.run_dir)
    is_main = int(os.environ.get("RANK", "0")) == 0
    checkpoint = _check_run_dir(run, resume)
    started = time.perf_counter()

    # --- setup
    precision = resolve_precision(cfg.training.precision)
    set_seed(cfg.training.seed)
    model, tokenizer, base_path = load_model(cfg.model, **methods.load_kwargs(cfg.method))

    # --- data
    prepared = data_stage.prepare(cfg.data, tokenizer, max_seq_length=cfg.training.max_seq_length, seed=cfg.training.seed)
    if is_main:
        run.root.mkdir(parents=True, exist_ok=True)
        run.config.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
        prepared.report.write(run.data_report)
        _write_jsonl(run.test_split, prepared.test_examples)
        _write_jsonl(run.validation_split, prepared.validation_examples)
        console.print(prepared.report.table())

    # --- method
    model = methods.apply(model, cfg.method)
    trainable, total = methods.trainable_parameters(model)
    packing = packing_enabled(cfg)
    if cfg.data.packing == "on" and not packing:
        raise ConfigError(f"data.packing: 'on' cannot be used with method '{cfg.method.name}' (virtual tokens)")
    train_rows = loader_items(prepared.train, cfg, seed=cfg.training.seed)
    eval_rows = loader_items(prepared.validation, cfg, seed=0)
    plan = check_run(cfg, model, train_rows, precision=precision, packed=packing, console=console if is_main else None)

    # --- train
    args = training_arguments(cfg, run.checkpoints, precision=precision, has_validation=bool(eval_rows),
                              gradient_checkpointing=plan.gradient_checkpointing)
    trainer = TuneforgeTrainer(
        model=model, args=args, train_dataset=train_rows, eval_dataset=eval_rows or None,
        data_collator=Collator(tokenizer.pad_token_id, packed=packing), processing_class=tokenizer,
        selective_head=cfg.method.name not in methods.PROMPT_LEARNING,
        validation_scorer=_validation_scorer(cfg, tokenizer, prepared.validation_examples),
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # added by disable_tqdm; the rich callback prints instead
    tokens_seen = lambda: trainer.tokens_seen  # noqa: E731
    meter = cb.ThroughputMeter(tokens_seen)
    trainer.add_callback(cb.RankReportCallback(run.root / "ranks", tokens_seen, model))
    if is_main:
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        # The metrics log first: it adds tokens_per_second to the logs the progress bar shows.
        trainer.add_callback(cb.MetricsLogCallback(run.metrics, meter))
        trainer.add_callback(cb.RichProgressCallback(console))
        trainer.add_callback(TensorBoardCallback(SummaryWriter(log_dir=str(run.tensorboard))))
    early = cfg.training.early_stopping
    if early is not None:
        from transformers import EarlyStoppingCallback

        trainer.add_callback(EarlyStoppingCallback(early.patience, early.threshold))
    output = trainer.train(resume_from_checkpoint=checkpoint)
    train_seconds = time.perf_counter() - started

    result = FinetuneResult(
        run_dir=run.root, global_step=trainer.state.global_step,
        train_loss=output.training_loss, tokens_per_second=meter.overall(),
    )
    if not is_main:
        return result

    # --- save
    weights = run.model if cfg.method.name == "full" else run.adapter
    _save(trainer.model, tokenizer, weights)
    result.manifest = build_manifest(
        cfg, prepared.sources, wall_seconds=train_seconds, tokens_seen=trainer.tokens_seen,
        tokens_per_second=meter.overall(), peak_rss_mb=peak_rss_mb(), global_step=trainer.state.global_step,
        train_loss=output.training_loss, precision=precision, packing=packing,
        trainable_parameters=trainable, total_parameters=total, world_size=args.world_size,
        estimated_peak_mb=round(plan.memory.total / MIB), gradient_checkpointing=plan.gradient_checkpointing,
    )
    run.manifest.write_text(json.dumps(result.manifest, indent=2), encoding="utf-8")
    console.print(
        f"[bold green]trained[/] {trainer.state.global_step} steps in {train_seconds:.0f}s, "
        f"{meter.overall():.0f} tokens/s ({precision}, packing {'on' if packing else 'off'}); weights in {weights}"
    )

    # --- evaluate
    if cfg.eval.enabled and prepared.test_examples:
        result.eval = _evaluate(cfg, trainer.model, tokenizer, base_path, run, prepared, console)
        manifest = json.loads(run.manifest.read_text())
        manifest["eval_seconds"] = round(time.perf_counter() - started - train_seconds, 1)
        run.manifest.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        result.manifest = manifest
    return result


def latest_complete_checkpoint(folder: Path) -> str | None:
    """The newest checkpoint that was completely written.

    transformers' ``get_last_checkpoint`` picks the highest-numbered folder,
    which after a kill mid-save is half written. The Trainer writes
    ``trainer_state.json`` last, so its presence marks a complete checkpoint.
    """
    if not folder.is_dir():
        return None
    done = [p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()]
    return str(max(done, key=lambda p: int(p.name.split("-")[-1]))) if done else None


def _check_run_dir(run: RunDir, resume: bool) -> str | None:
    checkpoint = latest_complete_checkpoint(run.checkpoints)
    if resume:
        if checkpoint is None:
            raise ConfigError(f"--resume: no complete checkpoint in {run.checkpoints} to resume from")
        return checkpoint
    if run.root.exists() and any(run.root.iterdir()) and int(os.environ.get("RANK", "0")) == 0:
        raise ConfigError(
            f"run directory {run.root} already exists; continue it with --resume, "
            f"or start a new run with --set name=<new name>"
        )
    return None


def _validation_scorer(cfg: RunConfig, tokenizer: Any, examples: list[dict]) -> Any:
    """Generation metrics on validation, when early stopping watches one (not the loss)."""
    early = cfg.training.early_stopping
    if early is None or early.metric.removeprefix("eval_") in {"loss", "perplexity"} or not examples:
        return None
    from tuneforge.eval import score

    metric = early.metric.removeprefix("eval_")
    return lambda model: score(model, tokenizer, examples, cfg.eval, metrics=[metric])


def _save(model: Any, tokenizer: Any, folder: Path) -> None:
    """Save weights + tokenizer + a generation config that stops at the end-of-turn token."""
    from tuneforge.eval.generate import stop_token_ids

    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    gen = inner.generation_config
    stop_ids = stop_token_ids(tokenizer)  # eos + the template's end-of-turn token
    gen.eos_token_id = stop_ids if len(stop_ids) > 1 else stop_ids[0]
    gen.pad_token_id = tokenizer.pad_token_id
    gen.save_pretrained(str(folder))


def _evaluate(cfg: RunConfig, model: Any, tokenizer: Any, base_path: str, run: RunDir, prepared: Any, console: Any) -> Any:
    """Tuned vs baseline on the held-out test split (eval resolves ``eval.baseline``: for an adapter,
    the base is the same weights with the adapter switched off, so nothing is loaded twice)."""
    from tuneforge.eval import run as run_eval
    from tuneforge.models.load import LoadedModel

    model.eval()
    tuned = LoadedModel(model, tokenizer, base_path, run=run, adapter_path=run.adapter if run.adapter.is_dir() else None)
    result = run_eval(
        cfg.eval, tuned=tuned, examples=prepared.test_examples, out_dir=run.eval,
        data_format=prepared.format, metrics_log=run.metrics, seed=cfg.training.seed,
        max_seq_length=cfg.training.max_seq_length,
    )
    console.print(result.summary_table())
    return result


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
