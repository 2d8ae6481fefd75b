"""bench/gpu_paths.py on a machine without a GPU: every row says it was skipped and why, and the script succeeds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the bench trains (minutes); run it by hand")
def test_gpu_bench_skips_every_row_without_cuda():
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_paths.py")], capture_output=True, text=True,
                          check=False, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if "skipped: no CUDA device" in line]
    assert [row.split("  ")[0] for row in rows] == [
        "frozen weights fp32 (before)", "frozen weights bf16 (default)", "flash-attention 2, varlen packed rows",
        "FSDP over 0 GPU(s)"]
