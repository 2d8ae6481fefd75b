"""The ``stages:`` section: one config that chains training stages (``[sft, dpo]``).

Each stage is a partial config deep-merged over the top-level one (its ``data``,
``training``, ``method`` and ``eval``), or a bare objective name. Stage ``i`` trains
in ``out_dir/name/stages/NN-<stage name>/``, an ordinary run directory, and starts
from stage ``i-1``'s weights (``model:`` is that run directory; see
:mod:`tuneforge.models.from_run`). Which objectives exist is the recipe table's
business: nothing here names one.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator, model_validator

from tuneforge.config._types import Section

if TYPE_CHECKING:
    from tuneforge.config.schema import RunConfig

MERGED_SECTIONS = ("data", "training", "method", "eval")
"""The top-level sections a stage may override."""


class StageConfig(Section):
    """One stage of a multi-stage run: an objective and the sections it changes."""

    objective: str = Field(..., description="The stage's training.objective (sft, dpo, ...).")
    name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Stage name; its folder is stages/NN-<name> (default: the objective).",
    )
    data: dict[str, Any] | None = Field(None, description="Overrides of the data section (e.g. the preference pairs).")
    training: dict[str, Any] | None = Field(None, description="Overrides of the training section.")
    method: dict[str, Any] | str | None = Field(None, description="Overrides of the method section.")
    eval: dict[str, Any] | None = Field(None, description="Overrides of the eval section.")

    @model_validator(mode="before")
    @classmethod
    def _from_objective(cls, value: Any) -> Any:
        return {"objective": value} if isinstance(value, str) else value

    @field_validator("objective")
    @classmethod
    def _known_objective(cls, value: str) -> str:
        from tuneforge.train.recipes import list_recipes

        if value not in list_recipes():
            raise ValueError(f"no recipe {value!r}; implemented objectives: {', '.join(list_recipes())}")
        return value

    @property
    def label(self) -> str:
        return self.name or self.objective


def stage_folder(index: int, stage: StageConfig) -> str:
    """``01-sft``: numbered, so the folders list in the order the stages run."""
    return f"{index + 1:02d}-{stage.label}"


def check_stage_names(stages: list[StageConfig]) -> list[StageConfig]:
    labels = [s.label for s in stages]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(f"stage names repeat ({', '.join(repeated)}); give each stage its own name")
    return stages


def check_stage_methods(raws: list[dict[str, Any]]) -> None:
    """Only the last stage may train adapters that cannot be merged into the weights the next stage starts from.

    Raises:
        ValueError: names the stage; found when the config loads, not after that stage has trained.
    """
    for i, raw in enumerate(raws[:-1]):
        if raw["method"].get("name") == "bottleneck":
            raise ValueError(
                f"stages[{i}].method.name: 'bottleneck' adapters cannot be merged into the weights stages[{i + 1}] "
                "starts from; use them in the last stage only, or method lora/dora here"
            )


def stage_raw(top: dict[str, Any], index: int, stage: StageConfig, run_dir: Path) -> dict[str, Any]:
    """The whole config of stage ``index`` as a dict: ``top`` with the stage's sections merged in.

    Args:
        top: The top-level config as a dict (``model_dump(mode="json")``).
        run_dir: The multi-stage run's directory (``out_dir/name``).
    """
    raw = {k: copy.deepcopy(v) for k, v in top.items() if k not in ("stages", "search")}
    for section in MERGED_SECTIONS:
        override = getattr(stage, section)
        if isinstance(override, str):  # `method: lora`
            override = {"name": override}
        if override is None:
            continue
        if section == "method" and override.get("name", raw[section].get("name")) != raw[section].get("name"):
            raw[section] = copy.deepcopy(override)  # another method: the old one's fields do not apply
        else:
            raw[section] = deep_merge(raw[section], override)
    raw["training"]["objective"] = stage.objective
    raw["name"] = stage_folder(index, stage)
    raw["out_dir"] = str(run_dir / "stages")
    return raw


def chain_from(raws: list[dict[str, Any]], base_model: dict[str, Any]) -> list[dict[str, Any]]:
    """Point each stage after the first at its predecessor's run directory (absolute: stored configs reload anywhere).

    Pins (``sha256``), ``gguf_file`` and ``revision`` describe the base model's files, not a run's,
    so they stay with the first stage.
    """
    out = [raws[0]] if raws else []
    for previous, raw in zip(raws, raws[1:]):
        parent = (Path(previous["out_dir"]) / previous["name"]).absolute()
        kept = {k: base_model[k] for k in ("trust_remote_code", "allow_pickle", "attn_implementation") if k in base_model}
        out.append({**raw, "model": {"name_or_path": str(parent), **kept}})
    return out


def stage_raws(cfg: "RunConfig") -> list[dict[str, Any]]:
    """Every stage's whole config as a dict, chained (not yet validated)."""
    top = cfg.model_dump(mode="json")
    raws = [stage_raw(top, i, stage, cfg.run_dir) for i, stage in enumerate(cfg.stages or [])]
    return chain_from(raws, top["model"])


def expand_stages(cfg: "RunConfig") -> list["RunConfig"]:
    """The validated config of each stage, in order.

    Raises:
        ConfigError: a merged stage is not a valid config (each problem named ``stages[i].field``).
    """
    from pydantic import ValidationError

    from tuneforge.config.schema import RunConfig
    from tuneforge.errors import ConfigError

    out, problems = [], []
    for i, raw in enumerate(stage_raws(cfg)):
        try:
            out.append(RunConfig.model_validate(raw))
        except ValidationError as exc:
            problems += [f"stages[{i}].{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
    if problems:
        raise ConfigError(problems)
    return out


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in: mappings merge key by key, anything else (lists too) replaces."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
