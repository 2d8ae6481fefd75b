"""Does a bounded search beat the default config? examples/tune.yaml on the ticket data, end to end.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/search_proof.py [--trials 8] [--out /tmp/search-proof]

1. ``tuneforge tune examples/tune.yaml --trials N`` (TPE + median pruner, validation loss, 30 steps a trial).
2. The default config (the search's base: lr 3e-4, r 16) trained with the test evaluation on.
3. The best trial's ``best.yaml`` trained with the test evaluation on and the default run as its
   baseline, so the accuracy difference comes with a paired bootstrap CI on the same held-out tickets.

Printed: the trials (state, validation loss, steps reached, CPU seconds), how many were pruned, and
best vs default on held-out accuracy and macro-F1. CPU seconds are process CPU time (user + system of
this process and its threads), which load on a shared machine changes far less than wall time.
"""

from __future__ import annotations

import argparse
import platform
import resource
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TUNE = ROOT / "examples" / "tune.yaml"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--out", default="/tmp/search-proof")
    args = parser.parse_args()

    from rich.console import Console
    from optuna.trial import TrialState

    from tuneforge import finetune, load_config
    from tuneforge.search import tune

    console = Console(stderr=True)
    out = Path(args.out)
    where = [f"out_dir={out}"]
    cpu0, wall0 = cpu_seconds(), time.monotonic()
    result = tune(TUNE, trials=args.trials, overrides=where, console=console)
    search_cpu, search_wall = cpu_seconds() - cpu0, time.monotonic() - wall0

    evaluate = ["eval.enabled=true"]
    default = finetune(load_config(TUNE, [*where, "name=tickets-default", *evaluate]), console=console)
    best = finetune(load_config(result.best_config, [*evaluate, f"eval.baseline={default.run_dir}"]), console=console)

    model = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    cpu = next((line.split(":", 1)[1].strip() for line in model.splitlines() if line.startswith("Model name")), platform.processor())
    print(f"\nCPU: {cpu}; search: {args.trials} trials, {search_cpu / 60:.1f} CPU min, {search_wall / 60:.1f} wall min\n")
    print("| trial | state | validation loss | steps reached | lr | r |")
    print("|---|---|---|---|---|---|")
    trials = result.study.get_trials()
    for t in trials:
        steps = max(t.intermediate_values, default=None)
        value = t.value if t.value is not None else (t.intermediate_values.get(steps) if steps is not None else None)
        print(f"| {t.number} | {t.state.name} | {'' if value is None else f'{value:.4f}'} | {steps or ''} | "
              f"{t.params.get('training.learning_rate', float('nan')):.2e} | {t.params.get('method.r', '')} |")
    pruned = sum(t.state == TrialState.PRUNED for t in trials)
    print(f"\npruned {pruned} of {len(trials)} trials; best {result.best_params} (validation loss {result.best_value:.4f})\n")
    print("| metric | default | best | best - default (95% paired CI) |")
    print("|---|---|---|---|")
    assert best.eval is not None and default.eval is not None
    for name in ("accuracy", "macro_f1"):
        m = best.eval.metrics.get(name)
        if m is None:
            continue
        ci = f"[{m.diff_ci[0]:+.3f}, {m.diff_ci[1]:+.3f}]" if m.diff_ci else ""
        print(f"| {name} | {m.base:.3f} | {m.tuned:.3f} | {m.diff:+.3f} {ci} |")


if __name__ == "__main__":
    main()
