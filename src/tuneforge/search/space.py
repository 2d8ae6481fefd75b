"""The ``search.space`` of a config as optuna distributions, and a trial's sample as ``--set`` overrides.

The schema (:class:`tuneforge.config.schema.SearchConfig`) already checked each key names a
config field and each distribution's bounds; :func:`check_values` then validates the extreme
values of every distribution through :func:`load_config`, the same path a trial's config takes,
so a value the field refuses (``method.r: {uniform: [0.5, 2]}``) fails before any trial runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import optuna.distributions as od

from tuneforge.config.load import load_config
from tuneforge.config.schema import Distribution, SearchConfig
from tuneforge.errors import ConfigError


def to_optuna(dist: Distribution) -> od.BaseDistribution:
    """The optuna distribution of one searched field."""
    if dist.kind == "loguniform":
        return od.FloatDistribution(*dist.loguniform, log=True)
    if dist.kind == "uniform":
        return od.FloatDistribution(*dist.uniform)
    if dist.kind == "int":
        return od.IntDistribution(*dist.int)
    # Optuna stores categorical choices as JSON-able scalars; lists/dicts go in as their JSON text.
    return od.CategoricalDistribution([_scalar(v) for v in dist.choice])


def optuna_space(search: SearchConfig) -> dict[str, od.BaseDistribution]:
    return {key: to_optuna(dist) for key, dist in search.space.items()}


def suggest(trial: Any, search: SearchConfig) -> dict[str, Any]:
    """Sample every searched field through the trial's public ``suggest_*`` API."""
    params: dict[str, Any] = {}
    for key, dist in search.space.items():
        if dist.kind == "choice":
            params[key] = trial.suggest_categorical(key, [_scalar(v) for v in dist.choice])
        elif dist.kind == "int":
            params[key] = trial.suggest_int(key, *dist.int)
        else:
            params[key] = trial.suggest_float(key, *getattr(dist, dist.kind), log=dist.kind == "loguniform")
    return params


def grid(search: SearchConfig) -> dict[str, list[Any]]:
    """The grid sampler's space; only ``choice`` distributions have a finite grid."""
    ranged = [key for key, dist in search.space.items() if dist.kind != "choice"]
    if ranged:
        raise ConfigError(f"search.sampler 'grid' needs 'choice' distributions only; {', '.join(ranged)} "
                          "are ranges (use choice: [...] or sampler tpe/random)")
    return {key: [_scalar(v) for v in dist.choice] for key, dist in search.space.items()}


def overrides(params: dict[str, Any]) -> list[str]:
    """``dotted.key=value`` strings for :func:`load_config` (values as YAML flow text)."""
    return [f"{key}={json.dumps(_unscalar(value))}" for key, value in params.items()]


def check_values(config: str | Path, search: SearchConfig, extra: Iterable[str] = ()) -> None:
    """Validate each distribution's bounds (and every choice) as values of their field.

    Raises:
        ConfigError: naming the searched key, the value and what the field says about it.
    """
    problems: list[str] = []
    for key, dist in search.space.items():
        values = dist.choice if dist.kind == "choice" else list(getattr(dist, dist.kind))
        for value in values:
            try:
                load_config(config, [*extra, *overrides({key: _scalar(value)})])
            except ConfigError as exc:
                problems += [f"search.space.{key}: value {value!r}: {p}" for p in exc.problems]
    if problems:
        raise ConfigError(problems, str(config))


def _scalar(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def _unscalar(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
