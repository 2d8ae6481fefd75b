"""Hostile command lines: unknown commands, broken configs, and what `validate` must catch before training."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tuneforge import ConfigError
from tuneforge.cli.main import main
from tuneforge.config import load_config
from tuneforge.config.preflight import check_run_folder, preflight

LABELS = ["billing", "shipping", "refund"]


@pytest.fixture
def config(tmp_path, tiny_model_dir):
    """``config(**sections)`` writes a valid tiny-model config (chat data labelled with LABELS) and returns its path."""

    def make(**sections):
        data = tmp_path / "tickets.jsonl"
        rows = [{"messages": [{"role": "user", "content": f"ticket {i}"}, {"role": "assistant", "content": LABELS[i % 3]}]}
                for i in range(30)]
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        cfg = {"name": "run", "out_dir": str(tmp_path / "runs"), "model": str(tiny_model_dir),
               "method": {"name": "lora", "r": 4, "target_modules": ["q_proj", "v_proj"]},
               "data": {"train": str(data)}, "training": {"max_steps": 1, "max_seq_length": 64},
               "eval": {"enabled": True, "labels": LABELS}}
        for key, value in sections.items():
            merge = key != "method" and isinstance(cfg.get(key), dict) and isinstance(value, dict)
            cfg[key] = {**cfg[key], **value} if merge else value
        path = tmp_path / "run.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    return make


def _one_line_error(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# --------------------------------------------------------------------------- 9: unknown commands


def test_misspelled_command_is_a_usage_error_with_the_closest_command(capsys):
    assert main(["trian", "run.yaml"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "No such command 'trian'" in err and "did you mean 'train'?" in err.lower()


def test_unknown_option_is_a_usage_error(capsys):
    assert main(["validate", "--no-such-flag", "x.yaml"]) == 2
    err = capsys.readouterr().err
    assert "No such option: --no-such-flag" in err and "Traceback" not in err


# --------------------------------------------------------------------------- 10: broken configs, one line, exit 2


def test_train_with_a_missing_data_file(config, tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"
    assert main(["train", str(config(data={"train": str(missing)}))]) == 2
    line = _one_line_error(capsys)
    assert f"data.train[0].path: data file not found: {missing}" in line
    assert not (tmp_path / "runs" / "run").exists()  # refused before the run folder or the model


def test_train_with_a_directory_as_config(tmp_path, capsys):
    assert main(["train", str(tmp_path)]) == 2
    assert f"{tmp_path} is a directory, not a config file" in _one_line_error(capsys)


def test_train_with_an_empty_config(tmp_path, capsys):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert main(["train", str(path)]) == 2
    assert f"{path}: the config file is empty" in _one_line_error(capsys)


def test_train_with_a_yaml_list_config(tmp_path, capsys):
    path = tmp_path / "list.yaml"
    path.write_text("- model\n- data\n")
    assert main(["train", str(path)]) == 2
    assert f"{path}:1: the config must be a mapping of sections, got list" in _one_line_error(capsys)


def test_train_with_a_utf16_config(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_bytes("data:\n  train: x.jsonl\n".encode("utf-16"))
    assert main(["train", str(path)]) == 2
    assert f"{path}: not UTF-8 text" in _one_line_error(capsys)


# --------------------------------------------------------------------------- 8: validate catches what train would trip on


def test_a_valid_config_passes_validate(config, capsys):
    assert main(["validate", str(config())]) == 0
    assert "config OK" in capsys.readouterr().out


def test_validate_refuses_out_dir_that_is_a_file(config, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["validate", str(config(out_dir=str(blocker)))]) == 2
    assert f"out_dir: the run folder {blocker / 'run'} cannot be created: {blocker} is a file" in _one_line_error(capsys)


def test_validate_refuses_out_dir_under_a_file(config, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["validate", str(config(out_dir=str(blocker / "deeper" / "runs")))]) == 2
    assert f"{blocker} is a file, not a folder" in _one_line_error(capsys)


def test_out_dir_that_cannot_be_written():
    # /proc refuses new folders even to root (tests here run as root, so chmod would prove nothing).
    problems = check_run_folder(Path("/proc/tuneforge-runs/run"))
    assert len(problems) == 1 and "is not writable" in problems[0] and "/proc" in problems[0]


def test_too_little_free_disk_space(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    [problem] = check_run_folder(tmp_path / "runs" / "run", min_free_bytes=free * 2 + (1 << 40))
    assert problem.startswith("out_dir: only ") and "MiB free on the disk of" in problem
    assert check_run_folder(tmp_path / "runs" / "run", min_free_bytes=1) == []


def test_validate_refuses_target_modules_that_match_nothing(config, capsys):
    path = config(method={"name": "lora", "target_modules": ["q_proj", "v_prj"]})
    assert main(["validate", str(path)]) == 2
    line = _one_line_error(capsys)
    assert "method.target_modules: 'v_prj' matches no module" in line and "did you mean 'v_proj'?" in line
    assert "'q_proj'" not in line  # the matching entry is fine


def test_target_modules_of_ia3_and_full_names_pass(config):
    preflight(load_config(config(method={"name": "ia3", "target_modules": ["k_proj", "model.layers.0.mlp.down_proj"]})))


def test_validate_refuses_labels_that_match_no_reference(config, capsys):
    assert main(["validate", str(config(eval={"labels": ["positive", "negative"]}))]) == 2
    line = _one_line_error(capsys)
    assert "eval.labels match none of the 30 reference answers" in line and "'billing' (10x)" in line


def test_validate_refuses_references_outside_the_label_set(config, capsys):
    assert main(["validate", str(config(eval={"labels": ["billing", "shipping"]}))]) == 2
    line = _one_line_error(capsys)
    assert "10 reference answers are not in eval.labels" in line and "'refund' (10x)" in line


def test_preflight_reports_every_problem_at_once(config, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg = load_config(config(out_dir=str(blocker), method={"name": "lora", "target_modules": ["nothing"]},
                             data={"train": str(tmp_path / "gone.jsonl")}))
    with pytest.raises(ConfigError) as err:
        preflight(cfg)
    assert [p.split(":")[0] for p in err.value.problems] == ["out_dir", "data.train[0].path", "method.target_modules"]


def test_train_runs_preflight_before_loading_the_model(config, tmp_path, capsys):
    path = config(method={"name": "lora", "target_modules": ["q_prj"]})
    assert main(["train", str(path)]) == 2
    assert "'q_prj' matches no module" in _one_line_error(capsys)
    assert not (tmp_path / "runs" / "run").exists()
