"""tuneforge tune on the tiny model: trials are real runs, the best config trains, the study resumes."""

import optuna
from optuna.trial import TrialState

from tuneforge import finetune, load_config
from tuneforge.search import tune


def test_three_trials_write_best_config_that_trains(search_config, tmp_path):
    result = tune(search_config(), trials=3)
    trials = result.study.get_trials()
    assert len(trials) == 3 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    for t in trials:  # every trial is a real run directory
        assert (tmp_path / "runs" / "tiny" / f"tiny-t{t.number}" / "config.yaml").is_file()
    best = load_config(result.best_config)
    assert best.search is None and best.name == "tiny-best"
    assert best.training.learning_rate == result.best_params["training.learning_rate"]
    assert best.method.r == result.best_params["method.r"]
    assert (result.study_dir / "report.md").read_text().count("| tiny") == 0  # table rows are trials
    assert "history.png" in (result.study_dir / "report.md").read_text()
    trained = finetune(best)
    assert trained.global_step == 6
