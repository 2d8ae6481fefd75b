"""A thin ``transformers.Trainer`` subclass: answer-only loss computed only where labels exist.

Why not the stock loss: a causal LM computes logits for every position, but
with answer-only labels most positions have no target. For SmolLM2 the LM
head (576 x 49,152) is about a fifth of the forward FLOPs, and the fp32
logits of a 4k-token batch take ~800 MB (and as much again for their
gradient). We project only the positions that have a target, through a
forward pre-hook on the output embedding, so the forward still runs through
whatever wraps the model (DDP, FSDP, PEFT) and gradient sync is untouched.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer

from tuneforge.data.pack import IGNORE_INDEX
from tuneforge.errors import TrainingError


@contextlib.contextmanager
def selective_lm_head(model: Any, keep: torch.Tensor, capture: list | None = None):
    """Within the block, the LM head only sees hidden states where ``keep`` is True (shape ``[1, K, H]``).

    With ``capture``, the head projects nothing: those hidden states (``[K, H]``) are appended to
    ``capture`` for the caller to project (:func:`project`). Virtual tokens that prompt tuning puts
    before the sequence are left out (``keep`` covers the last positions).
    """
    head = _unwrap(model).get_output_embeddings()

    def pre_hook(module, args):
        hidden = args[0][:, -keep.shape[1]:][keep].unsqueeze(0)
        if capture is not None:
            capture.append(hidden[0])
            hidden = hidden[:, :0]
        return (hidden,) + tuple(args[1:])

    handle = head.register_forward_pre_hook(pre_hook)
    try:
        yield
    finally:
        handle.remove()


def answer_logits(model: Any, inputs: dict, labels: torch.Tensor, *, selective: bool = True) -> tuple[Any, Any, Any]:
    """The logits that predict answer tokens, ``[K, vocab]``, their targets ``[K]``, and the model outputs.

    With ``selective`` the LM head runs only at those K positions (see the module docstring);
    without it (virtual tokens shift positions) every position is projected, then selected.
    """
    targets_mask = labels[:, 1:] != IGNORE_INDEX
    if selective:
        keep = torch.zeros_like(labels, dtype=torch.bool)
        keep[:, :-1] = targets_mask
        with selective_lm_head(model, keep):
            outputs = model(**inputs, use_cache=False)
        logits = outputs.logits[0]
    else:
        outputs = model(**inputs, use_cache=False)
        logits = outputs.logits[:, -labels.shape[1]:][:, :-1][targets_mask]  # prompt tuning prepends tokens
    return logits, labels[:, 1:][targets_mask], outputs


def project(model: Any, hidden: torch.Tensor) -> torch.Tensor:
    """Logits of ``hidden`` (``[K, H]``, as :func:`selective_lm_head` captures them) through the model's LM head,
    soft-capped as the model's forward does where its config says so (Gemma 2)."""
    logits = _unwrap(model).get_output_embeddings()(hidden)
    cap = getattr(getattr(_unwrap(model), "config", None), "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def _unwrap(model: Any) -> Any:
    while hasattr(model, "module"):  # DDP / accelerate wrappers
        model = model.module
    if hasattr(model, "get_base_model"):  # PEFT
        model = model.get_base_model()
    return model


def answer_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor,
                         weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy summed over the answer targets; with ``weights``, each target token weighs as its example
    (the label's weight of ``data.balance: loss_weights``, mean 1 over the data)."""
    if weights is None:
        return F.cross_entropy(logits.float(), targets, reduction="sum")
    per_token = weights[:, 1:][labels[:, 1:] != IGNORE_INDEX]
    return (F.cross_entropy(logits.float(), targets, reduction="none") * per_token).sum()


class TuneforgeTrainer(Trainer):
    """Trainer with the selective answer-only loss, token counting and generation metrics on evaluation.

    Args:
        selective_head: Project only labelled positions (off for prefix/prompt tuning,
            whose virtual tokens shift positions).
        validation_scorer: ``callable(model) -> dict[str, float]`` of generation metrics added to
            each evaluation as ``eval_<name>`` (so early stopping can watch them).
    """

    def __init__(self, *args: Any, selective_head: bool = True, validation_scorer: Any = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.selective_head = selective_head
        self.validation_scorer = validation_scorer
        self.tokens_seen = 0
        # compute_loss below normalises by num_items_in_batch itself, so the Trainer
        # must count label tokens and must not divide by the accumulation steps again.
        self.model_accepts_loss_kwargs = True

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        num_tokens = inputs.pop("num_tokens", None)
        if model.training and num_tokens is not None:
            self.tokens_seen += int(num_tokens)
        labels = inputs.pop("labels")
        weights = inputs.pop("loss_weights", None)  # data.balance: loss_weights
        loss, targets, outputs = self.answer_loss(model, inputs, labels, weights)
        if num_items_in_batch is None:
            loss = loss / targets.numel() if targets.numel() else loss
        else:
            loss = loss / num_items_in_batch
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                # num_items_in_batch was summed over processes, DDP averages gradients: undo the mean.
                loss = loss * self.args.world_size
        return (loss, outputs) if return_outputs else loss

    def answer_loss(self, model: Any, inputs: dict, labels: torch.Tensor,
                    weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """The loss summed over answer tokens, the targets and the model outputs (a subclass changes the loss here).

        ``weights`` (``data.balance: loss_weights``) is one weight per token position, as the collator emits it.
        """
        logits, targets, outputs = answer_logits(model, inputs, labels, selective=self.selective_head)
        return answer_cross_entropy(logits, targets, labels, weights), targets, outputs

    def train(self, *args: Any, **kwargs: Any):
        try:
            return super().train(*args, **kwargs)
        except TrainingError:
            # Let the callbacks close what they opened (progress bar, TensorBoard writer) before the error surfaces.
            self.callback_handler.on_train_end(self.args, self.state, self.control)
            raise

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        # Checked on every micro-batch, not every logging_steps: the Trainer's own NaN filter
        # (logging_nan_inf_filter) would hide it from the logs. One scalar sync, which that filter
        # already pays; the optimizer has not applied this step yet.
        if not torch.isfinite(loss):
            raise TrainingError("loss", float(loss), self.state.global_step + 1, self.args.learning_rate)
        return loss

    def _get_grad_norm(self, model, grad_norm=None):
        # Called between clipping and optimizer.step(): a finite loss can still give inf gradients,
        # and clipping an inf norm writes NaN into every weight (which a checkpoint would then keep).
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        if grad_norm is not None and not math.isfinite(float(grad_norm)):
            raise TrainingError("grad_norm", float(grad_norm), self.state.global_step + 1, self.args.learning_rate)
        return grad_norm

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"):
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        if self.validation_scorer is not None:
            prefix = metric_key_prefix
            was_training = self.model.training
            self.model.eval()
            with torch.no_grad():
                scores = self.validation_scorer(self.model)
            if was_training:
                self.model.train()
            for name, value in scores.items():
                output.metrics[f"{prefix}_{name}"] = value
        return output

    def _run_epoch(self, *args: Any, **kwargs: Any) -> Any:
        # Resumed from a checkpoint taken at the last step (a kill between that save and the final
        # one): transformers would still run one more step past max_steps and change the weights.
        # There is nothing left to train, so the epoch is skipped and training ends as it was.
        if self.state.max_steps > 0 and self.state.global_step >= self.state.max_steps:
            self.control.should_training_stop = True
            return None
        return super()._run_epoch(*args, **kwargs)
