"""Depth pruning: the pruned model is a normal, loadable model with the right layers, and bad input is refused."""

import pytest
import torch

from tuneforge import ModelError
from tuneforge.cli.main import main
from tuneforge.models import load_model, save_tiny_model
from tuneforge.models.prune import layer_indices


@pytest.fixture(scope="module")
def deep_model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("deep"), layers=6)


def test_layer_indices_spread_evenly_with_first_and_last():
    assert layer_indices(30, 15) == [0, 2, 4, 6, 8, 10, 12, 14, 17, 19, 21, 23, 25, 27, 29]
    assert layer_indices(6, 1) == [0] and layer_indices(6, 6) == list(range(6))
    assert layer_indices(6, [5, 0, 2]) == [0, 2, 5]


@pytest.mark.parametrize("keep, message", [
    (7, "7 layers asked, but the model has 6"),
    ([0, 6], r"layer indices \[6\] are out of range"),
    ([1, 1], "repeat"),
])
def test_layer_indices_refuse_what_does_not_fit(keep, message):
    with pytest.raises(ModelError, match=message):
        layer_indices(6, keep)


def test_prune_cli_writes_a_loadable_smaller_model_that_generates(deep_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "student"
    assert main(["prune", str(deep_model_dir), "--keep-layers", "3", "-o", str(out)]) == 0
    assert (out / "model.safetensors").is_file() and (out / "tokenizer_config.json").is_file()
    full = AutoModelForCausalLM.from_pretrained(deep_model_dir)
    small = AutoModelForCausalLM.from_pretrained(out)
    assert small.config.num_hidden_layers == 3 and len(small.model.layers) == 3
    kept = layer_indices(6, 3)  # [0, 2, 5]
    for new, old in enumerate(kept):
        assert torch.equal(small.model.layers[new].mlp.up_proj.weight, full.model.layers[old].mlp.up_proj.weight)
        assert small.model.layers[new].self_attn.layer_idx == new
    if getattr(small.config, "layer_types", None) is not None:
        assert len(small.config.layer_types) == 3
    # Generation with the KV cache equals generation without it: each layer writes its own cache slot.
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("Classify the support ticket", return_tensors="pt").input_ids
    cached = small.generate(ids, max_new_tokens=8, do_sample=False, use_cache=True)
    uncached = small.generate(ids, max_new_tokens=8, do_sample=False, use_cache=False)
    assert cached.shape[1] > ids.shape[1] and torch.equal(cached, uncached)
    # Downstream commands take it like any model folder.
    assert main(["generate", str(out), "-p", "Where is my parcel?", "--max-new-tokens", "4"]) == 0


def test_model_keep_layers_prunes_on_load(deep_model_dir):
    from tuneforge.config.schema import ModelConfig

    model, _, _ = load_model(ModelConfig(name_or_path=str(deep_model_dir), keep_layers=[0, 5]))
    assert model.config.num_hidden_layers == 2 and len(model.model.layers) == 2
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1]
    with pytest.raises(ModelError, match="model.keep_layers: 9 layers asked, but the model has 6"):
        load_model(ModelConfig(name_or_path=str(deep_model_dir), keep_layers=9))


@pytest.mark.parametrize("value, message", [(0, "keep at least one layer"), ([], "empty list"), ([2, 2], "distinct")])
def test_keep_layers_config_errors_name_the_field(value, message):
    from tuneforge import ConfigError
    from tuneforge.config import load_config

    with pytest.raises(ConfigError, match=message) as info:
        load_config(data={"model": {"keep_layers": value}, "data": {"train": "x.jsonl"}})
    assert "model.keep_layers" in str(info.value)


def test_prune_cli_refuses_a_bad_layer_spec(deep_model_dir, tmp_path, capsys):
    assert main(["prune", str(deep_model_dir), "--keep-layers", "half", "-o", str(tmp_path / "x")]) == 2
    assert "--keep-layers: expected a count" in capsys.readouterr().err
    assert main(["prune", str(deep_model_dir), "--keep-layers", "10", "-o", str(tmp_path / "y")]) == 2
    assert "10 layers asked, but the model has 6" in capsys.readouterr().err
