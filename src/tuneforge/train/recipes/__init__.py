"""Training recipes, one short module per objective, registered in :mod:`._registry`."""

from tuneforge.train.recipes._registry import RECIPES, get_recipe, list_recipes

__all__ = ["RECIPES", "get_recipe", "list_recipes"]
