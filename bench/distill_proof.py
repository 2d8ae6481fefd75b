"""Distillation proof on the tickets task: teacher vs KD student vs SFT student, side by side in one run.

    .venv/bin/python bench/distill_proof.py [--teacher runs/quickstart | --teacher-steps N] [--steps 300]
        [--student-from-teacher] [--test-fraction 0.15] [--alpha A] [--temperature T] [--positions all] [--out-dir runs/distill-proof]
        [--unlabelled N] [--labelled N]

1. Teacher: a tuned full-depth SmolLM2 (``--teacher`` run, else ``examples/quickstart.yaml`` trained here).
2. KD student: ``examples/distill.yaml``: SmolLM2 with 15 of its 30 layers (``model.keep_layers``),
   full fine-tune, logit distillation from the teacher (alpha 0.5, T 2, the KL on every token: ``positions: all``).
3. SFT student: the same config, same data, split, seed and steps, with ``training.objective: sft``.

All three answer the same held-out test split (the quickstart's: same data, fractions and seed),
greedily, in one process. Accuracy (of the parsed label) with 95% paired bootstrap intervals
(``tuneforge.eval.compare``, one index matrix for every pair), and the student's generation
speed-up over the teacher on the same prompts (new tokens per second, batch 32).

Goal (issue #7): the KD student beats the SFT student, and keeps >= 90% of the teacher's accuracy.
Printed as a table and written to ``OUT_DIR/distill_proof.json`` (``distill_proof-lN.json`` with ``--labelled N``,
``-a``/``-t``/``-p`` suffixes with ``--alpha``, ``--temperature``, ``--positions``: the KD student's run name).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train_runs(args: argparse.Namespace) -> dict[str, Path]:
    """Train (or reuse, when finished with the same config) the teacher and both students."""
    from tuneforge import finetune, load_config

    common = [f"out_dir={args.out_dir}", "eval.enabled=false",
              *([f"data.split.test={args.test_fraction}"] if args.test_fraction else [])]
    if args.teacher:
        teacher = Path(args.teacher)
    else:
        teacher = finetune(load_config(ROOT / "examples" / "quickstart.yaml", [
            *common, "name=teacher", *([f"training.max_steps={args.teacher_steps}"] if args.teacher_steps else []),
        ])).run_dir
    # Both students start from the same weights: SmolLM2's, or the teacher's own (its adapter merged) when
    # --student-from-teacher; either way model.keep_layers prunes them to the same 15 layers.
    # (The example's own model is runs/quickstart, the teacher; name either explicitly.)
    start = [f"model.name_or_path={teacher.resolve() if args.student_from_teacher else 'smollm2-135m-instruct'}"]
    common = [*common, *start, f"training.max_steps={args.steps}"]
    # --labelled N: both students see only N labelled training rows (data.max_examples), the same N; the
    # sequence-KD student below sees none of the labels, only the teacher's answers to the prompts.
    few = [f"data.max_examples={args.labelled}"] if args.labelled else []
    suffix = f"-l{args.labelled}" if args.labelled else ""
    # Another alpha or temperature is another run (a run directory refuses a changed config).
    knobs = "".join(f"-{k[0]}{v}" for k, v in (("alpha", args.alpha), ("temperature", args.temperature),
                                               ("positions", args.positions)) if v is not None)
    kd = finetune(load_config(ROOT / "examples" / "distill.yaml", [
        *common, *few, f"name=kd-student{suffix}{knobs}", f"distill.teacher={teacher.resolve()}",
        *([f"distill.alpha={args.alpha}"] if args.alpha is not None else []),
        *([f"distill.temperature={args.temperature}"] if args.temperature is not None else []),
        *([f"distill.positions={args.positions}"] if args.positions is not None else []),
    ])).run_dir
    sft = finetune(load_config(ROOT / "examples" / "distill.yaml", [
        *common, *few, f"name=sft-student{suffix}", "training.objective=sft", "distill=null",
    ])).run_dir
    runs = {"teacher": teacher, "kd_student": kd, "sft_student": sft}
    if args.unlabelled is not None:
        # Sequence-level KD over more prompts than there are labels: the teacher answers the training
        # split's tickets plus N new ones (make_tickets.py with another seed; none equal to a held-out ticket).
        prompts = unlabelled_prompts(teacher, args.unlabelled, Path(args.out_dir))
        runs["seq_kd_student"] = finetune(load_config(ROOT / "examples" / "distill.yaml", [
            *common, f"name=seq-kd-student-{args.unlabelled}", f"distill.teacher={teacher.resolve()}",
            "distill.mode=sequence", f"distill.prompts={prompts}", "distill.max_new_tokens=12",
        ])).run_dir
    return runs


def unlabelled_prompts(teacher: Path, extra: int, out_dir: Path) -> Path:
    """A prompts file: the tickets of the teacher's training split, then ``extra`` newly generated ones.

    Held-out tickets (the teacher run's validation and test splits) and repeats are left out, compared
    as the data cleaning keys them (case and whitespace folded).
    """
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_tickets", ROOT / "examples" / "data" / "make_tickets.py")
    make_tickets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_tickets)

    from tuneforge.data.clean import dedupe_key

    def key(text: str) -> str:
        return dedupe_key({"text": text}, "normalized")  # the data cleaning's key: case and whitespace folded

    held_out = {key(json.loads(line)["messages"][0]["content"])
                for split in ("validation", "test") for line in (teacher / "data" / f"{split}.jsonl").read_text().splitlines()}
    labelled = [json.loads(line) for line in (ROOT / "examples" / "data" / "tickets.jsonl").read_text().splitlines()]
    new = make_tickets.generate(seed=make_tickets.SEED + 1)
    prompts, seen, added = [], set(held_out), 0
    for i, row in enumerate(labelled + new):
        text = f"{row['instruction']}\n\n{row['input']}"
        if key(text) in seen or (i >= len(labelled) and added >= extra):
            continue
        seen.add(key(text))
        added += i >= len(labelled)
        prompts.append({"prompt": text})
    path = out_dir / f"prompts-{extra}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(p) + "\n" for p in prompts))
    print(f"prompts: {len(prompts) - added} training tickets + {added} new ones -> {path}")
    return path.resolve()


def answer(run: Path, examples: list[dict], eval_cfg, max_new_tokens: int):
    """Greedy answers of a run's model (adapter merged) on the test examples, with their timing."""
    from tuneforge.eval.generate import generate_answers
    from tuneforge.models import load

    loaded = load(run, merge=True)
    gen = eval_cfg.generation.model_copy(update={"max_new_tokens": max_new_tokens, "do_sample": False})
    out = generate_answers(loaded.model, loaded.tokenizer, examples, gen)
    layers = loaded.model.config.num_hidden_layers
    return out, layers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", help="a finished tuned run to use as the teacher (default: train the quickstart)")
    parser.add_argument("--steps", type=int, default=300, help="training steps of each student")
    parser.add_argument("--out-dir", default="runs/distill-proof")
    parser.add_argument("--student-from-teacher", action="store_true",
                        help="derive both students from the tuned teacher by depth pruning (its adapter merged) "
                        "instead of pruning the base SmolLM2")
    parser.add_argument("--teacher-steps", type=int, default=None,
                        help="steps of the teacher trained here (the quickstart's 140 by default)")
    parser.add_argument("--test-fraction", type=float, default=None,
                        help="test share of all three runs' split (the quickstart's 0.15 by default; a teacher given "
                        "with --teacher must have been trained with the same)")
    parser.add_argument("--unlabelled", type=int, default=None,
                        help="also train a sequence-KD student on the teacher's answers to the training tickets plus "
                        "this many new, unlabelled ones (0: the training tickets only)")
    parser.add_argument("--labelled", type=int, default=None,
                        help="train the KD and SFT students on only this many labelled training rows (data.max_examples), "
                        "as when labels are scarce; the sequence-KD student (--unlabelled) uses the teacher's answers instead")
    parser.add_argument("--alpha", type=float, default=None, help="KD weight (examples/distill.yaml's by default)")
    parser.add_argument("--temperature", type=float, default=None, help="KD temperature (the example's by default)")
    parser.add_argument("--positions", choices=["answers", "all"], default=None,
                        help="where the KL is taken (distill.positions; the example's by default: all)")
    parser.add_argument("--samples", type=int, default=1000, help="bootstrap resamples")
    args = parser.parse_args(argv)

    from tuneforge import load_config
    from tuneforge.data.template import reference
    from tuneforge.eval.compare import bootstrap_indices, paired_bootstrap, single_bootstrap
    from tuneforge.eval.scoring import score_outputs
    from tuneforge.models import load_tokenizer

    runs = train_runs(args)
    tests = {name: (run / "data" / "test.jsonl").read_text() for name, run in runs.items()}
    if len(set(tests.values())) != 1:
        raise SystemExit("the three runs hold different test splits; give a teacher trained on the same data and split")
    examples = [json.loads(line) for line in tests["teacher"].splitlines()]
    eval_cfg = load_config(ROOT / "examples" / "distill.yaml").eval
    refs = [reference(ex) for ex in examples]
    tok = load_tokenizer(runs["kd_student"] / "model")
    max_new = max(len(tok(label)["input_ids"]) for label in eval_cfg.labels) + 4  # stop token + margin

    scored, speed, layers = {}, {}, {}
    for name, run in runs.items():
        out, layers[name] = answer(run, examples, eval_cfg, max_new)
        scored[name] = score_outputs(["accuracy"], out.texts, refs, eval_cfg).metrics["accuracy"]
        speed[name] = out.new_tokens / out.seconds
    idx = bootstrap_indices(len(examples), args.samples, seed=42)
    kd_vs_sft = paired_bootstrap(scored["sft_student"], scored["kd_student"], idx)
    kd_vs_teacher = paired_bootstrap(scored["teacher"], scored["kd_student"], idx)
    result = {
        "test_examples": len(examples), "student_steps": args.steps, "labelled_rows": args.labelled,
        "student_start": "teacher (pruned)" if args.student_from_teacher else "base (pruned)", "runs": {k: str(v) for k, v in runs.items()},
        "layers": layers,
        "accuracy": {name: {"value": v.value, "ci95": single_bootstrap(v, idx)} for name, v in scored.items()},
        "kd_minus_sft": {"diff": kd_vs_sft.diff, "ci95": kd_vs_sft.diff_ci},
        "kd_minus_teacher": {"diff": kd_vs_teacher.diff, "ci95": kd_vs_teacher.diff_ci},
        "kd_share_of_teacher": scored["kd_student"].value / scored["teacher"].value if scored["teacher"].value else None,
        "new_tokens_per_second": speed,
        "student_speedup": speed["kd_student"] / speed["teacher"],
    }
    result["goal_met"] = bool(kd_vs_sft.diff > 0 and (result["kd_share_of_teacher"] or 0) >= 0.9)
    if "seq_kd_student" in scored:
        seq = paired_bootstrap(scored["sft_student"], scored["seq_kd_student"], idx)
        result["seq_kd_minus_sft"] = {"diff": seq.diff, "ci95": seq.diff_ci}
        result["seq_kd_share_of_teacher"] = scored["seq_kd_student"].value / scored["teacher"].value
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.out_dir) / f"distill_proof{runs['kd_student'].name.removeprefix('kd-student')}.json").write_text(json.dumps(result, indent=2))

    print(f"{'model':<12} {'layers':>6} {'accuracy':>9} {'95% CI':>17} {'tokens/s':>9}")
    for name, v in scored.items():
        lo, hi = result["accuracy"][name]["ci95"]
        print(f"{name:<12} {layers[name]:>6} {v.value:>9.3f} {f'[{lo:.3f}, {hi:.3f}]':>17} {speed[name]:>9.1f}")
    print(f"KD - SFT     {kd_vs_sft.diff:+.3f}  95% CI [{kd_vs_sft.diff_ci[0]:+.3f}, {kd_vs_sft.diff_ci[1]:+.3f}]")
    print(f"KD - teacher {kd_vs_teacher.diff:+.3f}  95% CI [{kd_vs_teacher.diff_ci[0]:+.3f}, {kd_vs_teacher.diff_ci[1]:+.3f}]")
    print(f"KD keeps {100 * (result['kd_share_of_teacher'] or 0):.1f}% of the teacher's accuracy; "
          f"student generation speed-up x{result['student_speedup']:.2f}; goal met: {result['goal_met']}")
    if "seq_kd_minus_sft" in result:
        d = result["seq_kd_minus_sft"]
        print(f"sequence KD ({args.unlabelled} unlabelled tickets) - SFT {d['diff']:+.3f}  95% CI [{d['ci95'][0]:+.3f}, "
              f"{d['ci95'][1]:+.3f}]; keeps {100 * result['seq_kd_share_of_teacher']:.1f}% of the teacher's accuracy")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
