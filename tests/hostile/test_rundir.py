"""A hostile look at the run directory: resume with other settings, a second writer, a full disk,
reruns, leftovers and file permissions. Every test here reproduces a bug that once shipped."""

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from tuneforge import ModelError, RunDirError, finetune, load_config
from tuneforge.cli.main import main
from tuneforge.rundir import RunDir

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture
def make_config(tmp_path, tiny_model_dir):
    """Write a tiny-model LoRA config (6 steps, checkpoints every 3) with section overrides."""

    def make(name="hostile", **sections):
        data = tmp_path / "tickets.jsonl"
        if not data.exists():
            labels = ["billing", "shipping", "account", "refund"]
            data.write_text("".join(
                json.dumps({"instruction": "Classify the ticket.", "input": f"ticket {i} about {labels[i % 4]}",
                            "output": labels[i % 4]}) + "\n" for i in range(48)))
        cfg = {
            "name": name, "out_dir": str(tmp_path / "runs"), "model": str(tiny_model_dir),
            "method": {"name": "lora", "r": 4, "alpha": 8},
            "data": {"train": str(data), "split": {"validation": 0.1, "test": 0.1}},
            "training": {"max_steps": 6, "per_device_batch_size": 2, "learning_rate": 1e-3, "logging_steps": 2,
                         "save_steps": 3, "max_seq_length": 128, "precision": "fp32"},
            "eval": {"enabled": False},
        }
        for section, values in sections.items():
            cfg[section] = {**cfg[section], **values} if isinstance(cfg.get(section), dict) and section != "method" else values
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    return make


def _as_if_killed(run: RunDir) -> None:
    """Turn a finished run into one killed after its last checkpoint (what SIGKILL leaves behind)."""
    run.status.write_text(json.dumps({"state": "running", "pid": 1}))
    import shutil

    shutil.rmtree(run.adapter)


def _env():
    return dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_resume_with_another_method_or_lr_is_refused_before_anything_is_rewritten(make_config):
    path = make_config()
    run = RunDir(finetune(load_config(path)).run_dir)
    _as_if_killed(run)
    assert run.state() == "killed"
    stored = run.config.read_bytes()
    with pytest.raises(RunDirError) as err:
        finetune(load_config(path, ["method.name=dora"]), resume=True)
    assert "method.name: stored 'lora', now 'dora'" in str(err.value) and "only training.logging_steps" in str(err.value)
    with pytest.raises(RunDirError, match=r"training.learning_rate: stored 0.001, now 0.5"):
        finetune(load_config(path, ["training.learning_rate=0.5"]), resume=True)
    assert run.config.read_bytes() == stored  # the stored config is the truth, untouched
    # A whitelisted field (logging) may change; the run then continues from its checkpoint.
    result = finetune(load_config(path, ["training.logging_steps=3"]), resume=True)
    assert result.global_step == 6 and run.state() == "finished"
    assert load_config(run.config).training.logging_steps == 3


def test_resume_with_changed_data_keeps_the_stored_test_split(make_config, tmp_path):
    path = make_config()
    run = RunDir(finetune(load_config(path)).run_dir)
    _as_if_killed(run)
    test_split = run.test_split.read_bytes()
    data = tmp_path / "tickets.jsonl"
    data.write_text(data.read_text().replace("ticket 1 ", "ticket one "))
    with pytest.raises(RunDirError, match=r"data files changed.*tickets.jsonl"):
        finetune(load_config(path), resume=True)
    assert run.test_split.read_bytes() == test_split
    assert run.state() == "killed"  # a refused resume records nothing


def test_resume_of_a_finished_run_is_a_no_op_that_says_so(make_config, capsys):
    path = make_config()
    first = finetune(load_config(path))
    run = RunDir(first.run_dir)
    adapter = (run.adapter / "adapter_model.safetensors").read_bytes()
    checkpoints = sorted(p.name for p in run.checkpoints.iterdir())
    metrics = run.metrics.read_bytes()
    assert main(["train", str(path), "--resume"]) == 0
    assert "already finished" in capsys.readouterr().err
    again = finetune(load_config(path), resume=True)
    assert again.already_finished and again.global_step == 6
    assert (run.adapter / "adapter_model.safetensors").read_bytes() == adapter
    assert sorted(p.name for p in run.checkpoints.iterdir()) == checkpoints and run.metrics.read_bytes() == metrics


