"""Peak memory of data preparation + the trainer's dataset, at N and 4N rows (issue #9: bounded as rows grow).

    OMP_NUM_THREADS=1 .venv/bin/python bench/data_memory.py [--rows 50000,200000] [--cache] [--rev REV]

For each row count, generates rows (bench/_rows.py) into a temporary folder and, in a fresh child
process (so its peak RSS, ``resource.getrusage``, is its own), runs ``tuneforge.data.prepare``
(``data.num_proc=1``, PII redaction, max_seq_length 256, the default 10% validation and 10% test
splits, the embedded SmolLM2 tokenizer; ``--cache``:
with the prepared-data cache, first run) and then ``tuneforge.train.args.loader_items``, the dataset the
trainer iterates (packed rows, token-budget batches: the defaults). No training step runs unless
``--train-steps N`` asks for a run of N steps on the same rows afterwards (``--model tiny``: the tiny
random model, whose tokenizer then prepares the rows; its peak is printed too). Printed per
row count: peak RSS after the tokenizer is loaded, after ``prepare``, after ``loader_items``, the RSS
still held at the end (what training would start with), and the type of ``PreparedData.train``.
RSS does not depend on the machine's load; the timings printed beside it do.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from _rows import generate_rows  # noqa: E402
from data_prep import cpu_model  # noqa: E402

_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from tuneforge.config.schema import RunConfig
from tuneforge.data import prepare
from tuneforge.models import load_tokenizer, resolve
from tuneforge.train.args import loader_items

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def held_mb():  # resident now (the peak only grows)
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20

args = json.loads(sys.argv[1])
tokenizer = load_tokenizer(resolve(args["model"]))
out = {"tokenizer_mb": peak_mb()}
cfg = RunConfig(model=args["model"], data={"train": args["files"], "clean": {"redact_pii": True}, "num_proc": 1},
                training={"max_seq_length": 256})  # the default splits: validation 0.1, test 0.1
extra = {"cache_dir": Path(args["cache"])} if args["cache"] else {}
start = time.perf_counter()
data = prepare(cfg.data, tokenizer, max_seq_length=256, seed=0, **extra)
out.update(prepare_s=time.perf_counter() - start, prepare_mb=peak_mb(), train=len(data.train),
           train_type=type(data.train).__name__)
items = loader_items(data.train, cfg, seed=0)
eval_items = loader_items(data.validation, cfg, seed=0)
out.update(items=len(items), loader_mb=peak_mb(), held_mb=held_mb())
if args["train_steps"]:  # then a whole run on the same rows: load, plan, train a few steps, save (no evaluation)
    from tuneforge import finetune
    del data, items, eval_items
    run = cfg.model_copy(update={"out_dir": args["runs"], "eval": cfg.eval.model_copy(update={"enabled": False}),
                                 "training": cfg.training.model_copy(update={"max_steps": args["train_steps"],
                                                                             "precision": "fp32"})})
    start = time.perf_counter()
    finetune(run)
    out.update(train_s=time.perf_counter() - start, train_mb=peak_mb())
print(json.dumps(out))
"""


def run_child(files: list[Path], *, model: str, cache: Path | None, src: Path = ROOT / "src", train_steps: int = 0,
              runs: Path | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    args = {"model": model, "files": [str(f) for f in files], "cache": str(cache) if cache else "",
            "train_steps": train_steps, "runs": str(runs)}
    out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(args)], env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="50000,200000", help="comma-separated row counts")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--cache", action="store_true", help="prepare with the data cache (first run: writes it)")
    parser.add_argument("--rev", help="measure this git revision's code instead of the checkout's (e.g. the one before a change)")
    parser.add_argument("--train-steps", type=int, default=0,
                        help="then also train this many steps on the rows (use a small --model: 'tiny' builds the tiny random one)")
    args = parser.parse_args(argv)

    results = []
    for n in (int(x) for x in args.rows.split(",")):
        with tempfile.TemporaryDirectory(prefix="tuneforge-bench-") as tmp:
            folder = Path(tmp) / "rows"
            folder.mkdir()
            files = generate_rows(folder, n)
            src = ROOT / "src"
            if args.rev:
                archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.rev, "src/tuneforge"], capture_output=True, check=True)
                subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
                src = Path(tmp) / "src"
            model = args.model
            if model == "tiny":
                model = str(Path(tmp) / "tiny")
                subprocess.run([sys.executable, "-c", f"from tuneforge.models.tiny import save_tiny_model; save_tiny_model({model!r})"],
                               env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, check=True, capture_output=True)
            load = os.getloadavg()[0]
            result = run_child(files, model=model, cache=Path(tmp) / "cache" if args.cache else None, src=src,
                               train_steps=args.train_steps, runs=Path(tmp) / "runs")
            results.append((n, load, result))
            print(json.dumps({"rows": n, **result}), flush=True)

    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores); data.num_proc=1, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"cache {'on' if args.cache else 'off'}; code: {args.rev or 'this checkout'}")
    print("| rows | kept (train) | PreparedData.train | peak RSS: tokenizer | + prepare | + loader_items | held at the end "
          "| prepare s (load avg) |")
    print("|---|---|---|---|---|---|---|---|")
    for n, load, r in results:
        print(f"| {n:,} | {r['train']:,} | {r['train_type']} | {r['tokenizer_mb']:.0f} MB | {r['prepare_mb']:.0f} MB "
              f"| {r['loader_mb']:.0f} MB | {r['held_mb']:.0f} MB | {r['prepare_s']:.0f} ({load:.1f}) |")
    if args.train_steps:
        print(f"then a run of {args.train_steps} training steps on the same rows (its own preparation, fp32, no evaluation):")
        for n, _, r in results:
            print(f"| {n:,} rows | peak RSS {r['train_mb']:.0f} MB | {r['train_s']:.0f} s |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
