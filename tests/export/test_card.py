"""Model cards: written by a tiny run and by merge/export, front matter parses, numbers match the run's files."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.train.conftest import LABELS, write_tickets
from tuneforge.data.load import source_digest


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory, tiny_model_dir):
    """A tiny LoRA run with evaluation (and the forgetting check), its data folder holding a licence."""
    from tuneforge import finetune, load_config

    root = tmp_path_factory.mktemp("card")
    data = root / "data"
    data.mkdir()
    write_tickets(data / "tickets.jsonl", n=48)
    (data / "README.md").write_text("# Tickets\n\nLICENSE: released under **CC0-1.0** (public domain).\n")
    cfg = load_config(data={
        "name": "carded", "out_dir": str(root / "runs"), "model": str(tiny_model_dir),
        "method": {"name": "lora", "r": 4, "alpha": 8},
        "data": {"train": str(data / "tickets.jsonl"), "split": {"validation": 0.1, "test": 0.2}},
        "training": {"max_steps": 4, "per_device_batch_size": 4, "max_seq_length": 128, "precision": "fp32",
                     "save_steps": 4, "logging_steps": 2},
        "eval": {"labels": LABELS, "bootstrap_samples": 100, "generation": {"max_new_tokens": 4, "batch_size": 16}},
    })
    return finetune(cfg).run_dir


def _front_matter(path):
    text = path.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1]), text


def test_run_card_front_matter_parses_and_matches_the_run(evaluated_run):
    from huggingface_hub import ModelCard

    card_path = evaluated_run / "README.md"
    meta, text = _front_matter(card_path)
    assert ModelCard.load(card_path).data.library_name == "peft"
    assert meta["library_name"] == "peft" and "tuneforge" in meta["tags"] and "lora" in meta["tags"]
    assert meta["license"] == "cc0-1.0"
    data_file = next(iter(json.loads((evaluated_run / "manifest.json").read_text())["data_sha256"]))
    assert meta["datasets"] == ["tickets.jsonl"]
    # Eval numbers: the model-index and the table carry what eval/metrics.json says.
    metrics = json.loads((evaluated_run / "eval" / "metrics.json").read_text())
    reported = {m["type"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert reported == {name: m["tuned"] for name, m in metrics["metrics"].items() if m["tuned"] is not None}
    from tuneforge.eval.result import fmt, fmt_ci

    for name, m in metrics["metrics"].items():
        row = (f"| {name} | {fmt(m['base'])} | {fmt(m['tuned'])} | {fmt(m['diff'], signed=True)} | "
               f"{fmt_ci(tuple(m['diff_ci']))} | {metrics['examples']} | {m['verdict']} |")
        assert row in text
    # Data hashes are the files' SHA-256; the licence comes from the data folder's README.
    assert f"`{source_digest(data_file)}`" in text and "cc0-1.0" in text
    forgetting = metrics["forgetting"]
    assert f"base {forgetting['base_perplexity']:.4g}" in text
    # The base model's hash and the audit entry of this run.
    from tuneforge.security.audit import AuditLog

    start = AuditLog(evaluated_run.parent / "audit.jsonl").entries()[0]
    assert start["details"]["base_model"]["sha256"] in text
    assert f"id `{start['hash']}`" in text
    for heading in ("## Base model", "## Method and objective", "## Training data", "## Evaluation",
                    "## Forgetting check", "## Known limits", "## Lineage"):
        assert heading in text
    assert f"`{source_digest(evaluated_run / 'adapter' / 'adapter_model.safetensors')}`" in text


def test_merge_and_hf_export_write_a_card_about_their_own_files(evaluated_run):
    from tuneforge.export import merge, run

    merged = merge(evaluated_run)
    meta, text = _front_matter(merged / "README.md")
    assert meta["library_name"] == "transformers" and meta["model-index"]
    assert f"`{source_digest(merged / 'model.safetensors')}`" in text
    hf = run(evaluated_run, fmt="hf").output
    meta, text = _front_matter(hf / "README.md")
    assert "## How to use" in text and "vllm serve" in text  # the export's serving commands are kept
    assert "## Evaluation" in text and meta["license"] == "cc0-1.0"
    # Both are in the audit log, with the SHA-256 of what they wrote, after the training run.
    from tuneforge.security.audit import AuditLog, verify
    from tuneforge.security.audit_show import action_rows

    log = evaluated_run.parent / "audit.jsonl"
    assert [(r.action, r.run, r.status) for r in action_rows(log)] == [
        ("train", "carded", "success"), ("merge", "carded", "success"), ("export", "carded", "success")]
    ends = [e for e in AuditLog(log).entries() if e["status"] == "success"]
    assert ends[1]["details"]["artifacts"][str(merged.resolve())]["model.safetensors"] == source_digest(merged / "model.safetensors")
    assert ends[2]["details"]["artifacts"][str(hf.resolve())]["README.md"] == source_digest(hf / "README.md")
    assert verify(log).ok


def test_card_of_an_unevaluated_folder_says_what_is_unknown(lora_run, tmp_path):
    from tuneforge.export.card import write_model_card

    path = write_model_card(lora_run / "adapter", lora_run / "adapter", audit_log=tmp_path / "none.jsonl")
    meta, text = _front_matter(path)
    assert "model-index" not in meta
    assert "Not evaluated" in text and "no training entry" in text


def test_licences_are_found_beside_the_data(tmp_path):
    from pathlib import Path

    from tuneforge.export.card import data_licence

    bundled = Path(__file__).resolve().parents[2] / "examples" / "data" / "tickets.jsonl"
    assert data_licence(bundled) == "cc0-1.0"  # "LICENSE: ... **CC0-1.0** ..." in its README
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "README.md").write_text("---\nlicense: apache-2.0\n---\n# data\n")
    assert data_licence(tmp_path / "a" / "x.jsonl") == "apache-2.0"
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "LICENSE").write_text("\nMIT License\n\nCopyright ...\n")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "README.md").write_text("# data\n\n## Licence\nReleased as CC-BY-4.0.\n")
    assert data_licence(tmp_path / "c" / "x.jsonl") == "cc-by-4.0"
    assert data_licence(tmp_path / "b" / "x.jsonl") == "mit"
    assert data_licence(tmp_path / "x.jsonl") is None


def test_the_embedded_model_card_names_its_hub_id():
    from tuneforge.export.card import _hub_id

    assert _hub_id("smollm2-135m-instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert _hub_id("/some/local/folder") is None and _hub_id("org/model") == "org/model"
