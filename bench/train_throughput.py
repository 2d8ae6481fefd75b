"""Training throughput: the common tutorial recipe vs `tuneforge train`, same model, data and examples.

    .venv/bin/python bench/train_throughput.py [--examples 160] [--variants all]

(a) tutorial: transformers Trainer + PEFT LoRA r=16 on q_proj/v_proj, every row
    padded to max_length 512, fp32, loss on all tokens (DataCollatorForLanguageModeling).
(b) TRL: `trl.SFTTrainer` with its best settings for this machine: packing with the "bfd" strategy
    (best-fit decreasing: whole examples, no cross-example truncation) which makes it padding-free
    (one flattened sequence per batch, position_ids reset per example, so transformers builds the
    block-diagonal mask itself), completion-only loss on prompt/completion rows, 2 packed rows of up
    to 256 tokens per batch, bf16 only where this CPU/GPU has native bf16 (tuneforge's own detection).
(c) tuneforge: `tuneforge train` with the same LoRA config (r=16, q_proj/v_proj) and the quickstart's
    batch shape (2 rows x 256), the default batch sizing (a token budget per step), plus ablations
    that switch one lever off (packing, bf16).

Each variant runs in its own process (so peak RSS is its own) on the same N
training examples of the quickstart dataset; each trained adapter is then
scored on the same held-out test split with the same greedy decoding (unless --no-score).
Printed: real (non-pad) tokens/s, peak RSS, final train loss, test accuracy, ratios to
the tutorial recipe and to TRL, and the fraction of this machine's matmul peak reached.
Ratios, not seconds: the machine is shared.

Fraction of the matmul peak (a model-FLOPs utilisation): the peak is measured in this
run, before the variants, with a torch.matmul loop over the model's own linear-layer shapes
(a 512-token batch x hidden -> q/k/v/o, gate/up, down and the LM head) at fp32 and, where
native, bf16; the best rate of each dtype is its peak. Useful FLOPs per real token are
counted the same for every variant:

    forward  = 2 * N        N = weights of every linear layer incl. the LM head (embedding lookups are free)
    backward = 2 * N        input gradients only: the base weights are frozen, so no weight gradients;
                            LoRA's own FLOPs (r=16 on two projections) are < 0.5% and ignored
    per token = 4 * N       attention scores (QK^T, PV) ignored: rows are short (~100-500 tokens)

so a variant reaches tokens/s * 4N / peak(its dtype). Work a variant does beyond that (padding,
logits for unlabelled positions, recomputation) is not credited.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
LORA = {"name": "lora", "r": 16, "alpha": 32, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}


def prepare_split(work: Path, n: int) -> tuple[Path, Path]:
    """Write the first N training examples and the test split of the quickstart data as chat JSONL."""
    from tuneforge import load_config
    from tuneforge.data import prepare
    from tuneforge.models import load_tokenizer, resolve

    cfg = load_config(QUICKSTART)
    tok = load_tokenizer(resolve(cfg.model))
    prepared = prepare(cfg.data, tok, max_seq_length=cfg.training.max_seq_length, seed=cfg.training.seed)
    train, test = work / "train.jsonl", work / "test.jsonl"
    for path, rows in ((train, prepared.train_examples[:n]), (test, prepared.test_examples)):
        path.write_text("".join(json.dumps({"messages": r["messages"]}) + "\n" for r in rows))
    return train, test


def tutorial_worker(train: Path, out: Path) -> None:
    """(a) The recipe most tutorials show. Runs in its own process."""
    import resource

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from tuneforge.models import load_model

    model, tok, _ = load_model("smollm2-135m-instruct", dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                             target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    rows = [json.loads(line) for line in train.read_text().splitlines()]
    texts = [tok.apply_chat_template(r["messages"], tokenize=False) for r in rows]
    enc = tok(texts, padding="max_length", truncation=True, max_length=512)
    dataset = [{"input_ids": i, "attention_mask": m} for i, m in zip(enc["input_ids"], enc["attention_mask"])]
    real_tokens = sum(sum(m) for m in enc["attention_mask"])
    args = TrainingArguments(output_dir=str(out / "ckpt"), per_device_train_batch_size=4, num_train_epochs=1,
                             learning_rate=2e-4, logging_steps=5, save_strategy="no", report_to="none",
                             use_cpu=True, seed=42, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=dataset,
                      data_collator=DataCollatorForLanguageModeling(tok, mlm=False))
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    model.save_pretrained(str(out / "adapter"))
    tok.save_pretrained(str(out / "adapter"))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    (out / "result.json").write_text(json.dumps({
        "tokens_per_second": real_tokens / seconds, "seconds": seconds, "precision": "fp32",
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "final_loss": losses[-1],
    }))


def trl_worker(train: Path, out: Path) -> None:
    """(b) TRL's SFTTrainer, padding-free packing, completion-only loss. Runs in its own process."""
    import resource

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from tuneforge.models import load_model
    from tuneforge.train.args import resolve_precision

    model, tok, _ = load_model("smollm2-135m-instruct", dtype=torch.float32)
    rows = [json.loads(line) for line in train.read_text().splitlines()]
    # Prompt/completion rows (conversational): the loss covers the answer only, as tuneforge's does.
    dataset = Dataset.from_list([{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows])
    precision = resolve_precision("auto")
    args = SFTConfig(
        output_dir=str(out / "ckpt"), per_device_train_batch_size=2, max_length=256, packing=True,
        packing_strategy="bfd", padding_free=True, completion_only_loss=True, num_train_epochs=1,
        learning_rate=2e-4, logging_steps=5, save_strategy="no", report_to="none", use_cpu=not torch.cuda.is_available(),
        seed=42, disable_tqdm=True, bf16=precision == "bf16", fp16=False,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok,
                         peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                                target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    real_tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])  # packed without padding
    start = time.perf_counter()
    output = trainer.train()
    seconds = time.perf_counter() - start
    trainer.model.save_pretrained(str(out / "adapter"))
    tok.save_pretrained(str(out / "adapter"))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h] or [output.training_loss]
    (out / "result.json").write_text(json.dumps({
        "tokens_per_second": real_tokens / seconds, "seconds": seconds, "precision": precision,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "final_loss": losses[-1],
    }))


