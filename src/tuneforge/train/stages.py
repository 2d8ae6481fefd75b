"""A multi-stage run (``stages:``): each stage an ordinary run below ``RUN/stages/``, chained by weights.

``runs/NAME/`` holds the chain's config, status, manifest (the lineage) and report;
``runs/NAME/stages/01-sft/``, ``02-dpo/`` are run directories like any other (own
lock, status, checkpoints, resume), and stage ``i`` starts from stage ``i-1``'s
weights. Running the config again skips finished stages; ``resume`` continues the
stage that was interrupted after a checkpoint.
"""

from __future__ import annotations

from typing import Any, Sequence

from tuneforge.config.schema import RunConfig
from tuneforge.rundir import RunDir
from tuneforge.train.context import RunContext
from tuneforge.train.result import FinetuneResult
from tuneforge.train.resume import latest_complete_checkpoint


def run_stages(cfg: RunConfig, finetune: Any, *, resume: bool, console: Any,
               callbacks: Sequence[Any] = ()) -> FinetuneResult:
    """Run each stage of ``cfg.stages`` in order with ``finetune`` and record the chain.

    Args:
        finetune: The single-run function (:func:`tuneforge.train.pipeline.finetune`), called per stage.
        resume: Continue an interrupted stage from its newest complete checkpoint.

    Returns:
        The final stage's :class:`FinetuneResult`, with every stage's result in ``stages``.

    Raises:
        ConfigError: a stage merged over the top-level config is invalid.
        RunDirError: the chain or a stage's folder forbids it (in use, another config, unfinished without ``resume``).
    """
    from tuneforge.config.preflight import preflight
    from tuneforge.config.stages import expand_stages

    configs = expand_stages(cfg)
    preflight(configs[0])  # later stages start from runs that do not exist yet: each is checked when it starts
    # The chain's folder has no checkpoints of its own: its stages do, so it is never "resumed" itself.
    with RunContext.open(cfg, resume=False) as ctx:
        if not ctx.finished:
            ctx.begin_stages([c.name for c in configs])
        results = []
        for stage_cfg in configs:
            stage = RunDir(stage_cfg.run_dir)
            interrupted = stage.recorded_state() != "finished" and latest_complete_checkpoint(stage.checkpoints)
            results.append(finetune(stage_cfg, resume=bool(resume and interrupted), console=console,
                                    callbacks=callbacks))
        final = results[-1]
        final.stages = results
        if ctx.is_main and not ctx.finished:
            ctx.write_json("manifest.json", chain_manifest(cfg, configs, results))
            from tuneforge.train.stage_report import stage_report

            stage_report(ctx, cfg, configs, console)
            ctx.mark_finished()
    return final


def chain_manifest(cfg: RunConfig, configs: list[RunConfig], results: list[FinetuneResult]) -> dict[str, Any]:
    """The top-level manifest: the lineage, one entry per stage (its folder, objective, parent, numbers)."""
    from tuneforge.models.from_run import weights_digest

    stages = []
    for stage_cfg, result in zip(configs, results):
        stages.append({
            "stage": stage_cfg.name, "objective": stage_cfg.training.objective, "run_dir": str(result.run_dir),
            "started_from": stage_cfg.model.name_or_path, "global_step": result.global_step,
            "train_loss": result.train_loss, "weights_sha256": weights_digest(RunDir(result.run_dir)),
            "parent": result.manifest.get("parent"),
        })
    return {"name": cfg.name, "model": cfg.model.name_or_path, "stages": stages, "final": str(results[-1].run_dir)}
