"""Evaluation speed: the previous generation loop vs today's, and label log-likelihood scoring, same model and examples.

    .venv/bin/python bench/eval_speed.py [--model smollm2-135m-instruct] [--examples 180] [--repeats 2]

On the quickstart test split (examples/quickstart.yaml: 180 held-out tickets, 8 labels),
one model loaded once, each variant run back to back in the same process and repeated
in turn (a, b, c, a, b, c, ...), so a shared machine's load hits all of them alike:

(a) previous: the generation loop as it was before the shared-prefix cache (prompts
    sorted longest first, batches of --batch-size left padded by the tokenizer, every
    prompt token run through the model for each batch, each prompt tokenized twice).
(b) tuneforge: ``tuneforge.eval.generate.generate_answers`` (shared prefix run once,
    each prompt tokenized once).
(c) label likelihood: ``tuneforge.eval.likelihood.score_labels`` (no generation).

Printed: examples/s (best of the repeats, and the median), ratio to (a), accuracy over
the labels, and whether (a) and (b) gave the same answers. Ratios, not seconds: the
machine is shared.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"


def test_split(n: int | None) -> tuple[list[dict], list[str]]:
    """The quickstart's held-out test examples (as `tuneforge train` splits them) and its labels."""
    from tuneforge import load_config
    from tuneforge.data import prepare
    from tuneforge.models import load_tokenizer, resolve

    cfg = load_config(QUICKSTART)
    tok = load_tokenizer(resolve(cfg.model))
    prepared = prepare(cfg.data, tok, max_seq_length=cfg.training.max_seq_length, seed=cfg.training.seed)
    return prepared.test_examples[:n], list(cfg.eval.labels)


@torch.inference_mode()
def previous_generate(model, tokenizer, examples, gen) -> list[str]:
    """(a) The evaluation generation loop before the shared-prefix cache, kept here as the baseline."""
    from tuneforge.eval.generate import render_prompts, stop_token_ids
    from tuneforge.eval.length import prompt_budget

    prompts = render_prompts(tokenizer, examples)
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    limit = prompt_budget(model, gen.max_new_tokens)
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    stops = stop_token_ids(tokenizer, model)
    texts = [""] * len(prompts)
    tokenizer.padding_side, tokenizer.truncation_side = "left", "left"
    for b in range(0, len(order), gen.batch_size):
        batch = order[b : b + gen.batch_size]
        enc = tokenizer([prompts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False,
                        truncation=True, max_length=limit)
        out = model.generate(**enc, max_new_tokens=gen.max_new_tokens, do_sample=False, use_cache=True,
                             eos_token_id=stops, pad_token_id=tokenizer.pad_token_id, temperature=None, top_p=None,
                             top_k=None)
        for i, text in zip(batch, tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)):
            texts[i] = text.strip()
    return texts


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="Model alias, folder or run directory.")
    parser.add_argument("--examples", type=int, default=None, help="Use the first N test examples (default: all 180).")
    parser.add_argument("--batch-size", type=int, default=32, help="Generation batch size (the quickstart's).")
    parser.add_argument("--repeats", type=int, default=2, help="Rounds of (a, b, c).")
    parser.add_argument("--json", type=Path, default=None, help="Also write the numbers here.")
    args = parser.parse_args(argv)

    from tuneforge.config.schema import GenerationConfig
    from tuneforge.data import reference
    from tuneforge.eval.generate import generate_answers
    from tuneforge.eval.length import resolve_generation
    from tuneforge.eval.likelihood import score_labels
    from tuneforge.eval.metrics import parse_label
    from tuneforge.models import load

    examples, labels = test_split(args.examples)
    references = [reference(ex) for ex in examples]
    loaded = load(args.model)
    model, tok = loaded.model, loaded.tokenizer
    model.eval()
    gen = resolve_generation(GenerationConfig(batch_size=args.batch_size), tok, references, labels)
    steps = ["lower", "strip", "punctuation", "whitespace"]

    def gen_accuracy(texts: list[str]) -> float:
        return sum(parse_label(t, labels, steps) == r for t, r in zip(texts, references)) / len(references)

    variants = {
        "(a) previous generation": lambda: previous_generate(model, tok, examples, gen),
        "(b) tuneforge generation": lambda: generate_answers(model, tok, examples, gen).texts,
        "(c) label likelihood": lambda: [labels[i] for i in score_labels(model, tok, examples, labels).predicted],
    }
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    answers: dict[str, list[str]] = {}
    for r in range(args.repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            answers[name] = fn()
            seconds[name].append(time.perf_counter() - start)
            print(f"round {r + 1}: {name}: {len(examples) / seconds[name][-1]:.3f} examples/s", flush=True)

    n = len(examples)
    base_best = n / min(seconds["(a) previous generation"])
    rows = []
    for name, secs in seconds.items():
        acc = gen_accuracy(answers[name]) if "generation" in name else \
            sum(a == r for a, r in zip(answers[name], references)) / n
        best, median = n / min(secs), n / statistics.median(secs)
        rows.append({"variant": name, "examples_per_second": best, "median_examples_per_second": median,
                     "ratio": best / base_best, "accuracy": acc, "seconds": secs})
    same = answers["(a) previous generation"] == answers["(b) tuneforge generation"]
    print(f"\n{n} examples, model {args.model}, max_new_tokens {gen.max_new_tokens}, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads, CPU: {cpu_model()}")
    print("| variant | examples/s (best) | median | × (a) | accuracy |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['variant']} | {row['examples_per_second']:.3f} | {row['median_examples_per_second']:.3f} "
              f"| {row['ratio']:.2f} | {row['accuracy']:.3f} |")
    print(f"(a) and (b) gave the same {n} answers: {same}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "same_answers": same, "cpu": cpu_model(), "examples": n}, indent=1))
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
