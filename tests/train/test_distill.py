"""Distillation on the tiny model: logit KD pulls the student towards the teacher, bad configs are refused clearly."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from tuneforge import ConfigError, finetune, load_config
from tuneforge.models import build_tiny_model, build_tiny_tokenizer, load, load_tokenizer


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    """Another random tiny model with the same tokenizer and sharp next-token distributions, far from the student's.

    A random tiny model predicts almost uniformly, so the KL between two of them is tiny; scaling
    the (tied) LM head makes the teacher confident, so being pulled towards it is measurable.
    """
    path = tmp_path_factory.mktemp("teacher")
    tok = build_tiny_tokenizer()
    model = build_tiny_model(tok, seed=7)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(8.0)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def distill_config(run_config, name, teacher, **distill):
    path = run_config(name, method={"name": "full"}, training={"max_steps": 30, "learning_rate": 3e-3,
                                                               "logging_steps": 5, "save_steps": 100})
    cfg = yaml.safe_load(path.read_text())
    cfg["training"]["objective"] = "distill"
    cfg["distill"] = {"teacher": str(teacher), **distill}
    path.write_text(yaml.safe_dump(cfg))
    return path


def mean_kl_to_teacher(student_dir, teacher_dir, examples, *, prompts: bool = False) -> float:
    """Mean per-token KL(teacher || student) at T=1 on the answer tokens of ``examples`` (every token with ``prompts``)."""
    from tuneforge.data.template import encode_example
    from tuneforge.distill.logit import kd_loss_sum
    from tuneforge.train.trainer import answer_logits

    student, teacher = load(student_dir).model.eval(), load(teacher_dir).model.eval()
    tok = load_tokenizer(teacher_dir)
    total, tokens = 0.0, 0
    with torch.no_grad():
        for ex in examples:
            enc = encode_example(ex, tok, max_seq_length=128)
            ids, labels = torch.tensor([enc.input_ids]), torch.tensor([enc.input_ids if prompts else enc.labels])
            s, targets, _ = answer_logits(student, {"input_ids": ids}, labels)
            t, _, _ = answer_logits(teacher, {"input_ids": ids}, labels)
            total += float(kd_loss_sum(s, t, 1.0))
            tokens += targets.numel()
    return total / tokens


def test_logit_kd_lowers_the_kl_to_the_teacher_more_than_sft(run_config, teacher_dir, tiny_model_dir):
    kd = finetune(distill_config(run_config, "kd", teacher_dir, alpha=0.9, temperature=2.0))
    sft_cfg = yaml.safe_load(distill_config(run_config, "sft", teacher_dir).read_text())
    sft_cfg["training"]["objective"] = "sft"
    del sft_cfg["distill"]
    sft = finetune(load_config(data=sft_cfg))
    held_out = [json.loads(line) for line in (kd.run_dir / "data" / "test.jsonl").read_text().splitlines()]
    before = mean_kl_to_teacher(tiny_model_dir, teacher_dir, held_out)
    after_kd = mean_kl_to_teacher(kd.run_dir, teacher_dir, held_out)
    after_sft = mean_kl_to_teacher(sft.run_dir, teacher_dir, held_out)
    assert after_kd < 0.7 * before and after_kd < after_sft
    logs = [json.loads(line) for line in (kd.run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in logs if "distill_kl" in r]
    assert len(train) >= 3 and train[-1]["distill_kl"] < train[0]["distill_kl"]
    assert all("distill_ce" in r for r in train)
    manifest = json.loads((kd.run_dir / "manifest.json").read_text())
    assert manifest["objective"] == "distill" and manifest["distill"]["mode"] == "logit"


def test_kd_on_every_position_pulls_the_prompt_tokens_towards_the_teacher_too(run_config, teacher_dir):
    answers = finetune(distill_config(run_config, "kd-answers", teacher_dir, alpha=0.9))
    everywhere = finetune(distill_config(run_config, "kd-all", teacher_dir, alpha=0.9, positions="all"))
    held_out = [json.loads(line) for line in (everywhere.run_dir / "data" / "test.jsonl").read_text().splitlines()]
    assert (mean_kl_to_teacher(everywhere.run_dir, teacher_dir, held_out, prompts=True)
            < 0.9 * mean_kl_to_teacher(answers.run_dir, teacher_dir, held_out, prompts=True))
    logs = [json.loads(line) for line in (everywhere.run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in logs if "distill_kl" in r]
    assert train and all(r["distill_kl_positions"] > 0 for r in train)
    assert json.loads((everywhere.run_dir / "manifest.json").read_text())["distill"]["positions"] == "all"


def test_example_positions_leave_out_example_boundaries_and_padding():
    from tuneforge.distill.logit import example_positions

    # Packed: an example of 3 tokens (answer: its last 2), one of 2 (answer: the last), 3 padding tokens.
    labels = torch.tensor([[-100, 5, 6, -100, 8, -100, -100, -100]])
    packed = {"position_ids": torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2]])}
    assert example_positions(packed, labels).tolist() == [[True, True, False, True, False, False, False]]
    # Unpacked: right padding in the attention mask.
    unpacked = {"attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])}
    assert example_positions(unpacked, torch.full((2, 4), -100)).tolist() == [[True, True, False], [True, True, True]]


def test_the_kl_at_every_position_is_computed_chunk_by_chunk_exactly(teacher_dir, monkeypatch):
    """Chunks of 3 positions give the loss and gradients of one pass over the full logits of both models."""
    from types import SimpleNamespace

    from tuneforge.distill import logit
    from tuneforge.distill.logit import DistillTrainer, example_positions, kd_loss_sum

    tok = build_tiny_tokenizer()
    teacher = load(teacher_dir).model.eval()
    # Two packed rows: examples of 5 and 4 tokens (answers: the last 2 of each) and 3 of padding, and one of 12.
    ids = torch.randint(5, 200, (2, 12), generator=torch.Generator().manual_seed(0))
    pos = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 3, 0, 1, 2], list(range(12))])
    labels = torch.full((2, 12), -100)
    labels[0, 3:5], labels[0, 7:9], labels[1, 8:12] = ids[0, 3:5], ids[0, 7:9], ids[1, 8:12]
    inputs = {"input_ids": ids, "position_ids": pos}

    def run(chunk):
        monkeypatch.setattr(logit, "KL_CHUNK", chunk)
        student = build_tiny_model(tok, seed=3).eval()  # no dropout: the runs compare exactly
        trainer = SimpleNamespace(teacher=teacher, temperature=2.0)
        trainer._chunk_kl = lambda *a: DistillTrainer._chunk_kl(trainer, *a)
        logits, targets, _, kl, positions = DistillTrainer._kl_at_every_position(trainer, student, inputs, labels)
        (kl + logits.sum()).backward()
        return student, logits, targets, kl, positions

    student, logits, targets, kl, positions = run(3)
    predicting = example_positions(inputs, labels)
    assert positions == int(predicting.sum()) == 4 + 3 + 11
    reference = build_tiny_model(tok, seed=3).eval()
    full = reference(**inputs, use_cache=False).logits[:, :-1]  # (a cache turns off packed-row attention)
    with torch.no_grad():
        full_teacher = teacher(**inputs, use_cache=False).logits[:, :-1]
    answers = labels[:, 1:] != -100
    expected = kd_loss_sum(full[predicting], full_teacher[predicting], 2.0) * (int(answers.sum()) / positions)
    assert torch.allclose(kl, expected, rtol=1e-5) and targets.tolist() == labels[:, 1:][answers].tolist()
    assert torch.allclose(logits, full[answers], atol=1e-5)
    (expected + full[answers].sum()).backward()
    one_pass, _, _, kl_one, _ = run(10**6)
    assert torch.allclose(kl, kl_one)
    for a, b, c in zip(student.parameters(), one_pass.parameters(), reference.parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-6) and torch.allclose(a.grad, c.grad, rtol=1e-4, atol=1e-5)


def test_kd_at_every_position_is_refused_under_fsdp(run_config, teacher_dir, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ConfigError, match="distill.positions: all .* FSDP .* distill.positions: answers"):
        finetune(distill_config(run_config, "kd-fsdp", teacher_dir, positions="all"))


def test_validate_plans_a_distill_run_as_the_loaded_student_and_teacher(run_config, teacher_dir, capsys):
    """`tuneforge validate` on a distillation config: the examples are read as SFT's (eval.labels checked on their
    answers), the student is pruned on the meta device, and the teacher's weights and logits are in the estimate."""
    from tuneforge import methods
    from tuneforge.cli.main import main
    from tuneforge.data import prepare
    from tuneforge.models.load import load_model
    from tuneforge.train.args import loader_items
    from tuneforge.train.estimate import model_shape, plan_config, plan_training, teacher_for

    path = distill_config(run_config, "kd-validate", teacher_dir, positions="all")
    raw = yaml.safe_load(path.read_text())
    raw["model"] = {"name_or_path": raw["model"], "keep_layers": 1}
    raw["eval"] = {"enabled": True, "labels": ["billing", "shipping", "account", "refund"]}
    path.write_text(yaml.safe_dump(raw))
    assert main(["validate", str(path)]) == 0
    assert "teacher (weights, logits)" in capsys.readouterr().out
    cfg = load_config(path)
    model, tokenizer, _ = load_model(cfg.model)
    assert model.config.num_hidden_layers == 1
    examples = prepare(cfg.data, tokenizer, max_seq_length=cfg.training.max_seq_length, seed=cfg.training.seed).train
    planned = plan_config(cfg, examples)
    teacher = load(teacher_dir).model
    loaded = plan_training(model_shape(methods.apply(model, cfg.method)), loader_items(examples, cfg, seed=cfg.training.seed),
                           cfg.training, precision="fp32", packed=True, memory_limit=planned.memory_limit,
                           teacher=teacher_for(cfg, teacher))
    assert planned.memory == loaded.memory
    assert planned.memory.teacher > 4 * sum(p.numel() for p in teacher.parameters())


