"""Model cards: a Hugging Face-style ``README.md`` (YAML metadata + sections) for a run or an export.

The card says where the weights came from and how good they are: base model and its
SHA-256, method and objective, data sources with SHA-256 and licence, the evaluation
(base vs tuned with confidence intervals), the forgetting check, known limits, and the
audit-log entry of the training run. Everything is read from the run directory
(``config.yaml``, ``manifest.json``, ``data_report.json``, ``eval/metrics.json``) and the
audit log; nothing is recomputed but the weights' hashes (and the base model's, when no
audit entry has it).

The metadata is built with ``huggingface_hub.ModelCardData`` and parsed back before the
file is written, so the Hub (and ``ModelCard.load``) read what we meant.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from tuneforge.errors import ExportError
from tuneforge.rundir import RunDir
from tuneforge.security.at_rest import read_text

CARD_FILE = "README.md"
# SPDX-style licence ids recognised in a data folder's README (the Hub's lower-case ids).
_LICENCE_ID = re.compile(
    r"\b(cc0-1\.0|cc-by(?:-nc)?(?:-sa|-nd)?-[1-4]\.0|apache-2\.0|mit|bsd-[23]-clause|[al]?gpl-[23]\.[01]"
    r"|mpl-2\.0|odc-by|odbl|pddl|unlicense|openrail)\b",
    re.IGNORECASE,
)


def data_licence(path: str | Path) -> str | None:
    """The licence of a data file, found beside it.

    Looked up, in order: a ``license`` field in the YAML front matter of the folder's
    ``README.md`` (a Hugging Face dataset card), the first line of a ``LICENSE``/``COPYING``
    file, a licence id in a README paragraph that starts with "License:" or under a "License" heading.
    """
    from huggingface_hub.repocard import metadata_load

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    readme = folder / "README.md"
    if readme.is_file():
        meta = metadata_load(readme) or {}
        if meta.get("license"):
            return str(meta["license"])
    for name in ("LICENSE", "LICENSE.txt", "LICENSE.md", "COPYING"):
        if (folder / name).is_file():
            first = next((ln.strip() for ln in (folder / name).read_text(errors="replace").splitlines() if ln.strip()), "")
            found = _LICENCE_ID.search(first)
            return found.group(1).lower() if found else first[:80] or None
    if readme.is_file():
        return _licence_in_text(readme.read_text(errors="replace"))
    return None


def _licence_in_text(text: str) -> str | None:
    """A licence id in a paragraph that starts with "License:", or in a "License" section of a README."""
    in_section = False
    for para in re.split(r"\n\s*\n", text):
        if para.lstrip().startswith("#"):
            in_section = bool(re.match(r"\s*#+\s*licen[cs]e", para, re.IGNORECASE))
        if in_section or re.match(r"\s*licen[cs]e\s*:", para, re.IGNORECASE):
            if found := _LICENCE_ID.search(para):
                return found.group(1).lower()
    return None


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(read_text(path)) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _hub_id(name: str) -> str | None:
    """The Hub id for the card's ``base_model``: an alias's upstream id, or the name when it is one."""
    from tuneforge.models import ALIASES

    if name in ALIASES:
        return ALIASES[name].hub_id or None
    return name if re.fullmatch(r"[\w.-]+/[\w.-]+", name) and not Path(name).exists() else None


def _audit_entries(run_dir: Path, log: Path) -> tuple[dict | None, dict | None]:
    """The training run's ``started`` entry and its end (if any) in the audit log."""
    from tuneforge.security.audit import STARTED, AuditError, AuditLog

    try:
        entries = AuditLog(log).entries()
    except AuditError:
        return None, None
    target = str(run_dir.resolve())
    starts = [e for e in entries if e.get("action") == "train" and e.get("status") == STARTED
              and (e.get("details") or {}).get("run_dir") == target]
    if not starts:
        return None, None
    start = starts[-1]
    end = next((e for e in entries if (e.get("details") or {}).get("started") == start["hash"]), None)
    return start, end


