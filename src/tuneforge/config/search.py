"""The ``search:`` section: hyperparameter search for ``tuneforge tune``."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, Field, field_validator, model_validator

from tuneforge.config._types import Float, Int, Section as _Section


class Distribution(_Section):
    """One searched field: exactly one of the keys below, e.g. ``{loguniform: [1e-5, 1e-3]}``."""

    loguniform: tuple[Float, Float] | None = Field(None, description="[low, high], 0 < low < high, sampled on a log scale.")
    uniform: tuple[Float, Float] | None = Field(None, description="[low, high], low < high.")
    int: tuple[Int, Int] | None = Field(None, description="[low, high] integers, low < high, both included.")
    choice: list[Any] | None = Field(None, description="The values to choose from (at least one).")

    @model_validator(mode="after")
    def _one_kind(self) -> "Distribution":
        kinds = [k for k in ("loguniform", "uniform", "int", "choice") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of loguniform, uniform, int, choice (got {kinds or 'none'})")
        kind = kinds[0]
        if kind == "choice":
            if not self.choice:
                raise ValueError("choice: the list of values is empty; give at least one value")
            return self
        low, high = getattr(self, kind)
        if kind == "loguniform" and low <= 0:
            raise ValueError(f"loguniform: low must be > 0 for a log scale (got [{low}, {high}])")
        if low >= high:
            raise ValueError(f"{kind}: low must be < high (got [{low}, {high}])")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("loguniform", "uniform", "int", "choice") if getattr(self, k) is not None)


class SearchConfig(_Section):
    """Hyperparameter search (``tuneforge tune``): dotted config keys mapped to distributions."""

    space: dict[str, Distribution] = Field(..., description="Dotted config key -> distribution, e.g. "
                                           "training.learning_rate: {loguniform: [1e-5, 1e-3]}.")
    metric: str = Field("loss", description="Validation metric the search optimises: loss or a generation metric.")
    direction: Literal["minimize", "maximize"] | None = Field(
        None, description="minimize or maximize; default: minimize for loss/perplexity, maximize otherwise."
    )
    sampler: Literal["tpe", "random", "grid"] = Field("tpe", description="How trials are chosen (grid: choice only).")
    pruner: Literal["median", "hyperband", "none"] = Field("median", description="Stops hopeless trials early.")
    startup_trials: Int = Field(2, ge=0, description="Trials run to the end before the median pruner prunes.")
    trials: Int = Field(8, gt=0, description="Finished trials the study aims for (--trials overrides).")
    seed: Int = Field(0, description="Seed of the sampler.")
    heartbeat_seconds: Int = Field(
        10, gt=0, description="Workers beat this often; a trial silent for 3x this (a killed worker) is marked failed."
    )

    @field_validator("space")
    @classmethod
    def _known_keys(cls, space: dict[str, Distribution]) -> dict[str, Distribution]:
        if not space:
            raise ValueError("the search space is empty; map at least one dotted config key to a distribution")
        problems = [p for key in space if (p := _field_problem(key))]
        if problems:
            raise ValueError("; ".join(problems))
        return space

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        from tuneforge.config.schema import EarlyStoppingConfig  # schema imports this module

        return EarlyStoppingConfig._known_metric(value).removeprefix("eval_")  # same names, checked the same way

    @property
    def maximize(self) -> bool:
        if self.direction is not None:
            return self.direction == "maximize"
        return self.metric not in ("loss", "perplexity")


def _field_problem(dotted: str) -> str | None:
    """Why ``dotted`` names no field of a run config (with the closest name), or None when it does."""
    import difflib

    from tuneforge.config.schema import RunConfig  # schema imports this module

    models: list[type[BaseModel]] = [RunConfig]
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
        fields = {name: f for m in models for name, f in m.model_fields.items()}
        if part not in fields or part == "search":
            close = difflib.get_close_matches(part, sorted(set(fields) - {"search"}), n=1, cutoff=0.6)
            hint = f"; did you mean '{'.'.join(parts[:depth] + [close[0]])}'?" if close else ""
            return f"'{dotted}' names no config field{hint}"
        models = _sub_models(fields[part].annotation)
        if not models and depth < len(parts) - 1:
            return f"'{dotted}': '{'.'.join(parts[:depth + 1])}' is a value, not a section"
    if models:
        return f"'{dotted}' is a whole section; search one of its fields, e.g. '{dotted}.{next(iter(models[0].model_fields))}'"
    return None


def _sub_models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _sub_models(arg)]
