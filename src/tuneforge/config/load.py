"""Load a run config from YAML, apply ``--set`` overrides, and report every problem at once.

Errors name the file, the line and the dotted field, suggest the closest key
for a typo, and translate names users bring from transformers tutorials
(``evaluation_strategy``, ``num_train_epochs``, ``fp16: true``) to ours.
"""

from __future__ import annotations

import difflib
import logging
import re
import typing
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import BaseModel, ValidationError

from tuneforge.config.schema import RunConfig
from tuneforge.errors import ConfigError

log = logging.getLogger("tuneforge.config")

# Names from transformers TrainingArguments / other tools -> (our field, value transform or None).
_TRAINING_ALIASES: dict[str, tuple[str, Any]] = {
    "evaluation_strategy": ("eval_strategy", None),  # renamed in transformers 4.46, removed in 5
    "num_train_epochs": ("epochs", None),
    "num_epochs": ("epochs", None),
    "per_device_train_batch_size": ("per_device_batch_size", None),
    "batch_size": ("per_device_batch_size", None),
    "micro_batch_size": ("per_device_batch_size", None),
    "lr_scheduler_type": ("lr_scheduler", None),
    "lr": ("learning_rate", None),
    "optim": ("optimizer", None),
    "max_seq_len": ("max_seq_length", None),
    "max_length": ("max_seq_length", None),
    "cutoff_len": ("max_seq_length", None),
    "sequence_len": ("max_seq_length", None),
    "fp16": ("precision", lambda v: "fp16" if v else None),
    "bf16": ("precision", lambda v: "bf16" if v else None),
    "tf32": ("precision", lambda v: None),
    "gradient_accumulation": ("gradient_accumulation_steps", None),
    "early_stopping_patience": ("early_stopping", lambda v: {"patience": v}),
}
_METHOD_ALIASES = {"lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout", "lora_target_modules": "target_modules"}
_REFUSED = {
    "no_cuda": "tuneforge uses the accelerator it finds; remove training.no_cuda",
    "use_cpu": "tuneforge uses the accelerator it finds; remove training.use_cpu",
    "output_dir": "the run directory is out_dir/name at the top level; remove training.output_dir",
}


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false.

    YAML 1.1 (PyYAML's default) reads ``no``/``off``/``on``/``yes`` as booleans, so
    ``save_strategy: no`` or ``packing: off`` would arrive as False instead of the word.
    """


_Yaml12Loader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.copy().items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _parse(text: str):
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass


def load_config(path: str | Path | None = None, overrides: Iterable[str] = (), *, data: dict | None = None) -> RunConfig:
    """Load, override and validate a run config.

    Args:
        path: A YAML file. Relative data and model paths in it are resolved
            against the file's folder; ``out_dir`` stays relative to the working directory.
        overrides: ``dotted.key=value`` strings; values are parsed as YAML.
        data: A config as a dict instead of a file (used by the Python API).

    Returns:
        The frozen, validated :class:`RunConfig`.

    Raises:
        ConfigError: listing every problem, each with file, line and field.

    Example:
        >>> cfg = load_config("examples/quickstart.yaml", ["training.max_steps=10"])
    """
    source = str(path) if path is not None else "<dict>"
    lines: dict[tuple, int] = {}
    if path is not None:
        path = Path(path)
        text = _read_text(path)
        try:
            node = yaml.compose(text, Loader=_Yaml12Loader)
            duplicates = _duplicate_keys(node, str(path))
            if duplicates:
                raise ConfigError(duplicates, source)
            raw = _parse(text)
            lines = _line_index(node)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
        if raw is None:
            raise ConfigError(f"{path}: the config file is empty; it needs at least `data: {{train: FILE}}`")
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}:1: the config must be a mapping of sections, got {type(raw).__name__}")
    else:
        raw = dict(data or {})
    problems: list[str] = []
    override_keys: dict[tuple, str] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"--set {item!r}: expected dotted.key=value")
            continue
        dotted = tuple(key.strip().split("."))
        try:
            parsed = _parse(value) if value != "" else None
        except yaml.YAMLError:
            parsed = value
        _assign(raw, dotted, parsed)
        override_keys[dotted] = item
    raw, notes = _translate_aliases(raw)
    for note in notes:
        log.warning("%s: %s", source, note)
    if path is not None:
        raw = _resolve_paths(raw, Path(path).parent)
        if isinstance(raw.get("stages"), list):  # a stage's data files are relative to the config file too
            raw["stages"] = [_resolve_paths(s, Path(path).parent) if isinstance(s, dict) else s for s in raw["stages"]]
    cfg = None
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as exc:
        problems += [_describe(err, raw, lines, override_keys, source) for err in exc.errors()]
    if cfg is not None and cfg.stages and not problems:
        problems += _stage_problems(cfg, lines, override_keys, source)
    if problems:
        raise ConfigError(problems, source)
    return cfg


def _stage_problems(cfg: RunConfig, lines: dict, override_keys: dict, source: str) -> list[str]:
    """Validate each stage merged over the top-level config; name fields ``stages[i].x`` at the stage's line.

    A field the stage does not set came from the top level, so its top-level line is named instead.
    """
    from tuneforge.config.stages import stage_raws

    problems = []
    for i, raw in enumerate(stage_raws(cfg)):
        try:
            RunConfig.model_validate(raw)
        except ValidationError as exc:
            prefix = ("stages", i)
            stage_lines = {**lines, **{k[2:]: v for k, v in lines.items() if k[:2] == prefix}}
            stage_keys = {**override_keys, **{k[2:]: v for k, v in override_keys.items() if k[:2] == ("stages", str(i))}}
            problems += [_describe(err, raw, stage_lines, stage_keys, source, prefix=f"stages[{i}].")
                         for err in exc.errors()]
    return problems


# --------------------------------------------------------------------------- helpers


def _read_text(path: Path) -> str:
    """The config's text, or a ConfigError saying why it is not a readable UTF-8 file."""
    if path.is_dir():
        raise ConfigError(f"{path} is a directory, not a config file")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save the config as UTF-8 YAML") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config: {exc.strerror or exc}") from None