def _num(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"


def build_model_card(source: str | Path, dest: str | Path, *, audit_log: str | Path | None = None,
                     usage: str | None = None) -> Any:
    """Build the model card of ``source`` (a run directory, or an adapter/model folder) as it sits in ``dest``.

    Args:
        source: The run directory the weights come from (other folders get a card without data or eval).
        dest: The folder the card describes (its files are hashed, except the card itself).
        audit_log: The audit log holding the run's entry; default ``$TUNEFORGE_AUDIT_LOG`` or
            ``<runs folder>/audit.jsonl``.
        usage: Markdown appended as a "How to use" section (the export's serving commands).

    Returns:
        A ``huggingface_hub.ModelCard``.
    """
    from huggingface_hub import EvalResult as HubEvalResult
    from huggingface_hub import ModelCard, ModelCardData

    from tuneforge.eval.result import EvalResult, fmt, fmt_ci
    from tuneforge.security.audit import log_path
    from tuneforge.security.lineage import file_digests, model_digest

    source, dest = Path(source), Path(dest)
    run = RunDir(source)
    is_run = run.config.is_file()
    cfg = None
    if is_run:
        from tuneforge.config.load import load_config

        cfg = load_config(run.config)
    manifest = _read_json(run.manifest) or {}
    report = _read_json(run.data_report) or {}
    metrics = _read_json(run.eval / "metrics.json")
    result = EvalResult.from_dict(metrics) if metrics else None
    log = Path(audit_log) if audit_log is not None else log_path(source.resolve().parent)
    start, end = _audit_entries(source, log) if is_run else (None, None)
    name = source.resolve().name

    # --- base model and its hash (from the audit entry when it has it: hashing a big model is slow)
    base_name = cfg.model.name_or_path if cfg else _adapter_base(source)
    base = (start or {}).get("details", {}).get("base_model") or (model_digest(cfg.model) if cfg else {"name": base_name})
    # --- data sources
    sources = report.get("sources") or [{"path": p, "sha256": h} for p, h in (manifest.get("data_sha256") or {}).items()]
    for s in sources:
        s["licence"] = data_licence(s["path"]) if Path(s["path"]).exists() else None
    licences = sorted({s["licence"] for s in sources if s["licence"]})

    weights_dir = RunDir(dest).weights if RunDir(dest).is_run() else dest
    artifacts = file_digests(weights_dir, exclude=(CARD_FILE,)) if weights_dir.is_dir() else {}
    library = "peft" if (weights_dir / "adapter_config.json").is_file() else (
        "transformers" if (weights_dir / "config.json").is_file() else None)
    method = cfg.method.name if cfg else "unknown"

    eval_results = []
    if result is not None:
        dataset = Path(sources[0]["path"]).name if sources else "held-out"
        for metric, mc in result.metrics.items():
            if mc.tuned is not None and not math.isnan(mc.tuned):
                eval_results.append(HubEvalResult(
                    task_type="text-generation", dataset_type=dataset, dataset_name=dataset, dataset_split="test",
                    metric_type=metric, metric_value=mc.tuned,
                ))
    data = ModelCardData(
        base_model=_hub_id(base_name) if base_name else None,
        library_name=library,
        tags=["tuneforge", method, *(["gguf"] if any(f.endswith(".gguf") for f in artifacts) else [])],
        datasets=[Path(s["path"]).name for s in sources] or None,  # names, not this machine's paths
        license=licences[0] if len(licences) == 1 else None,
        model_name=name,
        eval_results=eval_results or None,
    )

    lines = [f"# {name}", "", f"Fine-tuned from `{base_name}` with tuneforge ({method}).", ""]
    lines += ["## Base model", "", "| | |", "|---|---|", f"| name | `{base_name}` |"]
    if base.get("path"):
        lines.append(f"| file | `{base['path']}` ({base.get('kind', '')}) |")
    lines += [f"| SHA-256 | `{base.get('sha256') or 'not hashed: ' + str(base.get('error') or 'not on disk')}` |", ""]

    lines += ["## Method and objective", ""]
    if cfg is not None:
        m = cfg.method.model_dump(mode="json")
        t = cfg.training
        lines += [
            f"- Method: **{method}** " + ", ".join(f"{k}={v}" for k, v in m.items() if k != "name"),
            "- Objective: supervised fine-tuning, next-token cross-entropy on the assistant turns only "
            "(prompts are masked out).",
            f"- Training: {manifest.get('global_step', '?')} steps, learning rate {cfg.learning_rate:g}, "
            f"batch {t.per_device_batch_size}×{t.gradient_accumulation_steps}, max length {t.max_seq_length}, "
            f"seed {t.seed}, precision {manifest.get('precision', t.precision)}; final train loss "
            f"{_num(manifest.get('train_loss'))}.",
        ]
    else:
        lines.append(f"Not from a tuneforge run directory ({source}): method and training settings unknown.")
    lines.append("")

    lines += ["## Training data", ""]
    if sources:
        lines += ["| source | role | SHA-256 | rows read | rows kept | licence |", "|---|---|---|---|---|---|"]
        for s in sources:
            lines.append(f"| `{s['path']}` | {s.get('role', 'train')} | `{s.get('sha256', '')}` | "
                         f"{s.get('rows_read', '-')} | {s.get('rows_kept', '-')} | {s['licence'] or 'not found'} |")
        if licences:
            lines += ["", "The `license` in the metadata is the training data's licence as found beside the data; "
                          "the base model's own licence applies as well."]
    else:
        lines.append("Unknown: no data report or manifest.")
    lines.append("")

    lines += ["## Evaluation", ""]
    if result is not None:
        lines += [
            f"{result.tuned_name} vs {result.baseline_name or 'no baseline'} on {result.examples} held-out test "
            f"examples; {result.confidence:.0%} intervals from a paired bootstrap.", "",
            f"| metric | base | tuned | Δ | {result.confidence:.0%} CI of Δ | n | verdict |",
            "|---|---|---|---|---|---|---|",
        ]
        for metric, mc in result.metrics.items():
            lines.append(f"| {metric} | {fmt(mc.base)} | {fmt(mc.tuned)} | {fmt(mc.diff, signed=True)} | "
                         f"{fmt_ci(mc.diff_ci)} | {result.examples} | {mc.verdict} |")
    else:
        lines.append("Not evaluated (no `eval/metrics.json`): nothing is known about this model's quality.")
    lines += ["", "## Forgetting check", ""]
    f = result.forgetting if result is not None else None
    if f is not None:
        verdict = f"**flagged**: above the {f.max_rise:.0%} threshold" if f.flagged else f"not flagged (threshold +{f.max_rise:.0%})"
        lines.append(f"Perplexity on {f.documents} general-text documents ({f.tokens} tokens): base {f.base_perplexity:.4g}, "
                     f"tuned {f.tuned_perplexity:.4g} ({f.rise:+.1%}), {verdict}.")
    else:
        lines.append(f"Not run: {(result.forgetting_skipped if result else None) or 'no evaluation'}.")
    lines += ["", "## Known limits", "", *[f"- {x}" for x in _limits(result, f)], ""]

    lines += ["## Lineage", ""]
    if start is not None:
        who = start.get("actor", {})
        status = end["status"] if end else "not yet when this card was written (a run writes its card just before it ends)"
        lines += [
            f"- Audit log: `{log}`, entry seq {start['seq']}, id `{start['hash']}`",
            f"- Trained by {who.get('user', '?')}@{who.get('host', '?')} at {start.get('time')}; "
            f"config SHA-256 `{start['details'].get('config_sha256')}`; ended: {status}",
        ]
    else:
        lines.append(f"- Audit log: no training entry for this run in `{log}`.")
    lines += ["", "Files of this model (SHA-256):", "", "| file | SHA-256 |", "|---|---|"]
    lines += [f"| `{p}` | `{h}` |" for p, h in artifacts.items()]
    if usage:
        lines += ["", "## How to use", "", re.sub(r"^# .*\n+", "", usage)]

    content = f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines).rstrip() + "\n"
    card = ModelCard(content)  # parses the front matter back: a YAML mistake fails here, not on the Hub
    if card.data.to_dict().get("model-index") is None and eval_results:
        raise ExportError("model card: the eval results did not survive the YAML round trip")
    return card


