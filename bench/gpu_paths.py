"""The GPU paths of issue #9, each selected by config alone, side by side on one GPU machine.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/gpu_paths.py [--examples 400]

Each variant trains bench/train_memory.py's run (LoRA r=16 on q/v of SmolLM2-135M, one epoch over the
first N quickstart examples, the default batch sizing, bf16 autocast where the GPU has it) with
`tuneforge train` in its own process, then reads the run's manifest: real tokens/s, peak GPU memory
(``peak_gpu_mb``: torch's allocator, rank 0) and the final train loss, each with its ratio to the first row.

- frozen weights fp32: ``training.frozen_weights: fp32`` (as before issue #9);
- frozen weights bf16: the default (``frozen_weights: auto``), the frozen base held in bf16;
- flash-attention 2: ``model.attn_implementation: flash_attention_2``; packed rows reach it as
  variable-length sequences (position_ids, no mask), so no L x L mask is built (needs ``flash-attn``);
- FSDP: the same config under ``accelerate launch --use_fsdp`` over every GPU (FULL_SHARD, one unit per
  decoder layer, ``use_orig_params`` for LoRA's mixed trainable and frozen weights).

A fused linear + cross-entropy kernel (Liger) has no row: tuneforge's loss projects only the positions
that have a label through the LM head (``train/trainer.py``), so the ``[tokens, vocab]`` logits such a
kernel avoids are never built on any device.

Without a CUDA device every row is printed as skipped, with the reason, and the script exits 0: the
numbers exist only where a GPU is, and go in the README from the run that made them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

FSDP_LAUNCH = ["-m", "accelerate.commands.launch", "--use_fsdp", "--mixed_precision", "bf16",
               "--fsdp_sharding_strategy", "FULL_SHARD", "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP",
               "--fsdp_transformer_layer_cls_to_wrap", "LlamaDecoderLayer", "--fsdp_use_orig_params", "true"]


def variants(gpus: int) -> dict[str, dict]:
    """Each row: config overrides, an optional launcher, and why it cannot run here (None when it can)."""
    flash = None if importlib.util.find_spec("flash_attn") else "flash-attn is not installed (pip install flash-attn)"
    return {
        "frozen weights fp32 (before)": {"overrides": ["training.frozen_weights=fp32"]},
        "frozen weights bf16 (default)": {"overrides": []},
        "flash-attention 2, varlen packed rows": {"overrides": ["model.attn_implementation=flash_attention_2"],
                                                  "skip": flash},
        f"FSDP over {gpus} GPU(s)": {"overrides": [], "launch": [*FSDP_LAUNCH, "--num_processes", str(max(gpus, 1))]},
    }


def run_variant(path: Path, name: str, spec: dict) -> dict:
    """Train one variant in its own process(es); its manifest's numbers."""
    overrides = [f"--set=name={name}", *(f"--set={o}" for o in spec["overrides"])]
    command = ([sys.executable, *spec["launch"], "-m", "tuneforge", "train", str(path), *overrides] if spec.get("launch")
               else [sys.executable, "-m", "tuneforge", "train", str(path), *overrides])
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1][:160]}
    manifest = json.loads((path.parent / "runs" / name / "manifest.json").read_text())
    return {k: manifest.get(k) for k in ("tokens_per_second", "peak_gpu_mb", "train_loss", "world_size")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=400, help="training examples (one epoch)")
    args = parser.parse_args(argv)

    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    rows = variants(gpus)
    if not gpus:
        print("no CUDA device on this machine: every GPU row is skipped")
        for label in rows:
            print(f"{label:<40} skipped: no CUDA device")
        return 0
    import yaml

    from train_memory import default_sizing_config

    work = Path(tempfile.mkdtemp(prefix="tf-gpu-"))
    path = work / "run.yaml"
    path.write_text(yaml.safe_dump(default_sizing_config(work, args.examples)))
    print(f"{torch.cuda.get_device_name(0)} x {gpus}; LoRA r=16 q/v, SmolLM2-135M, {args.examples} examples, "
          "default batch sizing, precision auto")
    print(f"{'variant':<40} {'tokens/s':>9} {'x first':>8} {'peak GPU MiB':>13} {'x first':>8} {'train loss':>10}")
    first = None
    for i, (label, spec) in enumerate(rows.items()):
        if spec.get("skip"):
            print(f"{label:<40} skipped: {spec['skip']}")
            continue
        r = run_variant(path, f"v{i}", spec)
        if "error" in r:
            print(f"{label:<40} failed: {r['error']}")
            continue
        first = first or r
        print(f"{label:<40} {r['tokens_per_second']:>9.0f} {r['tokens_per_second'] / first['tokens_per_second']:>8.2f} "
              f"{r['peak_gpu_mb']:>13.0f} {r['peak_gpu_mb'] / first['peak_gpu_mb']:>8.2f} {r['train_loss']:>10.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