def test_a_second_writer_is_refused_with_the_holders_pid_and_a_killed_holder_does_not_block(make_config):
    path = make_config()
    run = RunDir(load_config(path).run_dir)
    run.root.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from tuneforge.train.lock import RunLock
            RunLock.acquire(Path({str(run.lock)!r}))
            print("locked", flush=True)
            time.sleep(120)
        """)], env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError, match=f"in use by process {holder.pid}"):
            finetune(load_config(path))
        assert main(["train", str(path)]) == 2
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    # The kernel dropped the dead holder's lock: the next run starts normally.
    assert finetune(load_config(path)).global_step == 6


def test_a_failed_start_leaves_no_folder_and_the_rerun_works(make_config, tmp_path):
    # Found by the schema now: no model is loaded and no folder is made.
    bad = make_config(name="packed-prompt", method={"name": "prompt", "num_virtual_tokens": 4}, data={"packing": "on"})
    assert main(["train", str(bad)]) == 2
    assert not (tmp_path / "runs" / "packed-prompt").exists()
    # A failure after the folder was locked but before anything was written removes it again.
    path = make_config(name="missing-model", model=str(tmp_path / "no-such-model"))
    with pytest.raises(ModelError):
        finetune(load_config(path))
    assert not (tmp_path / "runs" / "missing-model").exists()


def test_make_quickstart_twice_works_and_is_never_called_an_invalid_config(make_config, capsys):
    path = make_config()
    assert main(["train", str(path)]) == 0
    assert main(["train", str(path)]) == 0
    err = capsys.readouterr().err
    assert "already finished" in err and "--set name=" in err and "invalid config" not in err
    # A changed config under the same name: refused, but as a run-directory problem.
    assert main(["train", str(path), "--set", "training.max_steps=7"]) == 2
    err = capsys.readouterr().err
    assert "training.max_steps: stored 6, now 7" in err and "invalid config" not in err


def test_a_run_that_fails_after_training_is_marked_failed_not_finished(make_config, tmp_path):
    path = make_config(eval={"enabled": True, "max_examples": 2, "generation": {"max_new_tokens": 2},
                             "forgetting": {"data": str(tmp_path / "missing.txt")}})
    with pytest.raises(Exception, match="missing.txt"):
        finetune(load_config(path))
    run = RunDir(load_config(path).run_dir)
    assert run.manifest.is_file()  # weights and manifest were written, yet the run did not finish
    status = json.loads(run.status.read_text())
    assert status["state"] == "failed" and "missing.txt" in status["error"] and run.state() == "failed"


_FULL_DISK = """
import resource, signal, sys
from pathlib import Path
from tuneforge import load_config
from tuneforge.models import load_tokenizer
from tuneforge.train.context import RunContext
from transformers import AutoModelForCausalLM
cfg = load_config(sys.argv[1])
ctx = RunContext.open(cfg)
ctx.write_json("generation_config.json", {"eos_token_id": 2})
model = AutoModelForCausalLM.from_pretrained(cfg.model.name_or_path)
tok = load_tokenizer(cfg.model.name_or_path)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, like a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
for step in (lambda: ctx.write_json("generation_config.json", {"pad": "x" * 10000}),
             lambda: ctx.save_weights(model, tok, "model")):
    try:
        step()
    except Exception as exc:  # OSError(EFBIG), or safetensors' own error wrapping it
        print("failed:", getattr(exc, "errno", None) == 27 or "os error 27" in str(exc), flush=True)
"""


def test_a_full_disk_never_leaves_a_truncated_file_or_a_half_weights_folder(make_config):
    path = make_config()
    proc = subprocess.run([sys.executable, "-c", _FULL_DISK, str(path)], env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.stdout.count("failed: True") == 2, proc.stdout + proc.stderr[-2000:]  # 27 = EFBIG
    run = RunDir(load_config(path).run_dir)
    assert json.loads((run.root / "generation_config.json").read_text()) == {"eos_token_id": 2}
    assert not run.model.exists()
    assert [p.name for p in run.root.iterdir() if p.name.startswith(".") and p.name != ".lock"] == []


def test_run_files_are_private(make_config):
    path = make_config(eval={"enabled": True, "max_examples": 2, "generation": {"max_new_tokens": 2},
                             "forgetting": {"enabled": False}})
    old = os.umask(0o022)  # the common default, under which files come out world-readable
    try:
        run = RunDir(finetune(load_config(path)).run_dir)
    finally:
        os.umask(old)
    assert stat.S_IMODE(run.root.stat().st_mode) == 0o700
    for must in (run.test_split, run.data_report, run.config, run.manifest, run.status, run.eval / "predictions.jsonl",
                 run.adapter / "adapter_model.safetensors", run.adapter / "generation_config.json"):
        assert must.is_file(), must
    for p in run.root.rglob("*"):
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode & 0o077 == 0, f"{p} is {oct(mode)}"
    # Run again (make quickstart twice): the stored evaluation comes back, as from the first run.
    again = finetune(load_config(path))
    assert again.already_finished and again.eval is not None and again.eval.summary_table() is not None
