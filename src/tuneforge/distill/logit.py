"""Logit distillation: the student matches the teacher's next-token distributions on answer tokens.

Loss per answer token: ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE``
(Hinton et al. 2015; the T^2 keeps the KL's gradient scale independent of T). The
teacher runs under ``torch.no_grad()`` on the very batch the student sees (same packed
rows, position_ids and attention layout), and both LM heads project only the answer
positions (:func:`tuneforge.train.trainer.answer_logits`), so no ``[batch, seq, vocab]``
tensor is ever built.

``positions="all"`` takes the KL at every position of each example instead (prompt tokens
too; the cross-entropy stays on the answers), as pruning-then-distillation recipes do
(Sreenivas et al. 2024, "LLM Pruning and Distillation in Practice: The Minitron Approach"):
a student pruned by depth relearns the teacher's whole next-token distribution, not only
its answers. The KL is then the mean over those positions, weighted like the answer tokens,
so ``alpha`` keeps its meaning; it is computed a chunk of positions at a time, so that there
too no ``[positions, vocab]`` tensor is built for the whole batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from tuneforge.errors import ConfigError
from tuneforge.data.pack import IGNORE_INDEX
from tuneforge.train.trainer import TuneforgeTrainer, answer_cross_entropy, answer_logits, project, selective_lm_head


KL_CHUNK = 1024
"""Positions projected at once by ``positions: all`` (~200 MB of fp32 logits a model for a 49k vocabulary).
A batch with more positions is projected chunk by chunk under activation checkpointing (one more LM-head
pass of the student in the backward: ~20 % slower per step on SmolLM2 with 15 layers, measured with 256)."""


def kd_loss_sum(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher/T) || softmax(student/T))`` summed over positions (``[K, vocab]`` each)."""
    t = temperature
    log_student = F.log_softmax(student.float() / t, dim=-1)
    log_teacher = F.log_softmax(teacher.float() / t, dim=-1)
    return F.kl_div(log_student, log_teacher, log_target=True, reduction="sum") * (t * t)


