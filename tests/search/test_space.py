"""The search section as optuna objects: distributions, samplers, pruners, overrides."""

import optuna
import pytest

from tuneforge.config.schema import SearchConfig
from tuneforge.search import space
from tuneforge.search.study import load_study

SEARCH = {"space": {"training.learning_rate": {"loguniform": [1e-5, 1e-3]}, "method.r": {"choice": [8, 16]},
                    "training.seed": {"int": [1, 4]}, "training.warmup_ratio": {"uniform": [0.0, 0.2]}}}


def test_distributions_map_to_optuna():
    dists = space.optuna_space(SearchConfig.model_validate(SEARCH))
    assert dists["training.learning_rate"] == optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)
    assert dists["method.r"] == optuna.distributions.CategoricalDistribution([8, 16])
    assert dists["training.seed"] == optuna.distributions.IntDistribution(1, 4)
    assert dists["training.warmup_ratio"] == optuna.distributions.FloatDistribution(0.0, 0.2)


def test_list_choices_round_trip_as_overrides():
    search = SearchConfig.model_validate({"space": {"method.target_modules": {"choice": [["q_proj", "v_proj"], "all-linear"]}}})
    trial = optuna.create_study().ask()
    params = space.suggest(trial, search)
    assert space.overrides(params)[0] in ('method.target_modules=["q_proj", "v_proj"]', 'method.target_modules="all-linear"')


@pytest.mark.parametrize("sampler, pruner, classes", [
    ("tpe", "median", (optuna.samplers.TPESampler, optuna.pruners.MedianPruner)),
    ("random", "hyperband", (optuna.samplers.RandomSampler, optuna.pruners.HyperbandPruner)),
    ("grid", "none", (optuna.samplers.GridSampler, optuna.pruners.NopPruner)),
])
def test_sampler_and_pruner_are_chosen_by_config(tmp_path, sampler, pruner, classes):
    search = {"space": {"method.r": {"choice": [8, 16]}}, "sampler": sampler, "pruner": pruner, "metric": "accuracy"}
    study = load_study(SearchConfig.model_validate(search), "s", f"sqlite:///{tmp_path / 'study.db'}")
    assert isinstance(study.sampler, classes[0]) and isinstance(study.pruner, classes[1])
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE  # accuracy: higher is better
