"""Hostile configs: non-finite numbers, duplicate keys, booleans for numbers, non-UTF-8 files, odd shapes."""

import typing

import pytest
from pydantic import BaseModel, BeforeValidator, TypeAdapter, ValidationError

from tuneforge import ConfigError, load_config
from tuneforge.config.schema import Float, Int, RunConfig, _refuse_bool

BASE = "data:\n  train: data.jsonl\n"


def write(tmp_path, text, name="run.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("value", [".inf", ".nan", "-.inf", ".Inf", ".NaN"])
def test_non_finite_learning_rate_is_refused_with_line_and_field(tmp_path, value):
    path = write(tmp_path, BASE + f"training:\n  learning_rate: {value}\n")
    with pytest.raises(ConfigError, match=rf"{path}:4: field 'training.learning_rate': .*finite"):
        load_config(path)


@pytest.mark.parametrize(
    "section, field, line",
    [("training", "weight_decay", 4), ("method", "alpha", 4), ("eval", "forgetting", 5)],
)
def test_non_finite_values_are_refused_in_every_section(tmp_path, section, field, line):
    body = {"forgetting": "  forgetting:\n    max_rise: .nan\n"}.get(field, f"  {field}: .inf\n")
    if section == "method":
        body = "  name: lora\n" + body
        line += 1
    path = write(tmp_path, BASE + f"{section}:\n" + body)
    with pytest.raises(ConfigError, match=r"finite") as err:
        load_config(path)
    assert f"{path}:{line}" in str(err.value)


def test_non_finite_override_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"--set training.max_grad_norm=\.inf: field 'training.max_grad_norm'"):
        load_config(write(tmp_path, BASE), ["training.max_grad_norm=.inf"])


def _sections():
    seen, todo = set(), [RunConfig]
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        for field in cls.model_fields.values():
            todo += _models_in(field.annotation)
    return seen


def _models_in(annotation):
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _bare_numbers(annotation):
    """int/float inside an annotation that do not carry the boolean-refusing validator."""
    if annotation in (int, float):
        return [annotation]
    if typing.get_origin(annotation) is typing.Annotated:
        return []  # Int / Float (or another constrained alias): checked by the tests above
    return [a for arg in typing.get_args(annotation) for a in _bare_numbers(arg)]


def test_every_numeric_field_refuses_non_finite_values_and_booleans():
    sections = _sections()
    assert len(sections) > 10  # walked the whole schema
    assert all(cls.model_config.get("allow_inf_nan") is False for cls in sections)
    # Pydantic moves an Annotated field's validators into FieldInfo.metadata (unions keep them inline).
    refuses = lambda f: any(isinstance(m, BeforeValidator) and m.func is _refuse_bool for m in f.metadata)  # noqa: E731
    bare = [f"{cls.__name__}.{name}" for cls in sections for name, f in cls.model_fields.items()
            if (f.annotation in (int, float) and not refuses(f)) or (f.annotation not in (int, float) and _bare_numbers(f.annotation))]
    assert bare == [], f"use Int/Float from tuneforge.config.schema for {bare}"
    for name, alias in (("Int", Int), ("Float", Float)):
        with pytest.raises(ValidationError, match="got the boolean true"):
            TypeAdapter(alias).validate_python(True)


def test_duplicate_top_level_key_names_both_lines(tmp_path):
    path = write(tmp_path, BASE + "training:\n  epochs: 1\ntraining:\n  max_steps: 5\n")
    with pytest.raises(ConfigError, match=rf"{path}:5: duplicate key 'training' \(first written on line 3\)"):
        load_config(path)


def test_duplicate_nested_key_names_both_lines(tmp_path):
    path = write(tmp_path, BASE + "training:\n  epochs: 1\n  seed: 3\n  epochs: 2\n")
    with pytest.raises(ConfigError, match=rf"{path}:6: duplicate key 'training.epochs' \(first written on line 4\)"):
        load_config(path)


@pytest.mark.parametrize(
    "section, field",
    [("training", "per_device_batch_size"), ("training", "max_steps"), ("training", "learning_rate"),
     ("training", "epochs"), ("training", "seed"), ("training", "warmup_ratio"), ("eval", "bootstrap_samples")],
)
def test_booleans_are_refused_for_numeric_fields(tmp_path, section, field):
    path = write(tmp_path, BASE + f"{section}:\n  {field}: true\n")
    with pytest.raises(ConfigError, match=rf"{path}:4: field '{section}.{field}': .*expected a number, got the boolean true"):
        load_config(path)


def test_booleans_are_refused_in_nested_numeric_fields(tmp_path):
    path = write(tmp_path, BASE + "method:\n  name: lora\n  r: false\neval:\n  generation:\n    max_new_tokens: true\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert f"{path}:5: field 'method.r'" in text and f"{path}:8: field 'eval.generation.max_new_tokens'" in text


def test_numbers_and_boolean_fields_still_load(tmp_path):
    cfg = load_config(write(tmp_path, BASE + "training:\n  learning_rate: 1e-4\n  max_steps: 5\n  gradient_checkpointing: true\n"))
    assert cfg.training.learning_rate == 1e-4 and cfg.training.max_steps == 5 and cfg.training.gradient_checkpointing is True


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_utf16_config_is_a_clear_error(tmp_path, encoding):
    path = tmp_path / "run.yaml"
    path.write_bytes(BASE.encode(encoding))
    with pytest.raises(ConfigError, match=rf"{path}: not UTF-8 text"):
        load_config(path)


def test_binary_config_is_a_clear_error(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ConfigError, match=rf"{path}: not UTF-8 text"):
        load_config(path)


def test_directory_empty_file_and_list_configs(tmp_path):
    with pytest.raises(ConfigError, match=rf"^invalid config: {tmp_path} is a directory, not a config file$"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match=r"the config file is empty"):
        load_config(write(tmp_path, "", "empty.yaml"))
    with pytest.raises(ConfigError, match=r"list.yaml:1: the config must be a mapping of sections, got list$"):
        load_config(write(tmp_path, "- data\n- train\n", "list.yaml"))
