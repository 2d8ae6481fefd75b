"""Data preparation at scale: today's sequential path vs the multi-process one, same generated rows.

    OMP_NUM_THREADS=1 .venv/bin/python bench/data_prep.py [--rows 1000000] [--baseline-rows 100000] [--num-proc 2]

Generates ``--rows`` realistic instruction rows (bench/_rows.py: ~70% alpaca tickets, ~30%
two-turn chats, ~2% repeats, ~1% with an email) into a temporary folder, then runs, each
in a fresh child process so its peak RSS (``resource.getrusage``, the child and its worker
processes) is its own:

(a) today: ``tuneforge.data.prepare`` as of ``--baseline-rev`` (the sequential path before
    preparation went multi-process), exported from git into the temporary folder; on
    ``--baseline-rows`` rows when that is fewer (its time and memory grow with the rows:
    the table says so and extrapolates rows/s, which stays flat);
(b) new: this checkout's ``prepare`` with ``data.num_proc=--num-proc``, first run (cache written);
(c) cached: (b) again in a new process (reads the prepared splits back from the cache).

Same config for all: redact PII, max_seq_length 256, the embedded SmolLM2 tokenizer. Printed:
rows/s and rows per CPU-second with their ratios to (a), peak RSS of the main process and of its
largest child (a worker), and the load average
(the machine is shared: ratios measured in the same run mean more than seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from _rows import generate_rows  # noqa: E402

BASELINE_REV = "983952c"  # the branch point: sequential prepare(), first-fit packing

_CHILD = r"""
import json, os, resource, sys, time
from pathlib import Path
from tuneforge.config.schema import DataConfig
from tuneforge.data import prepare
from tuneforge.models import load_tokenizer, resolve
args = json.loads(sys.argv[1])
tokenizer = load_tokenizer(resolve(args["model"]))
fields = {"train": args["files"], "clean": {"redact_pii": True}}
if args["num_proc"]:
    fields["num_proc"] = args["num_proc"]
cfg = DataConfig(**fields)
extra = {"cache_dir": Path(args["cache"])} if args["cache"] else {}
start = time.perf_counter()
data = prepare(cfg, tokenizer, max_seq_length=256, seed=0, **extra)
seconds = time.perf_counter() - start
print(json.dumps({
    "seconds": seconds, "train": len(data.train), "reused": getattr(data, "reused", False),
    "cpu_s": sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                 for f in ("ru_utime", "ru_stime")),
    "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
}))
"""


def run_child(src: Path, files: list[Path], *, model: str, num_proc: int | None, cache: Path | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    args = {"model": model, "files": [str(f) for f in files], "num_proc": num_proc, "cache": str(cache) if cache else ""}
    out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(args)], env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--baseline-rows", type=int, default=100_000, help="rows for today's path (fewer when --rows is more)")
    parser.add_argument("--num-proc", type=int, default=2)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--baseline-rev", default=BASELINE_REV)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="tuneforge-bench-") as tmp:
        tmp_path = Path(tmp)
        baseline_src = tmp_path / "baseline"
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline_rev, "src/tuneforge"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(tmp_path)], input=archive.stdout, check=True)
        (tmp_path / "src").rename(baseline_src)
        big, small = tmp_path / "rows", tmp_path / "baseline-rows"
        big.mkdir()
        files = generate_rows(big, args.rows)
        baseline_n = min(args.rows, args.baseline_rows)
        baseline_files = files
        if baseline_n < args.rows:
            small.mkdir()
            baseline_files = generate_rows(small, baseline_n)  # same seed: the first rows of the big set
        load = os.getloadavg()
        results = [("(a) today, sequential", baseline_n, run_child(baseline_src, baseline_files, model=args.model, num_proc=None))]
        cache = tmp_path / "cache"
        results.append((f"(b) new, num_proc={args.num_proc}", args.rows,
                        run_child(ROOT / "src", files, model=args.model, num_proc=args.num_proc, cache=cache)))
        cached = run_child(ROOT / "src", files, model=args.model, num_proc=args.num_proc, cache=cache)
        assert cached["reused"], "the second run did not reuse the cache"
        results.append(("(c) new, second run (cache)", args.rows, cached))
        load_after = os.getloadavg()

    base_rate = results[0][1] / results[0][2]["seconds"]
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores); load average {load[0]:.1f} before, {load_after[0]:.1f} after")
    base_cpu = results[0][1] / results[0][2]["cpu_s"]
    print(f"{'path':32} {'rows':>9} {'seconds':>9} {'rows/s':>9} {'x today':>8} {'rows/CPU-s':>11} {'x today':>8} "
          f"{'peak RSS main':>14} {'peak RSS children':>18}")
    for name, n, r in results:
        rate, per_cpu = n / r["seconds"], n / r["cpu_s"]
        print(f"{name:32} {n:>9} {r['seconds']:>9.1f} {rate:>9.0f} {rate / base_rate:>7.2f}x {per_cpu:>11.0f} "
              f"{per_cpu / base_cpu:>7.2f}x {r['rss_mb']:>11.0f} MB {r['worker_rss_mb']:>15.0f} MB")
    print("rows/CPU-s: rows per second of CPU time (the process and its workers), which other jobs on a "
          "shared machine disturb less than wall time; rows/s over it shows how many cores a path kept busy.")
    if baseline_n < args.rows:
        print(f"(a) ran on {baseline_n} rows; at {args.rows} rows it would take ~{args.rows / base_rate:.0f} s at the same rate "
              "and hold every row in memory (its peak RSS grows with the rows).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
