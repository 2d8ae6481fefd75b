"""Config loading: every problem reported at once with file, line and field; tutorial names; overrides."""

from pathlib import Path

import pytest

from tuneforge import ConfigError, load_config
from tuneforge.cli.main import main

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


BASE = "data:\n  train: data.jsonl\n"


def test_every_shipped_config_validates():
    configs = sorted(ROOT.glob("examples/*.yaml")) + sorted(ROOT.glob("configs/*.yaml"))
    assert configs
    for path in configs:
        cfg = load_config(path)
        for source in cfg.data.train:
            assert Path(source.path).exists(), f"{path}: {source.path}"


def test_unknown_key_names_line_field_and_closest_key(tmp_path):
    path = write(tmp_path, BASE + "training:\n  learning_rte: 1e-4\n  epochs: three\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert f"{path}:4: unknown field 'training.learning_rte'; did you mean 'learning_rate'?" in text
    assert f"{path}:5: field 'training.epochs'" in text  # both problems at once


def test_wrong_literal_lists_allowed_values(tmp_path):
    with pytest.raises(ConfigError, match=r"run.yaml:4: field 'training.lr_scheduler': got 'cosin'; expected 'linear', 'cosine'"):
        load_config(write(tmp_path, BASE + "training:\n  lr_scheduler: cosin\n"))


def test_unknown_method_and_method_fields(tmp_path):
    with pytest.raises(ConfigError, match="unknown value 'lorra'; expected one of 'full', 'lora', 'dora'"):
        load_config(write(tmp_path, BASE + "method: lorra\n"))
    with pytest.raises(ConfigError, match="unknown field 'method.rank'"):
        load_config(write(tmp_path, BASE + "method:\n  name: lora\n  rank: 8\n"))


def test_missing_data_section(tmp_path):
    with pytest.raises(ConfigError, match="missing required field 'data'"):
        load_config(write(tmp_path, "name: x\n"))


def test_tutorial_names_are_translated(tmp_path, caplog):
    path = write(tmp_path, BASE + "training:\n  evaluation_strategy: steps\n  num_train_epochs: 2\n  fp16: false\n"
                               "  bf16: true\n  per_device_train_batch_size: 4\n  lr_scheduler_type: linear\n"
                               "method:\n  name: lora\n  lora_r: 8\n")
    cfg = load_config(path)
    t = cfg.training
    assert (t.eval_strategy, t.epochs, t.precision, t.per_device_batch_size, t.lr_scheduler, cfg.method.r) == (
        "steps", 2, "bf16", 4, "linear", 8)
    assert "write training.eval_strategy" in caplog.text


def test_yaml_words_no_on_off_stay_words(tmp_path):
    cfg = load_config(write(tmp_path, BASE + "  packing: off\ntraining:\n  save_strategy: no\n"))
    assert cfg.data.packing == "off" and cfg.training.save_strategy == "no"


def test_overrides_and_their_errors(tmp_path):
    path = write(tmp_path, BASE)
    cfg = load_config(path, ["training.learning_rate=1e-4", "method=dora", "training.save_strategy=no"])
    assert cfg.learning_rate == 1e-4 and cfg.method.name == "dora" and cfg.training.save_strategy == "no"
    with pytest.raises(ConfigError, match=r"--set training.epochs=abc: field 'training.epochs'"):
        load_config(path, ["training.epochs=abc"])
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        load_config(path, ["training.epochs"])


def test_defaults_follow_the_tutorials(tmp_path):
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.method.name == "lora" and cfg.learning_rate == 2e-4
    assert (cfg.training.weight_decay, cfg.training.warmup_ratio, cfg.training.epochs) == (0.01, 0.03, 3)
    assert load_config(write(tmp_path, BASE + "method: full\n")).learning_rate == 2e-5


def test_batches_are_sized_by_tokens_unless_rows_are_set(tmp_path):
    assert load_config(write(tmp_path, BASE)).training.token_budget == 384
    assert load_config(write(tmp_path, BASE + "training: {per_device_batch_size: 4}\n")).training.token_budget is None
    assert load_config(write(tmp_path, BASE + "training: {batch_tokens: 2048}\n")).training.token_budget == 2048
    with pytest.raises(ConfigError, match="batch_tokens.*per_device_batch_size"):
        load_config(write(tmp_path, BASE + "training: {batch_tokens: 2048, per_device_batch_size: 4}\n"))


def test_relative_data_paths_resolve_against_the_config_folder(tmp_path):
    (tmp_path / "data.jsonl").write_text("{}\n")
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.data.train[0].path == str((tmp_path / "data.jsonl").resolve())


def test_cross_field_early_stopping_needs_evaluation(tmp_path):
    with pytest.raises(ConfigError, match="early_stopping needs training.eval_strategy"):
        load_config(write(tmp_path, BASE + "training:\n  early_stopping: {patience: 2}\n"))


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"run.yaml:\d+: not valid YAML"):
        load_config(write(tmp_path, "data:\n  train: [a\n"))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_cli_reports_config_errors_without_traceback(tmp_path, capsys):
    code = main(["validate", str(write(tmp_path, BASE + "trainig: {}\n"))])
    err = capsys.readouterr().err
    assert code == 2 and "did you mean 'training'" in err and "Traceback" not in err
