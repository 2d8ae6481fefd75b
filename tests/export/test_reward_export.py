"""A reward model merges into a Hugging Face sequence-classification folder that scores as the run does; GGUF is refused."""

from __future__ import annotations

import pytest

from tuneforge.errors import ExportError, ModelError

from ..conftest import REWARD_MARK

PROMPTS = ["Classify the ticket: my invoice 9 shows the wrong amount"] * 2
ANSWERS = [f"{REWARD_MARK} billing", "billing"]


def test_merged_reward_model_loads_with_transformers_and_scores_like_the_run(reward_run, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from tuneforge.eval.reward import encode, load_reward_model, score_ids
    from tuneforge.export import merge
    from tuneforge.models import load_tokenizer, resolve_target
    from tuneforge.models.load import load

    out = merge(reward_run, tmp_path / "merged")
    expected = load_reward_model(reward_run).score(PROMPTS, ANSWERS)
    # Plain transformers, no PEFT: the trained head is in the folder.
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = load_tokenizer(out)
    assert model.config.num_labels == 1 and model.config.pad_token_id == tokenizer.pad_token_id
    ids = [encode(tokenizer, p, a) for p, a in zip(PROMPTS, ANSWERS)]
    assert score_ids(model, ids, pad_token_id=tokenizer.pad_token_id) == pytest.approx(expected, abs=1e-4)
    assert expected[0] > expected[1]
    # Every loader sees the folder as a reward model.
    assert resolve_target(out).task == "reward"
    assert load_reward_model(out).score(PROMPTS, ANSWERS) == pytest.approx(expected, abs=1e-4)
    with pytest.raises(ModelError, match="is a reward model"):
        load(out)


@pytest.mark.parametrize("fmt", ["gguf", "hf"])
def test_export_of_a_reward_model_is_refused_with_the_reason(reward_run, tmp_path, fmt):
    from tuneforge.export import pipeline

    with pytest.raises(ExportError, match=r"is a reward model .* score head has no place in it .* `tuneforge merge`"):
        pipeline.run(reward_run, fmt=fmt, output=tmp_path / "out")
    assert not (tmp_path / "out").exists()