def _duplicate_keys(node: yaml.Node | None, source: str, prefix: tuple = ()) -> list[str]:
    """Every key written twice in one mapping, at any depth.

    PyYAML keeps the last of two equal keys, so a second ``training:`` block
    would silently drop the first one; name both lines instead.
    """
    problems: list[str] = []
    if isinstance(node, yaml.MappingNode):
        first: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            path = prefix + (key,)
            line = key_node.start_mark.line + 1
            if key is not None and key != "<<":  # `<<` merge keys may repeat
                if key in first:
                    dotted = ".".join(str(p) for p in path)
                    problems.append(f"{source}:{line}: duplicate key '{dotted}' (first written on line {first[key]}); write it once")
                else:
                    first[key] = line
            problems += _duplicate_keys(value_node, source, path)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            problems += _duplicate_keys(item, source, prefix + (i,))
    return problems


def _line_index(node: yaml.Node | None, prefix: tuple = ()) -> dict[tuple, int]:
    """Map every dotted key path of a YAML document to its 1-based line."""
    out: dict[tuple, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = prefix + (key_node.value,)
            out[path] = key_node.start_mark.line + 1
            out.update(_line_index(value_node, path))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[prefix + (i,)] = item.start_mark.line + 1
            out.update(_line_index(item, prefix + (i,)))
    return out


def _assign(raw: dict, dotted: tuple, value: Any) -> None:
    """Set ``raw[a][b]...= value`` for an override, expanding shorthand forms on the way."""
    node: Any = raw
    for part, nxt in zip(dotted[:-1], dotted[1:]):
        key: Any = int(part) if isinstance(node, list) and part.isdigit() else part
        child = node[key] if (isinstance(node, list) and key < len(node)) or (isinstance(node, dict) and key in node) else None
        if isinstance(child, str):  # `model: NAME`, `method: lora`, `train: file.jsonl`
            child = {"model": {"name_or_path": child}, "method": {"name": child}}.get(part, {"path": child})
        if part in ("train", "validation", "test") and nxt.isdigit() and not isinstance(child, list):
            child = [child] if child is not None else []
        if child is None or not isinstance(child, (dict, list)):
            child = {}
        node[key] = child
        node = child
    last: Any = dotted[-1]
    if isinstance(node, list) and last.isdigit():
        while len(node) <= int(last):
            node.append({})
        last = int(last)
    node[last] = value


def _translate_aliases(raw: dict) -> tuple[dict, list[str]]:
    notes: list[str] = []
    training = raw.get("training")
    if isinstance(training, dict):
        training = dict(training)
        for old, (new, transform) in _TRAINING_ALIASES.items():
            if old not in training:
                continue
            value = training.pop(old)
            if transform is not None:
                value = transform(value)
                if value is None:
                    notes.append(f"training.{old} is not a tuneforge field and was ignored; use training.precision")
                    continue
            if new in training:
                notes.append(f"training.{old} ignored: training.{new} is also set")
                continue
            training[new] = value
            notes.append(f"training.{old} is the transformers name; write training.{new}: {value!r}")
        raw = {**raw, "training": training}
    method = raw.get("method")
    if isinstance(method, dict):
        method = dict(method)
        for old, new in _METHOD_ALIASES.items():
            if old in method and new not in method:
                method[new] = method.pop(old)
                notes.append(f"method.{old} is the PEFT/axolotl name; write method.{new}")
        raw = {**raw, "method": method}
    return raw, notes


def _resolve_paths(raw: dict, base: Path) -> dict:
    """Resolve relative data/model paths against the config file's folder, when they exist there."""

    def fix(p: Any) -> Any:
        if isinstance(p, str) and not Path(p).is_absolute() and (base / p).exists():
            return str((base / p).resolve())
        return p

    raw = dict(raw)
    data = raw.get("data")
    if isinstance(data, dict):
        data = dict(data)
        for split in ("train", "validation", "test"):
            sources = data.get(split)
            if isinstance(sources, (str, dict)):
                sources = [sources]
            if isinstance(sources, list):
                data[split] = [
                    fix(s) if isinstance(s, str) else ({**s, "path": fix(s.get("path"))} if isinstance(s, dict) else s)
                    for s in sources
                ]
        raw["data"] = data
    model = raw.get("model")
    if isinstance(model, str):
        raw["model"] = fix(model)
    elif isinstance(model, dict) and "name_or_path" in model:
        raw["model"] = {**model, "name_or_path": fix(model["name_or_path"])}
    distill = raw.get("distill")
    if isinstance(distill, dict):  # a teacher folder or run and the prompt file, like the model and the data
        raw["distill"] = {**distill, **{k: fix(distill[k]) for k in ("teacher", "prompts") if isinstance(distill.get(k), str)}}
    ev = raw.get("eval")
    if isinstance(ev, dict) and isinstance(ev.get("forgetting"), dict) and ev["forgetting"].get("data"):
        raw["eval"] = {**ev, "forgetting": {**ev["forgetting"], "data": fix(ev["forgetting"]["data"])}}
    sec = raw.get("security")
    if isinstance(sec, dict) and sec.get("key_file"):
        raw["security"] = {**sec, "key_file": fix(sec["key_file"])}
    return raw


def _strip_tags(loc: tuple, raw: Any) -> tuple:
    """Turn pydantic's error location into the user's key path.

    Pydantic inserts union tags ('lora' in ('method', 'lora', 'r')) and type
    names ('list[str]') that are not keys of the YAML; drop them.
    """
    out: list = []
    node = raw
    for part in loc:
        if isinstance(node, dict):
            if part in node:
                out.append(part)
                node = node[part]
            elif part != node.get("name"):
                out.append(part)  # a missing or unknown key: it names the field
                node = None
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            out.append(part)
            node = node[part]
    return tuple(out)


def _submodels(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _submodels(arg)]


def _allowed_keys(loc: tuple, raw: Any) -> list[str]:
    """Field names allowed at the parent of ``loc`` (for typo suggestions)."""
    models: list[type[BaseModel]] = [RunConfig]
    node = raw
    for part in loc[:-1]:
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        models = [sub for m in models if part in m.model_fields for sub in _submodels(m.model_fields[part].annotation)]
        node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and "name" in node:  # a discriminated union: keep the chosen variant
            chosen = [
                m for m in models
                if "name" in m.model_fields and node["name"] in typing.get_args(m.model_fields["name"].annotation)
            ]
            models = chosen or models
    return sorted({name for m in models for name in m.model_fields})


def _describe(err: dict, raw: dict, lines: dict, override_keys: dict, source: str, prefix: str = "") -> str:
    loc = _strip_tags(tuple(err["loc"]), raw)
    dotted = prefix + (".".join(str(p) for p in loc) or "<root>")
    where = source
    for probe in (loc, loc[:-1], loc[:-2]):
        if probe in override_keys:
            where = f"--set {override_keys[probe]}"
            break
        if probe in lines:
            where = f"{source}:{lines[probe]}"
            break
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc, raw)
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"{where}: unknown field '{dotted}'{hint} (allowed here: {', '.join(allowed)})"
    if kind == "missing":
        return f"{where}: missing required field '{dotted}'"
    msg = err["msg"]
    if kind == "union_tag_invalid":
        msg = f"unknown value {err['ctx']['tag']!r}; expected one of {err['ctx']['expected_tags']}"
    if kind == "literal_error":
        msg = f"got {err.get('input')!r}; expected {err['ctx']['expected']}"
    return f"{where}: field '{dotted}': {msg}"
