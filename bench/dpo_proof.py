"""SFT then DPO vs SFT alone on the ticket task: accuracy on the SFT run's held-out tickets, paired bootstrap CI.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2 .venv/bin/python bench/dpo_proof.py [--sft-run RUN | --sft-steps 40]
        [--loss apo_zero] [--pairs all|format|label] [--steps 40] [--learning-rate 1e-4] [--out runs/dpo-proof]

1. SFT: ``examples/quickstart.yaml`` (``--sft-steps`` to shorten it), unless ``--sft-run`` names a
   finished SFT run.
2. Pairs: ``examples/data/ticket_preferences.jsonl`` (``make_preferences.py``: chosen = the right label,
   rejected = a wrong label or a sentence answer) without every pair whose prompt is one of the SFT run's
   test tickets, written to ``OUT/pairs.jsonl``; so neither stage trains on a test ticket.
3. DPO from the SFT run (``model: RUN``: its adapter merged), ``examples/dpo.yaml``'s settings with
   ``--loss``, ``--steps`` and ``--learning-rate``; 10% of the pairs held out for its preference metrics.
4. ``tuneforge eval DPO_RUN --data SFT_RUN/data/test.jsonl --baseline base``: the DPO model against its
   base, which is the SFT model, on the SFT run's test tickets: accuracy and macro-F1 with the paired
   bootstrap CI of the difference, and answers outside the label set. Printed, and in ``OUT/eval-tickets``.

The extra time (DPO's training and the evaluation) is printed in wall and CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
DPO = ROOT / "examples" / "dpo.yaml"
PAIRS = ROOT / "examples" / "data" / "ticket_preferences.jsonl"
TICKETS = ROOT / "examples" / "data" / "tickets.jsonl"


def pairs_without(test_rows: list[dict]) -> list[dict]:
    """The bundled pairs except those made from a test ticket (or one with the same text).

    ``make_preferences.py`` turns line k of ``tickets.jsonl`` into line k of the pairs file, and each
    test row records its source line (``meta.line``); the prompt is checked to be that ticket's.
    """
    tickets = TICKETS.read_text().splitlines()
    held_out = {row["meta"]["line"] for row in test_rows if Path(row["meta"]["source"]).name == TICKETS.name}
    if len(held_out) != len(test_rows):
        raise SystemExit("the SFT run's test rows do not all come from examples/data/tickets.jsonl")
    pairs = [json.loads(line) for line in PAIRS.read_text().splitlines()]
    for line in held_out:
        ticket = json.loads(tickets[line - 1])
        if pairs[line - 1]["prompt"] != f"{ticket['instruction']}\n\n{ticket['input']}":
            raise SystemExit(f"ticket_preferences.jsonl line {line} is not tickets.jsonl line {line}; rerun make_preferences.py")
    # A ticket text can repeat on another line: drop those pairs too (compared as the data cleaning keys them).
    texts = {_key(row["messages"][0]["content"]) for row in test_rows}
    return [pair for k, pair in enumerate(pairs, start=1) if k not in held_out and _key(pair["prompt"]) not in texts]


def _key(text: str) -> str:
    # The data cleaning's own dedupe key (case and whitespace folded), after the NFKC its cleaning applies.
    from tuneforge.data.clean import dedupe_key

    return dedupe_key({"text": unicodedata.normalize("NFKC", text)}, "normalized")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/dpo-proof", help="Folder of the steps' outputs.")
    parser.add_argument("--sft-run", default=None, help="A finished SFT run to start from (skips step 1).")
    parser.add_argument("--sft-steps", type=int, default=140, help="SFT steps (the quickstart's 140 by default).")
    parser.add_argument("--loss", default="apo_zero", help="DPO loss_type, comma-separated for a mix (e.g. sigmoid,sft).")
    parser.add_argument("--steps", type=int, default=40, help="DPO steps (4 pairs each).")
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="DPO learning rate.")
    parser.add_argument("--beta", type=float, default=0.1, help="DPO beta.")
    parser.add_argument("--pairs", choices=("all", "format", "label"), default="all",
                        help="Which bundled pairs: all; format (rejected = a sentence answer: answer with the label "
                        "only); label (rejected = a wrong label).")
    parser.add_argument("--seed", type=int, default=None, help="training.seed of both stages (the examples' 42 by default).")
    parser.add_argument("--name", default=None, help="The DPO run's name (default dpo-<loss>).")
    args = parser.parse_args(argv)

    from tuneforge import finetune, load_config
    from tuneforge.eval import evaluate

    out = Path(args.out).resolve()
    seed = [f"training.seed={args.seed}"] if args.seed is not None else []
    # --- 1. SFT
    if args.sft_run:
        sft_dir = Path(args.sft_run).resolve()
    else:
        started = time.perf_counter()
        sft_cfg = load_config(QUICKSTART, ["name=sft", f"out_dir={out}", f"training.max_steps={args.sft_steps}",
                                           "eval.enabled=false", *seed])
        sft_dir = finetune(sft_cfg).run_dir.resolve()
        print(f"SFT: {time.perf_counter() - started:.0f}s -> {sft_dir}")
    test_file = sft_dir / "data" / "test.jsonl"
    test_rows = [json.loads(line) for line in test_file.read_text().splitlines() if line.strip()]

    # --- 2. pairs without the SFT run's test tickets
    pairs = pairs_without(test_rows)
    if args.pairs != "all":
        labels = set(load_config(DPO).eval.labels)
        pairs = [p for p in pairs if (p["rejected"] in labels) == (args.pairs == "label")]
    out.mkdir(parents=True, exist_ok=True)
    pairs_file = out / "pairs.jsonl"
    pairs_file.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
    print(f"pairs: {len(pairs)} of the bundled ones ({args.pairs}; those of the {len(test_rows)} SFT test tickets left out)")

    # --- 3. DPO from the SFT run
    losses = [name.strip() for name in args.loss.split(",") if name.strip()]
    name = args.name or f"dpo-{'-'.join(losses)}" + ("" if args.pairs == "all" else f"-{args.pairs}")
    started, cpu = time.perf_counter(), time.process_time()
    dpo_cfg = load_config(DPO, [
        f"name={name}", f"out_dir={out}", f"model={sft_dir}", f"data.train={pairs_file}",
        "data.split.validation=0", "data.split.test=0.1", f"training.max_steps={args.steps}",
        f"training.learning_rate={args.learning_rate}", f"training.dpo.beta={args.beta}",
        f"training.dpo.loss_type={json.dumps(losses)}", "training.save_strategy=no", "eval.forgetting.enabled=false",
        *seed,
    ])
    dpo_dir = finetune(dpo_cfg).run_dir

    # --- 4. DPO vs its base (the SFT model) on the SFT run's test tickets
    labels = dpo_cfg.eval.labels
    result = evaluate(dpo_dir, data=test_file, baseline="base", metrics=["accuracy", "macro_f1", "label_validity"], labels=labels,
                      output=out / f"eval-tickets-{name}")
    extra, extra_cpu = time.perf_counter() - started, time.process_time() - cpu
    print(f"\nDPO ({', '.join(losses)}, {args.steps} steps, lr {args.learning_rate:g}); extra time in all "
          f"{extra:.0f}s wall, {extra_cpu:.0f}s CPU")
    print("| metric | SFT alone | SFT + DPO | Δ | 95% CI of Δ (paired bootstrap) |\n|---|---|---|---|---|")
    for metric in ("accuracy", "macro_f1", "label_validity"):
        m = result.metrics.get(metric)
        if m is not None:
            print(f"| {metric} | {m.base:.3f} | {m.tuned:.3f} | {m.diff:+.3f} | "
                  f"[{m.diff_ci[0]:+.3f}, {m.diff_ci[1]:+.3f}] |")
    if result.unparseable:
        print(f"answers outside the label set, per model: {result.unparseable}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
