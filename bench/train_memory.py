"""Resident memory step by step while training: the defaults against each memory setting switched off, same run.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2 .venv/bin/python bench/train_memory.py [--examples 160]

Trains LoRA r=16 on q_proj/v_proj of SmolLM2-135M for one epoch over the first N quickstart
examples at the default batch sizing (bench/train_throughput.py's "defaults" config), once per
variant, each in its own process (its own peak RSS):

- before: ``training.frozen_weights: fp32`` and ``training.pad_to_multiple_of: null`` (as before issue #9's fixes);
- frozen bf16 only; pad multiple only;
- the defaults (both).

After every optimizer step a callback records the process's RSS and the step's wall time; printed:
RSS after the first and the last step, the peak (``ru_maxrss``), the growth from the first to the
last step, and the mean step time (steps 3 onwards), each with its ratio to "before". Timing on a
shared machine is noisy: compare the memory columns, and the times only between runs made back to back.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from train_throughput import prepare_split  # noqa: E402

VARIANTS = {
    "before (frozen fp32, no pad multiple)": ["training.frozen_weights=fp32", "training.pad_to_multiple_of=null"],
    "frozen bf16 only": ["training.pad_to_multiple_of=null"],
    "pad multiple only": ["training.frozen_weights=fp32"],
    "**defaults** (both)": [],
}

_CHILD = r"""
import json, resource, sys, time
import psutil
from transformers import TrainerCallback
from tuneforge import finetune, load_config
path, out, *overrides = sys.argv[1:]
proc, steps = psutil.Process(), []

class Probe(TrainerCallback):
    last = None
    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        steps.append({"rss_mb": proc.memory_info().rss / 2**20, "seconds": now - self.last if self.last else None})
        self.last = now

finetune(load_config(path, overrides), callbacks=[Probe()])
json.dump({"steps": steps, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}, open(out, "w"))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=160, help="training examples (one epoch)")
    args = parser.parse_args(argv)

    import yaml

    work = Path(tempfile.mkdtemp(prefix="tf-memory-"))
    cfg = default_sizing_config(work, args.examples)
    rows = {}
    for i, (label, overrides) in enumerate(VARIANTS.items()):
        path, out = work / f"v{i}.yaml", work / f"v{i}.json"
        path.write_text(yaml.safe_dump({**cfg, "name": f"v{i}"}))
        env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        subprocess.run([sys.executable, "-c", _CHILD, str(path), str(out), *overrides], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        result = json.loads(out.read_text())
        steps = result["steps"]
        times = [s["seconds"] for s in steps[2:] if s["seconds"] is not None]
        rows[label] = {"first": steps[0]["rss_mb"], "last": steps[-1]["rss_mb"], "peak": result["peak_mb"],
                       "step_s": sum(times) / max(len(times), 1), "steps": len(steps)}
    base = next(iter(rows.values()))
    print(f"LoRA r=16 q/v, SmolLM2-135M, {args.examples} examples ({base['steps']} steps), default batch sizing; "
          f"CPU: {_cpu()}; load average {os.getloadavg()[0]:.1f}")
    print(f"{'variant':<40} {'RSS step 1':>10} {'RSS last':>9} {'growth':>7} {'peak MiB':>9} {'x before':>8} "
          f"{'s/step':>7} {'x before':>8}")
    for label, r in rows.items():
        print(f"{label:<40} {r['first']:>10.0f} {r['last']:>9.0f} {r['last'] - r['first']:>+7.0f} {r['peak']:>9.0f} "
              f"{r['peak'] / base['peak']:>8.2f} {r['step_s']:>7.2f} {r['step_s'] / base['step_s']:>8.2f}")
    return 0


def default_sizing_config(work: Path, examples: int) -> dict:
    """The bench's run config (a dict): LoRA r=16 q/v of the quickstart, one epoch over the first N examples,
    at the default batch sizing (bench/train_throughput.py's "defaults"), no saving or evaluation; runs in WORK/runs."""
    import yaml

    from train_throughput import LORA, QUICKSTART

    train, _ = prepare_split(work, examples)
    cfg = yaml.safe_load(QUICKSTART.read_text())
    cfg.update(out_dir=str(work / "runs"), method=LORA)
    cfg["data"] = {"train": str(train), "split": {"validation": 0.0, "test": 0.0}}
    cfg["training"].update(epochs=1, save_strategy="no", eval_strategy="no", learning_rate=2e-4,
                           per_device_batch_size=None, max_seq_length=1024)  # the default batch sizing
    cfg["training"].pop("max_steps", None)
    cfg["eval"] = {"enabled": False}
    return cfg


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
