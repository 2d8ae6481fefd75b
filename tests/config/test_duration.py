"""Durations in configs (training.max_time): the forms accepted, and bad ones refused naming file, line and field."""

import pytest

from tuneforge import ConfigError, load_config
from tuneforge.config.duration import format_duration, parse_duration


@pytest.mark.parametrize("text, seconds", [
    ("90s", 90.0), ("5m", 300.0), ("1h30m", 5400.0), ("1h 30m 15s", 5415.0), ("2.5h", 9000.0), ("45", 45.0),
    (12, 12.0), (0.5, 0.5), (" 10S ", 10.0),
])
def test_durations_read_as_seconds(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "m", "30m1h", "-5m", "0", "0s", "five minutes", "1d", "5m5"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_round_trips():
    for seconds in (5400, 90, 10, 3600, 3661):
        assert parse_duration(format_duration(seconds)) == seconds


def test_max_time_errors_name_the_field(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data:\n  train: data.jsonl\ntraining:\n  max_time: 5 minutes\n")
    with pytest.raises(ConfigError, match=r"run.yaml:4: field 'training.max_time'.*'90s', '5m', '1h30m'"):
        load_config(path)
    path.write_text("data:\n  train: data.jsonl\ntraining:\n  max_time: true\n")
    with pytest.raises(ConfigError, match=r"field 'training.max_time'.*boolean"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"--set training.max_time=-1m: field 'training.max_time'"):
        load_config(path, ["training.max_time=-1m"])
    assert load_config(path, ["training.max_time=1h30m"]).training.max_time == 5400.0
