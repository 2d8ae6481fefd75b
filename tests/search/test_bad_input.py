"""Bad search input is a clear error (file, field, what is wrong), before any trial runs."""

import pytest

from tuneforge.cli.main import main

LR = {"training.learning_rate": {"loguniform": [1e-4, 1e-2]}}


@pytest.mark.parametrize("search, message", [
    ({"space": {"training.learnig_rate": {"uniform": [0.1, 0.2]}}},
     "'training.learnig_rate' names no config field; did you mean 'training.learning_rate'?"),
    ({"space": {"method.rank": {"choice": [4, 8]}}}, "'method.rank' names no config field"),
    ({"space": {"training.learning_rate": {"loguniform": [0, 1e-3]}}}, "loguniform: low must be > 0"),
    ({"space": {"training.learning_rate": {"loguniform": [1e-3, 1e-4]}}}, "loguniform: low must be < high"),
    ({"space": {"training.seed": {"int": [3, 3]}}}, "int: low must be < high"),
    ({"space": {"method.r": {"choice": []}}}, "choice: the list of values is empty"),
    ({"space": {"method.r": {"choice": [4], "int": [1, 2]}}}, "give exactly one of"),
    ({"space": {}}, "the search space is empty"),
    ({"space": LR, "direction": "up"}, "field 'search.direction'"),
    ({"space": LR, "metric": "acuracy"}, "unknown metric 'acuracy'"),
    ({"space": {"method.r": {"uniform": [0.5, 2.5]}}}, "search.space.method.r: value 0.5"),
    ({"space": {"training.learning_rate": {"uniform": [1e-4, 1e-3]}}, "sampler": "grid"}, "needs 'choice' distributions"),
])
def test_bad_search_section_is_a_clear_error(search_config, capsys, search, message):
    config = search_config(search)
    assert main(["tune", str(config), "--trials", "1"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert message in err
    assert "Traceback" not in err
    assert not (config.parent / "runs" / "tiny" / "tiny-t0").exists()  # nothing trained


def test_line_of_the_bad_field_is_named(search_config, capsys):
    config = search_config({"space": {"training.learning_rate": {"loguniform": [0, 1]}}})
    assert main(["tune", str(config)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    line = next(i for i, text in enumerate(config.read_text().splitlines(), 1) if "loguniform" in text)
    assert f"{config}:{line}: field 'search.space.training.learning_rate.loguniform'" in err or f"{config}:{line - 1}:" in err


@pytest.mark.parametrize("args, message", [
    (["--trials", "0"], "an empty study finds nothing"),
    (["--timeout", "0"], "give a positive number of seconds"),
])
def test_empty_study_is_refused(search_config, capsys, args, message):
    assert main(["tune", str(search_config()), *args]) == 2
    assert message in capsys.readouterr().err


def test_config_without_search_section_or_evaluation(search_config, capsys):
    config = search_config()
    text = config.read_text()
    config.write_text(text[: text.index("search:")])
    assert main(["tune", str(config)]) == 2
    assert "no 'search:' section" in capsys.readouterr().err
    assert main(["tune", str(search_config(eval_strategy="no"))]) == 2
    assert "search needs training.eval_strategy 'steps' or 'epoch'" in capsys.readouterr().err
