"""The selective LM head gives the same loss and gradients as projecting every position."""

import torch
import torch.nn.functional as F

from tuneforge.data.pack import IGNORE_INDEX, Collator
from tuneforge.models import load
from tuneforge.train.trainer import selective_lm_head


def test_selective_head_matches_full_logits(tiny_model_dir):
    lm = load(tiny_model_dir)
    model, tok = lm.model, lm.tokenizer
    ids = tok("Where is my parcel? It is late. shipping", add_special_tokens=False)["input_ids"]
    labels = [IGNORE_INDEX] * (len(ids) - 3) + ids[-3:]
    batch = Collator(tok.pad_token_id, packed=True)([[{"input_ids": ids, "labels": labels}], [{"input_ids": ids[:6], "labels": [IGNORE_INDEX] * 4 + ids[4:6]}]])
    lab = batch["labels"]
    mask = lab[:, 1:] != IGNORE_INDEX

    full_logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
    full = F.cross_entropy(full_logits[:, :-1][mask], lab[:, 1:][mask], reduction="sum")
    full.backward()
    grad_full = model.model.layers[0].self_attn.q_proj.weight.grad.clone()
    model.zero_grad()

    keep = torch.zeros_like(lab, dtype=torch.bool)
    keep[:, :-1] = mask
    with selective_lm_head(model, keep):
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
    assert logits.shape[:2] == (1, int(mask.sum()))
    sel = F.cross_entropy(logits[0], lab[:, 1:][mask], reduction="sum")
    sel.backward()
    assert torch.allclose(full, sel, atol=1e-5)
    assert torch.allclose(grad_full, model.model.layers[0].self_attn.q_proj.weight.grad, atol=1e-6)
    # The hook is gone afterwards: a plain forward gives every position again.
    assert model(input_ids=batch["input_ids"]).logits.shape[1] == batch["input_ids"].shape[1]


def test_loss_weights_weigh_each_example_of_a_packed_row(tiny_model_dir, tmp_path):
    """data.balance: loss_weights: an example's tokens count with its weight, even packed beside another example."""
    from transformers import TrainingArguments

    from tuneforge.train.trainer import TuneforgeTrainer

    lm = load(tiny_model_dir)
    tok = lm.tokenizer
    ids = tok("Where is my parcel? It is late. shipping", add_special_tokens=False)["input_ids"]
    first = {"input_ids": ids, "labels": [IGNORE_INDEX] * (len(ids) - 3) + ids[-3:]}
    second = {"input_ids": ids[:6], "labels": [IGNORE_INDEX] * 4 + ids[4:6]}
    trainer = TuneforgeTrainer(model=lm.model, args=TrainingArguments(output_dir=str(tmp_path), report_to=[]))
    lm.model.eval()
    collate = Collator(tok.pad_token_id, packed=True)

    def loss(rows):
        with torch.no_grad():
            return trainer.compute_loss(lm.model, collate(rows), num_items_in_batch=1)

    alone = loss([[first]])
    weighted = collate([[{**first, "weight": 2.0}, {**second, "weight": 0.0}]])
    assert weighted["loss_weights"].shape == weighted["labels"].shape
    assert weighted["loss_weights"][0, : len(ids)].eq(2.0).all() and weighted["loss_weights"][0, len(ids):].eq(0).all()
    assert torch.allclose(loss([[{**first, "weight": 2.0}, {**second, "weight": 0.0}]]), 2 * alone, atol=1e-4)
    assert "loss_weights" not in collate([[first, second]])  # unweighted data: the usual sum
