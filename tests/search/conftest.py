"""A tiny-model config with a search section, for search tests."""

import pytest
import yaml

from tests.train.conftest import write_tickets


@pytest.fixture
def search_config(tmp_path, tiny_model_dir):
    """Return a function that writes a tiny-model config with ``search`` (and extra training keys) and returns its path."""

    def make(search=None, name="tiny", **training):
        cfg = {
            "name": name,
            "out_dir": str(tmp_path / "runs"),
            "model": str(tiny_model_dir),
            "method": {"name": "lora", "r": 4, "alpha": 8, "target_modules": "all-linear"},
            "data": {"train": str(write_tickets(tmp_path / "tickets.jsonl", n=80)), "split": {"validation": 0.2, "test": 0.1}},
            "training": {"max_steps": 6, "per_device_batch_size": 2, "learning_rate": 1e-3, "logging_steps": 2,
                         "save_strategy": "no", "eval_strategy": "steps", "eval_steps": 2, "max_seq_length": 128,
                         "precision": "fp32", "report_to": ["none"], **training},
            "eval": {"enabled": False},
            "search": search or {"space": {"training.learning_rate": {"loguniform": [1e-4, 1e-2]},
                                           "method.r": {"choice": [2, 4]}},
                                 "heartbeat_seconds": 1},
        }
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    return make