def _adapter_base(folder: Path) -> str | None:
    config = _read_json(folder / "adapter_config.json") or {}
    return config.get("base_model_name_or_path")


def _limits(result: Any, forgetting: Any) -> list[str]:
    """Known limits, stated from what the evaluation did and did not show."""
    out = []
    if result is None:
        return ["Not evaluated: measure it on your own held-out data before use."]
    out.append(f"Evaluated on {result.examples} held-out test examples (the test split of the data above): "
               "quality on other kinds of input is not measured.")
    if result.examples < 100:
        out.append(f"Only {result.examples} test examples: the confidence intervals are wide.")
    worse = [n for n, mc in result.metrics.items() if mc.verdict == "worse"]
    unclear = [n for n, mc in result.metrics.items() if mc.verdict == "no clear change"]
    if worse:
        out.append("Worse than the base model on: " + ", ".join(worse) + ".")
    if unclear:
        out.append("No clear change from the base model on: " + ", ".join(unclear) + ".")
    if forgetting is not None and forgetting.flagged:
        out.append(f"General-text perplexity rose {forgetting.rise:+.1%}: the model may have lost general ability.")
    out.append("Not evaluated for safety, bias or factual accuracy; the base model's limitations carry over.")
    return out


def write_model_card(source: str | Path, dest: str | Path, *, audit_log: str | Path | None = None,
                     usage: str | None = None) -> Path:
    """Write ``dest/README.md``, the model card of ``source`` (see :func:`build_model_card`); returns its path.

    Example:
        >>> write_model_card("runs/support-bot", "runs/support-bot/export/hf")  # doctest: +SKIP
        PosixPath('runs/support-bot/export/hf/README.md')
    """
    path = Path(dest) / CARD_FILE
    path.write_text(str(build_model_card(source, dest, audit_log=audit_log, usage=usage)), encoding="utf-8")
    return path
