"""DPO reference model: the adapter switched off (tuneforge) vs a second copy of the model (the usual recipe).

    .venv/bin/python bench/dpo_reference_memory.py [--model smollm2-135m-instruct] [--pairs 16] [--steps 2]

Both variants train the same LoRA adapter (r=16, all linear layers) with ``trl.DPOTrainer``
on the first N pairs of ``examples/data/ticket_preferences.jsonl``, fp32, batch 4:

(a) copy: ``ref_model`` = a second ``from_pretrained`` of the base, as TRL's examples and most
    tutorials do for DPO with LoRA;
(b) adapter-off: ``ref_model=None`` and the unwrapped model with ``peft_config`` (what the
    ``dpo`` recipe does), so TRL scores the reference with the adapter disabled.

Each runs in its own process, so its peak RSS (``ru_maxrss``) is its own. Printed: peak RSS,
seconds per step and the ratio to (a). Ratios, not seconds: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ROOT / "examples" / "data" / "ticket_preferences.jsonl"
VARIANTS = ("copy", "adapter-off")


def run_variant(variant: str, model_name: str, n_pairs: int, steps: int, out: Path) -> dict:
    """Train ``steps`` DPO steps in this process and return its peak RSS and time per step."""
    import tempfile

    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from tuneforge.models.load import load_model

    model, tokenizer, _ = load_model(model_name)
    ref = load_model(model_name)[0] if variant == "copy" else None
    rows = [json.loads(line) for line in PAIRS.read_text().splitlines()[:n_pairs]]
    data = Dataset.from_list([
        {"prompt": [{"role": "user", "content": r["prompt"]}],
         "chosen": [{"role": "assistant", "content": r["chosen"]}],
         "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows
    ])
    args = DPOConfig(
        output_dir=tempfile.mkdtemp(), max_steps=steps, per_device_train_batch_size=4, learning_rate=1e-4,
        max_length=256, report_to="none", save_strategy="no", logging_steps=1, use_cpu=True, disable_tqdm=True,
    )
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=data, processing_class=tokenizer,
                         peft_config=lora)
    started = time.perf_counter()
    trainer.train()
    seconds = (time.perf_counter() - started) / steps
    result = {"variant": variant, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "seconds_per_step": seconds, "reference_copy": trainer.ref_model is not None}
    out.write_text(json.dumps(result))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--variant", choices=VARIANTS, help="run one variant in this process (used internally)")
    parser.add_argument("--out", type=Path, help="where --variant writes its result (used internally)")
    args = parser.parse_args(argv)
    if args.variant:
        run_variant(args.variant, args.model, args.pairs, args.steps, args.out)
        return 0
    results = []
    for variant in VARIANTS:
        out = Path(f"/tmp/dpo_reference_memory_{variant}.json")
        cmd = [sys.executable, __file__, "--variant", variant, "--out", str(out), "--model", args.model,
               "--pairs", str(args.pairs), "--steps", str(args.steps)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        results.append(json.loads(out.read_text()))
    base = results[0]
    print("| reference | peak RSS MiB | × copy | s/step | × copy |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['variant']} | {r['peak_rss_mib']:.0f} | {r['peak_rss_mib'] / base['peak_rss_mib']:.2f} | "
              f"{r['seconds_per_step']:.1f} | {r['seconds_per_step'] / base['seconds_per_step']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