def test_logit_kd_from_a_run_directory_teacher_with_a_pruned_student(run_config, teacher_dir, tmp_path):
    """A tuned run is a teacher (its adapter merged in memory); the student keeps one of two layers."""
    teacher_run = finetune(run_config("teacher"))
    cfg = yaml.safe_load(distill_config(run_config, "student", teacher_run.run_dir).read_text())
    cfg["model"] = {"name_or_path": cfg["model"], "keep_layers": 1}
    cfg["training"]["max_steps"] = 4
    result = finetune(load_config(data=cfg))
    student = load(result.run_dir).model
    assert student.config.num_hidden_layers == 1


def test_a_teacher_with_another_tokenizer_points_to_sequence_mode(run_config, tmp_path):
    other = tmp_path / "other-teacher"
    tok = build_tiny_tokenizer(vocab_size=400)
    build_tiny_model(tok).save_pretrained(other)
    tok.save_pretrained(other)
    with pytest.raises(ConfigError, match=r"another tokenizer than the student.*distill.mode: sequence"):
        finetune(distill_config(run_config, "mismatch", other))


@pytest.mark.parametrize("change, message", [
    ({"training": {"objective": "distill"}}, "training.objective 'distill' needs a distill section"),
    ({"distill": {"teacher": "runs/t"}}, "the distill section is used only with training.objective 'distill'"),
    ({"training": {"objective": "distill"}, "distill": {"teacher": {"base_url": "http://127.0.0.1:9/v1"}, "mode": "logit"}},
     "an endpoint teacher .* returns text; use distill.mode: sequence"),
    ({"training": {"objective": "distill"}, "distill": {"teacher": "runs/t", "alpha": 1.5}}, "distill.alpha"),
    ({"training": {"objective": "distill"}, "distill": {"teacher": "runs/t", "mode": "sequence", "positions": "all"}},
     "distill.positions .* only logit distillation has"),
    ({"training": {"objective": "distill"}, "distill": {"teacher": "runs/t", "positions": "prompt"}}, "distill.positions"),
    ({"training": {"objective": "distill"}, "distill": {"teacher": {"base_url": "127.0.0.1:8000"}}}, "distill.teacher"),
])
def test_the_distill_section_is_checked_before_anything_loads(tmp_path, change, message):
    (tmp_path / "d.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    with pytest.raises(ConfigError, match=message):
        load_config(data={"data": {"train": str(tmp_path / "d.jsonl")}, **change})


def test_an_endpoint_teacher_defaults_to_sequence_mode(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    cfg = load_config(data={"data": {"train": str(tmp_path / "d.jsonl")}, "training": {"objective": "distill"},
                            "distill": {"teacher": {"base_url": "http://127.0.0.1:8000/v1"}}})
    assert cfg.distill.resolved_mode == "sequence"
    assert load_config(data={"data": {"train": str(tmp_path / "d.jsonl")}, "training": {"objective": "distill"},
                             "distill": {"teacher": "runs/t"}}).distill.resolved_mode == "logit"