class DistillTrainer(TuneforgeTrainer):
    """:class:`TuneforgeTrainer` whose loss mixes the KL to a frozen teacher with the answer cross-entropy.

    Args:
        teacher: The teacher model (same tokenizer); frozen and put in eval mode here.
        alpha: Weight of the KL term.
        temperature: Softening temperature of both distributions.

    Logs ``distill_kl`` and ``distill_ce`` (per answer token, averaged since the last log) beside the loss.
    """

    def __init__(self, *args: Any, teacher: Any, alpha: float, temperature: float, positions: str = "answers",
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.teacher = teacher.to(self.args.device).eval().requires_grad_(False)
        self.alpha = alpha
        self.temperature = temperature
        self.positions = positions
        self._sums = self._empty_sums()

    @staticmethod
    def _empty_sums() -> dict[str, float]:
        return {"distill_kl": 0.0, "distill_ce": 0.0, "kl_positions": 0, "tokens": 0}

    def answer_loss(self, model, inputs, labels, weights=None):
        if self.positions == "all":
            logits, targets, outputs, kl, kl_positions = self._kl_at_every_position(model, inputs, labels)
        else:
            logits, targets, outputs = answer_logits(model, inputs, labels, selective=self.selective_head)
            with torch.no_grad():  # the same packed rows, positions and attention layout as the student's
                teacher_logits, _, _ = answer_logits(self.teacher, inputs, labels)
            vocab = min(logits.shape[-1], teacher_logits.shape[-1])  # an embedding padded past the tokenizer's size
            kl, kl_positions = kd_loss_sum(logits[:, :vocab], teacher_logits[:, :vocab], self.temperature), targets.numel()
        ce = answer_cross_entropy(logits, targets, labels, weights)  # data.balance weighs the answer loss
        if model.training:
            self._sums["distill_kl"] += float(kl.detach())
            self._sums["distill_ce"] += float(ce.detach())
            self._sums["kl_positions"] += kl_positions
            self._sums["tokens"] += targets.numel()
        return self.alpha * kl + (1 - self.alpha) * ce, targets, outputs

    def _kl_at_every_position(self, model, inputs, labels):
        """``positions: all``: the KL summed over every position of each example, chunk by chunk.

        Both models' LM heads are kept out of their forward passes (their inputs captured), then
        project KL_CHUNK positions at a time, the student's under activation checkpointing when there
        is more than one chunk, so no ``[positions, vocab]`` tensor exists for more than one chunk, in
        the forward pass or the backward. Returns the answer logits and targets (for the cross-entropy), the outputs, and
        the KL scaled to the answer-token count with the number of positions it covered.
        """
        predicting = example_positions(inputs, labels)
        keep = torch.zeros_like(labels, dtype=torch.bool)
        keep[:, :-1] = predicting
        student, teacher = [], []
        with selective_lm_head(model, keep, capture=student):
            outputs = model(**inputs, use_cache=False)
        with torch.no_grad(), selective_lm_head(self.teacher, keep, capture=teacher):
            self.teacher(**inputs, use_cache=False)  # the same packed rows, positions and attention layout
        hidden, teacher_hidden = student[0], teacher[0]
        targets = labels[:, 1:][predicting]
        if len(hidden) <= KL_CHUNK:  # one chunk: recomputing it in the backward pass would save nothing
            kl = self._chunk_kl(model, hidden, teacher_hidden)
        else:
            kl = hidden.new_zeros((), dtype=torch.float32)
            for start in range(0, len(hidden), KL_CHUNK):
                end = start + KL_CHUNK
                kl = kl + checkpoint(self._chunk_kl, model, hidden[start:end], teacher_hidden[start:end], use_reentrant=False)
        answers = targets != IGNORE_INDEX
        positions, targets = len(hidden), targets[answers]
        # The mean KL per position, counted as many times as there are answer tokens (what the loss is divided by).
        kl = kl * (targets.numel() / max(positions, 1))
        return project(model, hidden[answers]), targets, outputs, kl, positions

    def _chunk_kl(self, model, hidden: torch.Tensor, teacher_hidden: torch.Tensor) -> torch.Tensor:
        logits = project(model, hidden)
        with torch.no_grad():
            teacher_logits = project(self.teacher, teacher_hidden)
        vocab = min(logits.shape[-1], teacher_logits.shape[-1])  # an embedding padded past the tokenizer's size
        return kd_loss_sum(logits[:, :vocab], teacher_logits[:, :vocab], self.temperature)

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs and self._sums["tokens"]:  # a training log: add the two parts of the loss
            sums, self._sums = self._sums, self._empty_sums()
            # Per answer token (the KL of positions: all is already scaled to that), and how many positions the KL saw.
            logs.update({name: round(sums[name] / sums["tokens"], 6) for name in ("distill_kl", "distill_ce")})
            if self.positions == "all":
                logs["distill_kl_positions"] = sums["kl_positions"]
        super().log(logs, *args, **kwargs)


def example_positions(inputs: dict, labels: torch.Tensor) -> torch.Tensor:
    """``[batch, seq - 1]``: True where the next token belongs to the same real example (padding left out).

    Packed rows carry ``position_ids`` that restart at each example and at the padding (its own
    segment); a segment with no labelled token is that padding, since every kept example has one.
    Unpacked rows carry an ``attention_mask``.
    """
    if "position_ids" in inputs:
        pos = inputs["position_ids"][:, -labels.shape[1]:]
        segment = (pos == 0).long().cumsum(1)
        labelled = torch.zeros(pos.shape[0], pos.shape[1] + 1, dtype=torch.long, device=pos.device)
        labelled.scatter_add_(1, segment, (labels != IGNORE_INDEX).long())
        real = labelled.gather(1, segment) > 0
        return real[:, 1:] & (pos[:, 1:] == pos[:, :-1] + 1)
    mask = inputs.get("attention_mask")
    real = torch.ones_like(labels, dtype=torch.bool) if mask is None else mask[:, -labels.shape[1]:].bool()
    return real[:, 1:] & real[:, :-1]


def teacher_tokenizer_dir(teacher: str) -> str:
    """Where the teacher's tokenizer is, found without loading its weights."""
    from tuneforge.models import resolve, resolve_target

    found = resolve_target(teacher)
    # A run's weights folder and an adapter folder carry the tokenizer as trained (save_weights writes it).
    if found.weights is not None and (Path(found.weights) / "tokenizer_config.json").is_file():
        return str(found.weights)
    return resolve(found.ref)  # a model folder, an alias or .gguf (dequantized once), a cached hub id


def check_same_tokenizer(student: Any, teacher: Any, teacher_ref: str) -> None:
    """Refuse logit distillation between different tokenizers (their logits index different tokens).

    Raises:
        ConfigError: vocabularies or special tokens differ; points to ``distill.mode: sequence``.
    """
    problems = []
    s_vocab, t_vocab = student.get_vocab(), teacher.get_vocab()
    if s_vocab != t_vocab:
        differing = len(set(s_vocab.items()) ^ set(t_vocab.items()))
        problems.append(f"vocabularies differ ({len(s_vocab)} vs {len(t_vocab)} tokens, {differing} entries differ)")
    if list(student.all_special_tokens) != list(teacher.all_special_tokens):
        problems.append(f"special tokens differ ({student.all_special_tokens} vs {teacher.all_special_tokens})")
    if problems:
        raise ConfigError(
            f"distill.teacher: {teacher_ref} has another tokenizer than the student model: {'; '.join(problems)}. "
            "Logit distillation compares next-token distributions, which needs the same tokens; use "
            "distill.mode: sequence (the student learns from the teacher's answers) instead"
        )


def load_teacher(teacher: str, student_tokenizer: Any, *, dtype: torch.dtype = torch.float32) -> Any:
    """Check the teacher's tokenizer, then load it (a run's adapter merged in memory), frozen.

    Raises:
        ConfigError: the teacher's tokenizer differs from the student's.
        ModelError: nothing loadable at ``teacher``.
    """
    from tuneforge.models import load, load_tokenizer

    check_same_tokenizer(student_tokenizer, load_tokenizer(teacher_tokenizer_dir(teacher)), teacher)
    model = load(teacher, dtype=dtype, merge=True).model
    return model.eval().requires_grad_(False)
