"""Does ``data.balance: oversample`` help on imbalanced labels? Two runs on a skewed tickets split, same test set.

    OMP_NUM_THREADS=2 .venv/bin/python bench/balance_proof.py [--majority product_question] [--share 0.51]

From examples/data/tickets.jsonl: a balanced test set (``--test-per-label`` tickets of each
label) is held out first; the training file keeps every other ticket of the majority label and
just enough of each other label that the majority label is ``--share`` of the rows (the legal-
clause set that motivated this had 51 % "Other"). Then, with the quickstart's settings:

(a) ``runs/balance-none``: ``data.balance: none``;
(b) ``runs/balance-oversample``: ``data.balance: oversample``, evaluated with ``eval.baseline: runs/balance-none``,
    so its report holds macro-F1 of (b) - (a) on the same test tickets with a paired-bootstrap 95% CI.

Printed: each run's macro-F1 and accuracy, and the paired difference with its interval.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import defaultdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
TICKETS = ROOT / "examples" / "data" / "tickets.jsonl"


def skewed_split(work: Path, majority: str, share: float, test_per_label: int, seed: int) -> tuple[Path, Path, dict]:
    """Write ``train.jsonl`` (majority label = ``share`` of the rows) and a balanced ``test.jsonl``; return the counts."""
    rows = [json.loads(line) for line in TICKETS.read_text().splitlines() if line.strip()]
    by_label: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_label[row["output"]].append(row)
    rng = random.Random(seed)
    test, rest = [], {}
    for label, group in sorted(by_label.items()):
        rng.shuffle(group)
        test += group[:test_per_label]
        rest[label] = group[test_per_label:]
    others = [label for label in rest if label != majority]
    per_other = max(1, round(len(rest[majority]) * (1 - share) / share / len(others)))
    train = rest[majority] + [row for label in others for row in rest[label][:per_other]]
    rng.shuffle(train)
    work.mkdir(parents=True, exist_ok=True)
    (work / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (work / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    counts = {label: sum(r["output"] == label for r in train) for label in sorted(rest)}
    return work / "train.jsonl", work / "test.jsonl", counts


def config(name: str, train: Path, test: Path, balance: str, out_dir: Path, max_steps: int, baseline: str | None) -> dict:
    cfg = yaml.safe_load(QUICKSTART.read_text())
    cfg["name"], cfg["out_dir"] = name, str(out_dir)
    cfg["data"] = {"train": str(train), "test": str(test), "split": {"validation": 0.05, "test": 0.0}, "balance": balance}
    cfg["training"] = {**cfg["training"], "max_steps": max_steps, "eval_strategy": "no", "save_steps": max_steps}
    cfg["eval"] = {**cfg["eval"], "forgetting": {"enabled": False}}
    if baseline:
        cfg["eval"]["baseline"] = baseline
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--majority", default="product_question")
    parser.add_argument("--share", type=float, default=0.51)
    parser.add_argument("--test-per-label", type=int, default=30)
    parser.add_argument("--max-steps", type=int, default=140)
    parser.add_argument("--out-dir", default=str(ROOT / "runs"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from tuneforge import finetune, load_config

    out = Path(args.out_dir)
    train, test, counts = skewed_split(out / "balance-data", args.majority, args.share, args.test_per_label, args.seed)
    print(f"training rows per label: {counts}; test: {args.test_per_label} per label", flush=True)
    results = {}
    for name, balance, baseline in (("balance-none", "none", None),
                                    ("balance-oversample", "oversample", str(out / "balance-none"))):
        started = time.perf_counter()
        result = finetune(load_config(data=config(name, train, test, balance, out, args.max_steps, baseline)))
        results[name] = result.eval
        print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
    for name, ev in results.items():
        values = {m: round(c.tuned, 3) for m, c in ev.metrics.items() if m in ("accuracy", "macro_f1")}
        print(f"{name}: {values} (baseline {ev.baseline_name})")
    diff = results["balance-oversample"].metrics["macro_f1"]
    print(f"macro_f1 oversample - none: {diff.diff:+.3f}, 95% paired CI [{diff.diff_ci[0]:+.3f}, {diff.diff_ci[1]:+.3f}] "
          f"({diff.verdict})")


if __name__ == "__main__":
    main()
