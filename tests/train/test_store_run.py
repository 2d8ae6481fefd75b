"""Training reads a memory-mapped training split exactly as it reads the in-memory list."""

from __future__ import annotations

import json

import pytest

from tuneforge import finetune, load_config
from tuneforge.rundir import RunDir


def _losses(run_dir) -> list[float]:
    rows = [json.loads(line) for line in RunDir(run_dir).metrics.read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.mark.parametrize("batching", [{"per_device_batch_size": 2}, {"per_device_batch_size": None, "batch_tokens": 256}])
def test_the_loss_curve_is_bit_identical_with_the_mapped_split(run_config, monkeypatch, batching):
    from transformers import TrainerCallback

    from tuneforge.data.pack import Row
    from tuneforge.data.store import TokenRows

    seen = {}

    class Source(TrainerCallback):  # what the trainer's loader really iterates
        def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
            item = train_dataloader.dataset[0]
            row = item.rows[0] if hasattr(item, "rows") else item
            seen["source"] = type(row.source) if isinstance(row, Row) else type(row)

    curves = {}
    for name, threshold in (("lists", 10**9), ("mapped", 0)):
        monkeypatch.setattr("tuneforge.data.store.MEMORY_MAP_MIN_ROWS", threshold)
        cfg = load_config(run_config(f"store-{name}", data={"cache": False},
                                     training={"max_steps": 4, "logging_steps": 1, "save_steps": 100, **batching}))
        result = finetune(cfg, callbacks=[Source()])
        curves[name] = (_losses(result.run_dir), seen.pop("source"))
    assert curves["mapped"][1] is TokenRows and curves["lists"][1] is list
    assert len(curves["lists"][0]) == 4 and curves["mapped"][0] == curves["lists"][0]  # fp32: bit for bit