def matmul_peaks(config: object, precisions: list[str]) -> dict[str, float]:
    """FLOP/s of this machine on the model's linear-layer shapes (a 512-token batch), best shape per precision."""
    from tuneforge.train.estimate import matmul_flops_per_second

    h, i, v = config.hidden_size, config.intermediate_size, config.vocab_size
    kv = config.num_key_value_heads * (getattr(config, "head_dim", None) or h // config.num_attention_heads)
    shapes = [(512, h, h), (512, h, kv), (512, h, i), (512, i, h), (512, h, v)]
    return {p: max(matmul_flops_per_second(p, seconds=0.5, shape=s) for s in shapes) for p in precisions}


def linear_weights(model_name: str) -> tuple[int, object]:
    """N for the FLOP count (weights of every linear layer, LM head included) and the model config."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    from tuneforge.config import ModelConfig
    from tuneforge.models import resolve

    config = AutoConfig.from_pretrained(resolve(ModelConfig(name_or_path=model_name)))
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)), config


def tuneforge_run(work: Path, name: str, train: Path, test: Path, overrides: list[str]) -> dict:
    """(b) `tuneforge train` with the tutorial's LoRA config, in its own process."""
    import yaml

    cfg = yaml.safe_load(QUICKSTART.read_text())
    cfg.update(name=name, out_dir=str(work / "runs"), method=LORA)
    cfg["data"] = {"train": str(train), "test": str(test), "split": {"validation": 0.0, "test": 0.0}}
    cfg["training"].update(epochs=1, save_strategy="no", eval_strategy="no", learning_rate=2e-4)
    cfg["training"].pop("max_steps", None)  # one epoch over the same examples as the tutorial recipe
    cfg["eval"] = {"enabled": False}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "tuneforge", "train", str(path)] + [a for o in overrides for a in ("--set", o)]
    subprocess.run(cmd, check=True, env=_env(), stdout=subprocess.DEVNULL)
    manifest = json.loads((work / "runs" / name / "manifest.json").read_text())
    losses = [json.loads(l)["loss"] for l in (work / "runs" / name / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]
    return {"tokens_per_second": manifest["tokens_per_second"], "peak_rss_mb": manifest["peak_rss_mb"],
            "precision": manifest["precision"],
            "final_loss": losses[-1], "adapter": str(work / "runs" / name / "adapter")}


def score_worker(adapter: Path, test: Path, out: Path) -> None:
    """Greedy answers of an adapter on the test split; accuracy over the label set."""
    from tuneforge import load_config
    from tuneforge.data import load_examples
    from tuneforge.eval import score
    from tuneforge.models import load

    cfg = load_config(QUICKSTART)
    loaded = load(adapter)
    examples = load_examples(str(test))
    metrics = score(loaded.model, loaded.tokenizer, examples, cfg.eval, metrics=["accuracy", "exact_match"])
    out.write_text(json.dumps(metrics))


def _env() -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def _worker(*args: str) -> None:
    subprocess.run([sys.executable, __file__, "--worker", *args], check=True, env=_env())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=160, help="training examples seen by every variant")
    parser.add_argument("--variants", default="all",
                        help="'all', 'main' (tutorial, TRL, tuneforge only) or 'memory' (the defaults as before "
                        "training.frozen_weights and training.pad_to_multiple_of, with the first, and with both)")
    parser.add_argument("--no-tutorial", action="store_true", help="skip the tutorial recipe (slow: it pads to 512)")
    parser.add_argument("--no-score", action="store_true", help="skip the test-set accuracy of each adapter")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, *rest = args.worker
        {"tutorial": tutorial_worker, "trl": trl_worker, "score": score_worker}[kind](*map(Path, rest))
        return 0

    from tuneforge.train.args import resolve_precision

    work = Path(tempfile.mkdtemp(prefix="tf-bench-"))
    train, test = prepare_split(work, args.examples)
    n_linear, config = linear_weights("smollm2-135m-instruct")
    peaks = matmul_peaks(config, sorted({"fp32", resolve_precision("auto")}))
    results: dict[str, dict] = {}
    print(f"training on {args.examples} examples, scoring on {sum(1 for _ in test.open())} test examples; work dir {work}; "
          f"matmul peak " + ", ".join(f"{p} {r / 1e9:.0f} GFLOP/s" for p, r in peaks.items()), file=sys.stderr)
    for kind, label in (("tutorial", "tutorial (Trainer, pad 512, fp32)"), ("trl", "TRL SFTTrainer (padding-free bfd packing)")):
        if kind == "tutorial" and args.no_tutorial:
            continue
        _worker(kind, str(train), str(work / kind))
        results[label] = {**json.loads((work / kind / "result.json").read_text()), "adapter": str(work / kind / "adapter")}
    variants = {"tuneforge (quickstart batches 2 x 256)": [],
                # No batch fields: batches sized by training.batch_tokens, rows of pack_length, max_seq_length 1024.
                "**tuneforge defaults** (token budget)": ["training.per_device_batch_size=null", "training.max_seq_length=1024"]}
    if args.variants == "all":
        variants.update({"tuneforge, packing off": ["data.packing=off"],
                         "tuneforge, fp32": ["training.precision=fp32"]})
    if args.variants == "memory":
        defaults = variants.pop("**tuneforge defaults** (token budget)")
        variants.update({"tuneforge defaults as before (frozen base fp32, no pad multiple)": [
                             *defaults, "training.frozen_weights=fp32", "training.pad_to_multiple_of=null"],
                         "tuneforge defaults, no pad multiple": [*defaults, "training.pad_to_multiple_of=null"],
                         "**tuneforge defaults**": defaults})
    for i, (label, overrides) in enumerate(variants.items()):
        results[label] = tuneforge_run(work, f"tf{i}", train, test, overrides)
    for label, r in results.items():
        r["accuracy"] = None
        if not args.no_score:
            out = work / f"score-{abs(hash(label))}.json"
            _worker("score", r["adapter"], str(test), str(out))
            r.update(json.loads(out.read_text()))

    from rich.console import Console
    from rich.table import Table

    tutorial = results.get("tutorial (Trainer, pad 512, fp32)")
    trl = results["TRL SFTTrainer (padding-free bfd packing)"]
    table = Table(title=f"LoRA r=16 q_proj/v_proj on SmolLM2-135M, {args.examples} examples, 1 epoch, this CPU")
    for col in ("variant", "real tok/s", "× tutorial", "× TRL", "peak RSS MiB", "× TRL", "% matmul peak", "final loss",
                "test accuracy"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for label, r in results.items():
        tps = r["tokens_per_second"]
        utilisation = tps * 4 * n_linear / peaks[r["precision"]]
        table.add_row(label, f"{tps:.0f}", f"{tps / tutorial['tokens_per_second']:.2f}" if tutorial else "-",
                      f"{tps / trl['tokens_per_second']:.2f}", f"{r['peak_rss_mb']:.0f}",
                      f"{r['peak_rss_mb'] / trl['peak_rss_mb']:.2f}", f"{100 * utilisation:.1f} ({r['precision']})",
                      f"{r['final_loss']:.3f}", "-" if r["accuracy"] is None else f"{r['accuracy']:.3f}")
    Console(width=200).print(table)
    print(f"FLOPs per real token = 4 x {n_linear / 1e6:.1f}M linear weights (forward 2N + input-gradient backward 2N); "
          "peak = best torch.matmul rate on the model's shapes at the variant's precision, measured in this run")
    print("(losses count different tokens: the tutorial's covers prompt and answer, TRL's and tuneforge's the answer only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
