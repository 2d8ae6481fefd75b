"""The one table of training recipes: ``training.objective`` name -> the function that runs it.

A recipe is a plain function ``run(ctx, cfg, console, callbacks=()) -> FinetuneResult`` in its own
module of this package (torchtune's ``_recipe_registry.py``). Entries are
``"module:function"`` strings, imported only when chosen, so listing the recipes
imports no torch. A new objective adds one line here, its module, and its name to
:data:`tuneforge.config.schema.Objective` (the schema accepts only names that run;
a test checks the two agree).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from tuneforge.errors import ConfigError

RECIPES: dict[str, str] = {
    "sft": "tuneforge.train.recipes.sft:run",
    "dpo": "tuneforge.train.recipes.dpo:run",
    "reward": "tuneforge.train.recipes.reward:run",
    "kto": "tuneforge.train.recipes.kto:run",
    "orpo": "tuneforge.train.recipes.orpo:run",
    "grpo": "tuneforge.train.recipes.grpo:run",
    "distill": "tuneforge.train.recipes.distill:run",
}


def list_recipes() -> list[str]:
    """Names of the implemented objectives."""
    return list(RECIPES)


def get_recipe(name: str) -> Callable[..., Any]:
    """The recipe function for an objective.

    Raises:
        ConfigError: no recipe has that name (the message lists the ones that exist).
    """
    if name not in RECIPES:
        raise ConfigError(f"training.objective: no recipe {name!r}; implemented objectives: {', '.join(RECIPES)}")
    module, attr = RECIPES[name].split(":")
    return getattr(importlib.import_module(module), attr)
