"""Training runs on the tiny model: what a run directory holds, methods, resume after SIGKILL, DDP."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tuneforge import RunDirError, finetune, load_config
from tuneforge.cli.main import main
from tuneforge.rundir import RunDir

from .conftest import kill_after_checkpoint, train_env


def test_lora_run_writes_a_complete_run_directory(run_config):
    cfg = load_config(run_config())
    result = finetune(cfg)
    run = RunDir(result.run_dir)
    assert result.global_step == 6
    for path in (run.config, run.data_report, run.metrics, run.manifest, run.test_split, run.adapter / "adapter_config.json"):
        assert path.is_file(), path
    assert list(run.tensorboard.glob("events.out.tfevents.*"))
    manifest = json.loads(run.manifest.read_text())
    assert manifest["global_step"] == 6 and manifest["tokens_per_second"] > 0 and manifest["peak_rss_mb"] > 0
    assert ("peak_gpu_mb" in manifest) == torch.cuda.is_available()  # recorded only where CUDA trained
    assert manifest["versions"]["transformers"] and all(len(h) == 64 for h in manifest["data_sha256"].values())
    records = [json.loads(line) for line in run.metrics.read_text().splitlines()]
    assert any("loss" in r and r["tokens_per_second"] > 0 for r in records)
    # The saved config reloads as the same config.
    assert load_config(run.config) == cfg
    # The adapter loads with plain PEFT, and its generation config stops at the end-of-turn token.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, GenerationConfig

    base = AutoModelForCausalLM.from_pretrained(cfg.model.name_or_path)
    model = PeftModel.from_pretrained(base, str(run.adapter))
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) > 0
    gen = GenerationConfig.from_pretrained(str(run.adapter))
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(str(run.adapter)).convert_tokens_to_ids("<|im_end|>") in eos


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    (weights,) = [p for p in folder.glob("*.safetensors") if p.name != "tokenizer.safetensors"]
    return load_file(str(weights))


def _test_examples(run: RunDir) -> list[dict]:
    return [json.loads(line) for line in run.test_split.read_text().splitlines()]


def _loss(model, tokenizer, examples) -> float:
    from tuneforge.config import EvalConfig
    from tuneforge.eval import score

    return score(model.eval(), tokenizer, examples, EvalConfig(), metrics=["loss"], max_seq_length=128)["loss"]


def _logits(model, tokenizer) -> torch.Tensor:
    enc = tokenizer("Classify the ticket: where is my parcel 1234", return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**enc).logits[:, -enc["input_ids"].shape[1]:].float()


# Final evaluation of loss only (fast): tuned (in memory, adapter on) against base (adapter off).
LOSS_EVAL = {"enabled": True, "metrics": ["loss"], "bootstrap_samples": 200, "forgetting": {"enabled": False}}


def test_training_changes_the_weights_and_lowers_the_loss(run_config, tiny_model_dir):
    result = finetune(load_config(run_config(training={"max_steps": 30, "learning_rate": 2e-2}, eval=LOSS_EVAL)))
    # Every LoRA B matrix starts at zero: a non-zero B is a weight that training moved.
    adapter = _tensors(RunDir(result.run_dir).adapter)
    lora_b = {k: v for k, v in adapter.items() if "lora_B" in k}
    assert len(lora_b) == 2 * 7  # 2 layers x q/k/v/o/gate/up/down
    assert all(v.abs().max() > 1e-3 for v in lora_b.values()), {k: float(v.abs().max()) for k, v in lora_b.items()}
    # The held-out answer loss fell, by a margin the paired bootstrap is sure of.
    loss = result.eval.metrics["loss"]
    assert loss.tuned < loss.base - 0.1, (loss.base, loss.tuned)
    assert loss.diff_ci[1] < 0


# Learning rates large enough that 4 steps move each method's held-out loss well past float noise.
@pytest.mark.parametrize("method, lr", [({"name": "full"}, 1e-3), ({"name": "dora", "r": 4}, 1e-2), ({"name": "ia3"}, 0.1),
                                        ({"name": "prompt", "num_virtual_tokens": 4}, 0.1),
                                        ({"name": "bottleneck", "reduction_factor": 4}, 1e-2)])
def test_other_methods_train_and_save(run_config, tiny_model_dir, method, lr):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tuneforge.models import load_tokenizer

    path = run_config(name=f"m-{method['name']}", method=method,
                      training={"max_steps": 4, "save_steps": 2, "learning_rate": lr}, eval=LOSS_EVAL)
    result = finetune(load_config(path))
    run = RunDir(result.run_dir)
    assert result.global_step == 4
    tokenizer = load_tokenizer(tiny_model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    if method["name"] == "full":
        saved = AutoModelForCausalLM.from_pretrained(str(run.model))
        assert not (run.adapter / "adapter_config.json").exists()
    else:
        saved = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(run.adapter))
        assert not (run.model / "config.json").exists()
    # The saved artifact is the trained model: its held-out loss is the one the final evaluation measured
    # on the in-memory model right after training...
    examples = _test_examples(run)
    measured = result.eval.metrics["loss"]
    assert _loss(saved, tokenizer, examples) == pytest.approx(measured.tuned, abs=1e-5)
    # ...and training moved it away from the base model, by far more than that tolerance (the random
    # tiny model barely attends to soft prompts, so prompt tuning moves the loss least: ~8e-4).
    assert _loss(base, tokenizer, examples) == pytest.approx(measured.base, abs=1e-5)
    assert abs(measured.tuned - measured.base) > 2e-4
    assert (_logits(saved, tokenizer) - _logits(base, tokenizer)).abs().max() > 1e-3
    # The saved weights are, bit for bit, the in-memory weights the Trainer checkpointed at the last step,
    # and differ from those two steps earlier (the loss check alone is too coarse for soft prompts and
    # IA3 vectors, and a soft prompt differs from the base even untrained).
    final = _tensors(run.weights)
    last, earlier = (_tensors(run.checkpoints / f"checkpoint-{step}") for step in (4, 2))
    assert final.keys() == last.keys() == earlier.keys()
    assert all(torch.equal(final[k], last[k]) for k in final)
    assert max(float((final[k] - earlier[k]).abs().max()) for k in final) > 1e-4


# Plain SGD at a constant rate, no decay and no clipping: the update is exactly -lr x gradient, so a
# wrongly scaled loss (e.g. divided by the accumulation steps twice) shows up in the weights. Adam
# would hide it (its update is nearly scale-free), and clipping would cap it.
EXACT_SGD = {"max_steps": 3, "learning_rate": 0.5, "optimizer": "sgd", "lr_scheduler": "constant",
             "warmup_ratio": 0.0, "weight_decay": 0.0, "max_grad_norm": 1e9, "logging_steps": 1,
             "save_strategy": "no"}


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], start: dict[str, torch.Tensor]):
    assert a.keys() == b.keys()
    for name in a:
        moved = float((a[name] - start[name]).abs().max()) if name in start else float(a[name].abs().max())
        assert torch.allclose(a[name], b[name], rtol=0, atol=1e-6), (name, float((a[name] - b[name]).abs().max()), moved)
    # The runs did move the weights, by far more than the tolerance above.
    assert max(float((a[n] - start[n]).abs().max()) for n in a if n in start) > 1e-2


def test_gradient_accumulation_gives_the_same_update_as_a_bigger_batch(run_config, tiny_model_dir):
    # Examples of different lengths: the token-weighted mean over 4 examples must equal the
    # accumulation of two 2-example micro-batches normalised by the tokens of all four.
    runs = {}
    for name, batch, accumulation in (("b4x1", 4, 1), ("b2x2", 2, 2)):
        path = run_config(name=name, method={"name": "full"},
                          training={**EXACT_SGD, "per_device_batch_size": batch, "gradient_accumulation_steps": accumulation})
        runs[name] = finetune(load_config(path))
    losses = {name: [json.loads(l)["loss"] for l in RunDir(r.run_dir).metrics.read_text().splitlines() if '"loss"' in l]
              for name, r in runs.items()}
    assert losses["b4x1"] == pytest.approx(losses["b2x2"], rel=1e-6)  # the logged loss is scaled alike
    _assert_same_weights(_tensors(RunDir(runs["b4x1"].run_dir).model), _tensors(RunDir(runs["b2x2"].run_dir).model),
                         _tensors(tiny_model_dir))


def test_a_finished_run_is_shown_again_not_overwritten_and_resume_needs_a_checkpoint(run_config):
    path = run_config()
    with pytest.raises(RunDirError, match="no complete checkpoint"):
        finetune(load_config(path), resume=True)
    first = finetune(load_config(path))
    adapter = (RunDir(first.run_dir).adapter / "adapter_model.safetensors").read_bytes()
    # The same config again (make quickstart twice): the stored results, nothing trained, exit 0.
    again = finetune(load_config(path))
    assert again.already_finished and again.global_step == first.global_step == 6
    assert main(["train", str(path)]) == 0
    # Another config under the same name is refused, not mistaken for an invalid config.
    with pytest.raises(RunDirError, match="already finished with a different config.*learning_rate"):
        finetune(load_config(path, ["training.learning_rate=0.1"]))
    assert main(["train", str(path), "--set", "training.learning_rate=0.1"]) == 2  # a clear error, not a traceback
    assert (RunDir(first.run_dir).adapter / "adapter_model.safetensors").read_bytes() == adapter


def test_qlora_on_cpu_is_a_clear_error(run_config, capsys):
    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    assert main(["train", str(run_config(method={"name": "qlora"}))]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "needs a CUDA GPU" in err and "use method 'lora'" in err and "Traceback" not in err


def test_early_stopping_on_validation_loss(run_config):
    path = run_config(training={"max_steps": 40, "eval_strategy": "steps", "eval_steps": 2, "save_steps": 2,
                                "learning_rate": 0.5, "early_stopping": {"patience": 1, "metric": "eval_loss"}})
    result = finetune(load_config(path))
    # A learning rate this high diverges quickly; early stopping ends the run long before max_steps.
    assert result.global_step < 40
    assert any("eval_loss" in l for l in RunDir(result.run_dir).metrics.read_text().splitlines())


@pytest.mark.parametrize("precision", ["fp32", "bf16"])  # bf16: the frozen base is bf16 while validation generates
def test_early_stopping_on_a_generation_metric(run_config, precision):
    path = run_config(name=f"gen-metric-{precision}",
                      training={"max_steps": 12, "eval_strategy": "steps", "eval_steps": 2, "save_steps": 2,
                                "precision": precision, "frozen_weights": "auto" if precision == "fp32" else "bf16",
                                "early_stopping": {"patience": 2, "metric": "exact_match"}},
                      eval={"enabled": False, "generation": {"max_new_tokens": 4, "batch_size": 8}})
    result = finetune(load_config(path))
    records = [json.loads(l) for l in RunDir(result.run_dir).metrics.read_text().splitlines()]
    # The validation metric was generated and scored at every evaluation, and early stopping watched it.
    scored = [r["eval_exact_match"] for r in records if "eval_exact_match" in r]
    assert len(scored) >= 2 and all(0.0 <= v <= 1.0 for v in scored)
    state = json.loads((sorted(RunDir(result.run_dir).checkpoints.glob("checkpoint-*"))[-1] / "trainer_state.json").read_text())
    assert state["best_metric"] is not None and "eval_exact_match" in json.dumps(state["log_history"])
    assert json.loads(RunDir(result.run_dir).manifest.read_text())["frozen_weights"] == precision


def test_resume_after_sigkill_reaches_the_same_final_step(run_config):
    path = run_config(name="killed", training={"max_steps": 60, "save_steps": 5, "save_total_limit": 2, "logging_steps": 20})
    cfg = load_config(path)
    run = RunDir(cfg.run_dir)
    kill_after_checkpoint(path, run.checkpoints, timeout=240)
    assert not run.adapter.exists(), "the run finished before it was killed"
    assert run.state() == "killed"  # marked running, but no process holds its lock
    result = finetune(cfg, resume=True)
    assert result.global_step == 60
    state = json.loads((run.checkpoints / "checkpoint-60" / "trainer_state.json").read_text())
    assert state["global_step"] == 60
    rank = json.loads((run.root / "ranks" / "rank-0.json").read_text())
    assert rank["start_step"] % 5 == 0 and 5 <= rank["start_step"] < 60  # continued from a checkpoint
    assert (run.adapter / "adapter_model.safetensors").is_file() and run.state() == "finished"
    # The resumed run ends with the weights of a run that was never interrupted (same seed, data order,
    # dropout masks and schedule: the checkpoint restored the optimizer, scheduler and RNG states).
    straight = finetune(load_config(path).model_copy(update={"name": "straight"}))
    assert straight.global_step == 60
    resumed, uninterrupted = _tensors(run.adapter), _tensors(RunDir(straight.run_dir).adapter)
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:
        assert torch.allclose(resumed[name], uninterrupted[name], rtol=0, atol=1e-6), name
    assert max(float(v.abs().max()) for k, v in resumed.items() if "lora_B" in k) > 1e-2  # and they trained


def test_resume_skips_a_half_written_checkpoint(tmp_path):
    from tuneforge.train.pipeline import latest_complete_checkpoint

    for step, complete in ((10, True), (20, True), (30, False)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert latest_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-20")
    assert latest_complete_checkpoint(tmp_path / "missing") is None


def test_two_process_ddp_with_gloo(run_config, tmp_path):
    # LoRA without dropout, so both processes and the single-process reference draw no random masks.
    lora = {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}
    path = run_config(name="ddp", method=lora, training={**EXACT_SGD, "per_device_batch_size": 2})
    # accelerate's --cpu flag means one process (or MPI); --multi_gpu starts torchrun processes, which
    # on a machine without GPUs train on the CPU with the gloo backend.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1", "--multi_gpu",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533",
           "-m", "tuneforge", "train", str(path)]
    proc = subprocess.run(cmd, env=train_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = RunDir(load_config(path).run_dir)
    ranks = [json.loads((run.root / "ranks" / f"rank-{i}.json").read_text()) for i in (0, 1)]
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    assert [r["world_size"] for r in ranks] == [2, 2] and {r["backend"] for r in ranks} == {backend}
    assert all(r["global_step"] == 3 and r["tokens_seen"] > 0 for r in ranks)
    # Gradients were all-reduced: both ranks end with the same adapter weights.
    assert ranks[0]["trainable_checksum"] == pytest.approx(ranks[1]["trainable_checksum"], rel=1e-6)
    # ...and scaled right: 2 processes x 2 examples take the step one process takes with 2 x 2 accumulated
    # (each rank's loss is normalised by the label tokens of both ranks, then DDP averages the gradients).
    single = finetune(load_config(run_config(name="accumulated", method=lora,
                                             training={**EXACT_SGD, "per_device_batch_size": 2,
                                                       "gradient_accumulation_steps": 2})))
    adapter = _tensors(run.adapter)
    _assert_same_weights(adapter, _tensors(RunDir(single.run_dir).adapter), {k: torch.zeros_like(v) for k, v in adapter.items()})
    from tuneforge.models import load

    loaded = load(run.root)
    assert type(loaded.model).__name__ == "PeftModelForCausalLM"


def test_eval_without_test_rows_says_so(run_config, capsys):
    from rich.console import Console

    from tuneforge.eval import NO_TEST_ROWS
    from tuneforge.train.pipeline import finetune as run_pipeline

    path = run_config(name="no-test", data={"split": {"validation": 0.1, "test": 0}}, eval={"enabled": True})
    console = Console(record=True, width=200)
    result = run_pipeline(load_config(path), console=console)
    run = RunDir(result.run_dir)
    assert result.eval is None and not run.eval.exists()
    assert NO_TEST_ROWS in console.export_text()
    assert json.loads(run.manifest.read_text())["eval_skipped"] == NO_TEST_ROWS
    capsys.readouterr()
    assert main(["eval", str(run.root)]) == 2  # evaluating the run later says the same, not "0 examples"
    assert "no test rows (set data.test or data.split.test)" in capsys.readouterr().err.replace("\n", " ")


def test_a_second_run_reuses_the_prepared_data(run_config):
    from rich.console import Console

    from tuneforge.train.pipeline import finetune as run_pipeline

    texts, reports = [], []
    for name in ("first", "second"):
        console = Console(record=True, width=200)
        result = run_pipeline(load_config(run_config(name=name, training={"max_steps": 1})), console=console)
        texts.append(console.export_text())
        reports.append(RunDir(result.run_dir).data_report.read_text())
    assert "data: reused prepared cache" not in texts[0] and "data: reused prepared cache" in texts[1]
    assert reports[0] == reports[1]
    # data.cache: false prepares again.
    console = Console(record=True, width=200)
    run_pipeline(load_config(run_config(name="third", data={"cache": False}, training={"max_steps": 1})), console=console)
    assert "data: reused prepared cache" not in console.export_text()
