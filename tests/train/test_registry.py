"""The recipe registry and the config checks that run before any model is loaded."""

from typing import get_args

import pytest

from tuneforge import ConfigError, load_config
from tuneforge.config.schema import Objective
from tuneforge.train.recipes import RECIPES, get_recipe, list_recipes


def test_the_registry_lists_sft_and_every_schema_objective_has_a_recipe():
    assert list_recipes() == ["sft", "dpo", "reward", "kto", "orpo", "grpo", "distill"]
    # The schema accepts exactly the objectives that run.
    assert set(get_args(Objective)) == set(RECIPES)
    from tuneforge.train.recipes.sft import run

    assert get_recipe("sft") is run


def test_an_unknown_objective_is_a_config_error_listing_what_exists():
    with pytest.raises(ConfigError, match=r"training.objective: no recipe 'ppo'; implemented objectives: sft, dpo, reward, kto, orpo, grpo, distill"):
        get_recipe("ppo")


def _problems(tmp_path, **sections):
    (tmp_path / "d.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    with pytest.raises(ConfigError) as err:
        load_config(data={"data": {"train": str(tmp_path / "d.jsonl")}, **sections})
    return str(err.value)


def test_the_schema_refuses_objectives_without_a_recipe(tmp_path):
    assert "training.objective" in _problems(tmp_path, training={"objective": "ppo"})


def test_packing_on_with_virtual_tokens_fails_in_the_schema(tmp_path):
    msg = _problems(tmp_path, method="prefix", data={"train": str(tmp_path / "d.jsonl"), "packing": "on"})
    assert "data.packing 'on'" in msg and "method.name 'prefix'" in msg


@pytest.mark.parametrize("metric", ["acuracy", "eval_f1"])
def test_early_stopping_on_an_unknown_metric_fails_in_the_schema(tmp_path, metric):
    msg = _problems(tmp_path, training={"eval_strategy": "steps", "save_strategy": "steps",
                                        "early_stopping": {"patience": 1, "metric": metric}})
    assert "training.early_stopping.metric" in msg and "accuracy" in msg


@pytest.mark.parametrize("metric", ["eval_loss", "loss", "accuracy", "eval_exact_match"])
def test_known_early_stopping_metrics_pass(tmp_path, metric):
    (tmp_path / "d.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    cfg = load_config(data={"data": {"train": str(tmp_path / "d.jsonl")},
                            "training": {"eval_strategy": "steps", "early_stopping": {"patience": 1, "metric": metric}}})
    assert cfg.training.early_stopping.metric == metric


def test_every_recipe_takes_the_same_arguments():
    # The pipeline calls each recipe alike (the search passes its pruning callback through `callbacks`).
    import inspect

    from tuneforge.train.recipes import get_recipe
    from tuneforge.train.recipes._registry import list_recipes

    for name in list_recipes():
        params = inspect.signature(get_recipe(name)).parameters
        assert list(params) == ["ctx", "cfg", "console", "callbacks"], name
