"""SFT then GRPO (label_match reward) vs SFT alone on the ticket task, with the paired bootstrap CI.

    OMP_NUM_THREADS=2 .venv/bin/python bench/grpo_proof.py [--out runs/grpo-proof] [--sft-steps 140]
        [--grpo-steps 20] [--sft-run runs/quickstart]

1. SFT: ``examples/quickstart.yaml`` as it is (or ``--sft-steps`` to shorten it), unless ``--sft-run``
   names a finished SFT run to start from.
2. ``tuneforge merge``: the SFT adapter folded into a plain model folder, so GRPO starts from the
   SFT weights (multi-stage ``stages:`` runs will make this step unnecessary).
3. GRPO from that folder with the built-in ``label_match`` reward, on the ticket prompts (their label is
   the ``reference``), the SFT run's own test split given as ``data.test``: every training prompt that
   repeats a test prompt is dropped as a duplicate, and both models are scored on the same tickets.
4. GRPO's evaluation compares it with its base, the merged SFT model, on that test split: accuracy (and
   answers outside the label set) with the paired bootstrap CI of the difference. Printed, and in
   ``OUT/grpo/eval/metrics.json``.

The extra CPU time is GRPO's training and evaluation (printed); SFT is the quickstart's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
TICKETS = ROOT / "examples" / "data" / "tickets.jsonl"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/grpo-proof", help="Folder of the three steps' outputs.")
    parser.add_argument("--sft-run", default=None, help="A finished SFT run to start from (skips step 1).")
    parser.add_argument("--sft-steps", type=int, default=140, help="SFT steps (the quickstart's 140 by default).")
    parser.add_argument("--grpo-steps", type=int, default=20, help="GRPO steps (2 prompts x 4 completions each).")
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="GRPO learning rate.")
    parser.add_argument("--model", default=None, help="Start SFT from this model instead of the quickstart's "
                        "(a tiny model folder checks the plumbing in minutes).")
    parser.add_argument("--beta", type=float, default=0.04, help="GRPO's KL weight (0 skips the reference pass).")
    parser.add_argument("--test-fraction", type=float, default=None,
                        help="The SFT run's test share (the quickstart's 0.15 by default): more test tickets, a "
                        "narrower CI.")
    parser.add_argument("--eval-examples", type=int, default=None, help="Evaluate on at most this many test tickets.")
    args = parser.parse_args(argv)

    from tuneforge import finetune, load_config
    from tuneforge.export import merge

    out = Path(args.out)
    # --- 1. SFT
    if args.sft_run:
        sft_dir = Path(args.sft_run)
    else:
        started = time.perf_counter()
        # SFT's own evaluation is off: GRPO's compares SFT + GRPO with SFT alone on the same split.
        sft_cfg = load_config(QUICKSTART, ["name=sft", f"out_dir={out}", f"training.max_steps={args.sft_steps}",
                                           "eval.enabled=false", *([f"model={args.model}"] if args.model else []),
                                           *([f"data.split.test={args.test_fraction}"] if args.test_fraction else [])])
        sft_dir = finetune(sft_cfg).run_dir
        print(f"SFT: {time.perf_counter() - started:.0f}s -> {sft_dir}")

    # --- 2. merge the SFT adapter into a model folder GRPO can start from
    merged = out / "sft-merged"
    if not merged.is_dir():
        merge(sft_dir, merged)

    # --- 3. GRPO from the SFT weights, scored by label_match, tested on the SFT run's test split
    quick = load_config(QUICKSTART)
    grpo_cfg = load_config(data={
        "name": "grpo", "out_dir": str(out), "model": str(merged.resolve()),
        "method": quick.method.model_dump(),
        "data": {"train": str(TICKETS), "test": str((sft_dir / "data" / "test.jsonl").resolve()),
                 "split": {"validation": 0, "test": 0}},
        "training": {
            "objective": "grpo", "max_steps": args.grpo_steps, "learning_rate": args.learning_rate,
            "per_device_batch_size": 8, "max_seq_length": 256, "logging_steps": 1, "save_steps": 1000,
            "warmup_ratio": 0, "lr_scheduler": "constant", "precision": "auto",
            "grpo": {"num_generations": 4, "max_completion_length": 8, "beta": args.beta, "temperature": 1.0,
                     "rewards": ["label_match"]},
        },
        "eval": {"labels": quick.eval.labels, "generation": {"batch_size": 32}, "forgetting": {"enabled": False},
                 "max_examples": args.eval_examples},
    })
    started, cpu = time.perf_counter(), time.process_time()
    result = finetune(grpo_cfg)
    extra, extra_cpu = time.perf_counter() - started, time.process_time() - cpu
    manifest = json.loads((result.run_dir / "manifest.json").read_text())

    # --- 4. GRPO vs its base (= SFT alone), paired on the same test tickets
    print(f"\nGRPO: {manifest['global_step']} steps, train {manifest['wall_seconds']:.0f}s, "
          f"eval {manifest.get('eval_seconds', 0):.0f}s; extra time in all {extra:.0f}s wall, {extra_cpu:.0f}s CPU")
    metrics = result.eval.metrics
    print("| metric | SFT alone | SFT + GRPO | Δ | 95% CI of Δ (paired bootstrap) |\n|---|---|---|---|---|")
    for name in ("accuracy", "macro_f1", "exact_match"):
        m = metrics.get(name)
        if m is not None:
            print(f"| {name} | {m.base:.3f} | {m.tuned:.3f} | {m.diff:+.3f} | [{m.diff_ci[0]:+.3f}, {m.diff_ci[1]:+.3f}] |")
    if result.eval.unparseable:
        print(f"answers outside the label set, per model: {result.eval.unparseable}")
    logs = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    rewards = [r["reward"] for r in logs if "reward" in r]
    if rewards:
        print(f"training reward (label_match mean): first {rewards[0]:.3f}, last {rewards[-1]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
