"""data.balance in a whole run on the tiny model: the run trains, and its data report counts the labels."""

from __future__ import annotations

import json

import pytest

from tuneforge import finetune, load_config
from tuneforge.rundir import RunDir

from .conftest import LABELS


@pytest.mark.parametrize("balance", ["oversample", "loss_weights"])
def test_a_balanced_run_trains_and_reports_labels(run_config, balance):
    cfg = load_config(run_config(f"balanced-{balance}", data={"balance": balance},
                                 eval={"enabled": False, "labels": LABELS}))
    result = finetune(cfg)
    assert result.global_step == 6 and result.train_loss is not None
    report = json.loads(RunDir(result.run_dir).data_report.read_text())["balance"]
    assert report["method"] == balance and report["labels_from"] == "eval.labels"
    assert set(report["before"]) == set(LABELS)
    if balance == "oversample":
        assert len(set(report["after"].values())) == 1  # every label as often as the most frequent one
    else:
        assert set(report["weights"]) == set(LABELS)
