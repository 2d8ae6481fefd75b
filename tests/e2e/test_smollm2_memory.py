"""End to end on the real SmolLM2: the default batch sizing keeps LoRA under 2 GiB, and the estimate printed
before training is within 25% of the measured peak (the run is a subprocess, so the peak RSS is its own)."""

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e
TICKETS = Path(__file__).resolve().parents[2] / "examples" / "data" / "tickets.jsonl"


def test_default_batches_fit_2gib_and_the_estimate_is_within_25_percent(tmp_path, smollm2_dir):
    (tmp_path / "rows.jsonl").write_text("".join(itertools.islice(TICKETS.open(), 64)))
    cfg = {  # no batch fields: the defaults under test
        "name": "mem", "out_dir": str(tmp_path / "runs"), "model": "smollm2-135m-instruct",
        "method": {"name": "lora", "r": 16, "alpha": 32, "target_modules": ["q_proj", "v_proj"]},
        "data": {"train": str(tmp_path / "rows.jsonl"), "split": {"validation": 0.0, "test": 0.0}},
        "training": {"max_steps": 3, "precision": "fp32", "save_strategy": "no"},
        "eval": {"enabled": False},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    subprocess.run([sys.executable, "-m", "tuneforge", "train", str(tmp_path / "run.yaml")], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    manifest = json.loads((tmp_path / "runs" / "mem" / "manifest.json").read_text())
    peak, estimate = manifest["peak_rss_mb"], manifest["estimated_peak_mb"]
    assert peak <= 2048, manifest
    assert abs(estimate - peak) <= 0.25 * peak, (estimate, peak)
