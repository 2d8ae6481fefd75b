"""The "Works with" numbers: a tuned SmolLM2 in llama.cpp (f16, q8_0) and in lm-evaluation-harness.

Trains the quickstart for ``--steps`` (or takes ``--run``), exports GGUF f16 and
q8_0, runs each in llama.cpp on the built-in prompts plus ``--prompts`` held-out
tickets (16 greedy tokens compared with transformers) and one chat completion,
then scores base and tuned with lm-eval on ``--lm-eval-examples`` held-out tickets.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/interop.py --steps 60 --prompts 8 --lm-eval-examples 60
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from tuneforge import finetune, load_config
from tuneforge.data import prompt_messages
from tuneforge.eval.lm_harness import run_lm_eval
from tuneforge.export import DEFAULT_PROMPTS, check_llamacpp, run

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="An existing run directory (default: train the quickstart)")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--prompts", type=int, default=8, help="held-out tickets added to the built-in prompts")
    parser.add_argument("--lm-eval-examples", type=int, default=60)
    args = parser.parse_args()

    run_dir = args.run
    if run_dir is None:
        out = tempfile.mkdtemp(prefix="tuneforge-interop-")
        start = time.perf_counter()
        cfg = load_config(QUICKSTART, [f"training.max_steps={args.steps}", "name=interop", f"out_dir={out}",
                                       "eval.enabled=false", "training.eval_strategy=no", "training.save_strategy=no"])
        run_dir = finetune(cfg).run_dir
        print(f"trained {args.steps} steps in {time.perf_counter() - start:.0f} s: {run_dir}")
    rows = [json.loads(line) for line in (run_dir / "data" / "test.jsonl").read_text().splitlines()]
    prompts = list(DEFAULT_PROMPTS) + [prompt_messages(r) for r in rows[: args.prompts]]

    print("| GGUF | prompts agreeing on 16 greedy tokens | tokens agreeing | differences (transformers logit gap) "
          "| chat: stops at <|im_end|> | chat answer (transformers) |")
    print("|---|---|---|---|---|---|")
    for quant in ("f16", "q8_0"):
        start = time.perf_counter()
        result = run(run_dir, fmt="gguf", quant=quant, output=run_dir / "export" / f"gguf-{quant}", check=False)
        report = check_llamacpp(run_dir / "merged", result.files[0], prompts, chat=prompt_messages(rows[0]),
                                chat_max_tokens=16)
        diffs = "; ".join(f"{c.verdict}" for c in report.checks if not c.agrees) or "none"
        chat = report.chat
        print(f"| {quant} | {report.prompts_agreeing}/{len(report.checks)} | {report.token_agreement:.1%} | {diffs} "
              f"| {chat.stopped_at_end_of_turn} | {chat.answer!r} ({chat.reference_answer!r}) |")
        print(report.table(), f"\n({time.perf_counter() - start:.0f} s)\n", flush=True)

    start = time.perf_counter()
    lm = run_lm_eval(run_dir, max_examples=args.lm_eval_examples, max_gen_toks=8)
    print(lm.table(), f"\n(lm-eval base + tuned: {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
