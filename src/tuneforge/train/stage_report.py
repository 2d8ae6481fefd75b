"""The report of a multi-stage run: its lineage, then base, each stage and the final model side by side.

Written into the chain's folder (``RUN/report.md``, ``RUN/stages_eval.json``, ``RUN/report/stages.png``)
once every stage has finished. The comparison uses the first stage's held-out test split, so every
model answers the same examples the task was trained for (:mod:`tuneforge.eval.chain`).
"""

from __future__ import annotations

import json
from typing import Any

from tuneforge.config.schema import RunConfig
from tuneforge.errors import EvalError
from tuneforge.rundir import RunDir
from tuneforge.train.context import RunContext


def stage_report(ctx: RunContext, cfg: RunConfig, configs: list[RunConfig], console: Any) -> Any:
    """Write the chain's report; returns the :class:`tuneforge.eval.chain.ChainComparison` (``None`` when eval is off)."""
    lines = [f"# Multi-stage run {cfg.name}", "", "## Stages", "",
             "| stage | objective | started from | steps | train loss | stage's own eval |", "|---|---|---|---|---|---|"]
    for stage_cfg in configs:
        run = RunDir(stage_cfg.run_dir)
        manifest = json.loads(run.manifest.read_text(encoding="utf-8")) if run.manifest.is_file() else {}
        own = f"stages/{stage_cfg.name}/eval/report.md" if (run.eval / "report.md").is_file() else "-"
        lines.append(f"| {stage_cfg.name} | {stage_cfg.training.objective} | {stage_cfg.model.name_or_path} | "
                     f"{manifest.get('global_step', '-')} | {manifest.get('train_loss', '-')} | {own} |")
    lines.append("")
    comparison = None
    if cfg.eval.enabled:
        lines += ["## Base, each stage and the final model on the same held-out examples", ""]
        try:
            comparison = _compare(ctx, cfg, configs)
        except EvalError as exc:
            lines += [f"Comparison skipped: {exc}", ""]
        else:
            ctx.write_json("stages_eval.json", comparison.to_dict())
            plot = "report/stages.png" if (ctx.root / "report" / "stages.png").is_file() else None
            lines += comparison.markdown(plot)
            console.print("\n".join(comparison.markdown()), markup=False, highlight=False)
    ctx.write_text("report.md", "\n".join(lines))
    return comparison


def _compare(ctx: RunContext, cfg: RunConfig, configs: list[RunConfig]) -> Any:
    from tuneforge.eval.chain import compare_chain
    from tuneforge.eval.jsonl import parse_json_lines
    from tuneforge.models import LoadedModel, load, load_model

    first = RunDir(configs[0].run_dir)
    if not first.test_split.is_file():
        raise EvalError(f"the first stage has no held-out test split ({first.test_split})")
    examples = parse_json_lines(first.test_split.read_text(encoding="utf-8"), first.test_split)
    if not examples:
        raise EvalError("the first stage's test split is empty (set data.split.test)")

    def base() -> Any:
        model, tokenizer, path = load_model(configs[0].model)
        return LoadedModel(model, tokenizer, path)

    models = [("base", base)] + [(c.name, lambda c=c: load(c.run_dir, merge=True)) for c in configs]
    (ctx.root / "report").mkdir(mode=0o700, exist_ok=True)  # the plot is drawn by matplotlib, as eval/ plots are
    return compare_chain(models, examples, cfg.eval, seed=cfg.training.seed,
                         max_seq_length=cfg.training.max_seq_length, plot_path=ctx.root / "report" / "stages.png")
