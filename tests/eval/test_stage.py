"""End-to-end evaluation on the tiny model: a LoRA-wrapped model as tuned, its base as baseline.

Through the Python API (``run``, ``score``) and the CLI (``tuneforge eval``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.eval.conftest import LABELS, lora_model, write_jsonl
from tuneforge.cli.main import main
from tuneforge.config.schema import EvalConfig, ForgettingConfig, GenerationConfig
from tuneforge.eval import EvalResult, run, score
from tuneforge.eval.forgetting import document_nll, load_reference_texts
from tuneforge.eval.generate import generate_answers, stop_token_ids
from tuneforge.eval.scoring import loss_values
from tuneforge.models import LoadedModel, load_model

FAST = {"bootstrap_samples": 200, "generation": {"max_new_tokens": 4, "batch_size": 4}}


@pytest.fixture
def tuned(tiny_model_dir):
    from tuneforge.models import load_tokenizer

    return LoadedModel(lora_model(tiny_model_dir), load_tokenizer(tiny_model_dir), str(tiny_model_dir))


def test_run_lora_against_base(tuned, tiny_model_dir, tickets, general_text, tmp_path):
    cfg = EvalConfig(labels=LABELS, forgetting={"data": str(general_text)}, **FAST)
    result = run(cfg, tuned=tuned, examples=tickets, out_dir=tmp_path / "eval", seed=1, max_seq_length=256)

    assert isinstance(result, EvalResult)
    assert result.baseline_name == "base" and result.examples == len(tickets)
    assert list(result.metrics) == ["loss", "perplexity", "accuracy", "macro_f1", "label_validity", "label_likelihood_accuracy",
                                    "label_likelihood_macro_f1", "exact_match"]
    for name in ("metrics.json", "predictions.jsonl", "report.md", "report.html", "metrics.png"):
        assert (tmp_path / "eval" / name).is_file(), name

    # The base was evaluated by switching the adapter off: its numbers equal a freshly loaded base model's.
    base_model, base_tok, _ = load_model(str(tiny_model_dir))
    fresh = score(base_model, base_tok, tickets, cfg, metrics=["loss"], max_seq_length=256)
    assert result.metrics["loss"].base == pytest.approx(fresh["loss"], rel=1e-5)
    assert result.metrics["loss"].tuned != pytest.approx(fresh["loss"], rel=1e-3)  # the LoRA changed the model
    assert result.metrics["loss"].diff == pytest.approx(result.metrics["loss"].tuned - result.metrics["loss"].base)
    # The CI of the loss difference: the per-example differences say what it must look like.
    _assert_sensible_interval(result.metrics["loss"], _per_example_diffs(tmp_path / "eval", "loss"))

    # Forgetting: the same general-text perplexity as the base model measured directly.
    texts = load_reference_texts(ForgettingConfig(data=str(general_text)))
    direct = loss_values(document_nll(base_model, base_tok, texts, max_seq_length=256))["perplexity"].value
    assert result.forgetting.base_perplexity == pytest.approx(direct, rel=1e-5)
    assert result.forgetting.documents == len(texts)
    assert result.forgetting.flagged == (result.forgetting.rise > cfg.forgetting.max_rise)

    rows = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == len(tickets)
    assert rows[0]["reference"] == "billing" and rows[0]["prompt"][-1]["role"] == "user"
    assert {"base_output", "tuned_output", "base_label", "tuned_label", "base_scores", "tuned_scores"} <= set(rows[0])
    assert set(rows[0]["tuned_scores"]) == set(result.metrics)
    unparseable = sum(r["tuned_label"] is None for r in rows)
    assert result.unparseable["tuned"] == unparseable

    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["metrics"]["accuracy"]["tuned"] == result.metrics["accuracy"].tuned
    assert saved["settings"]["bootstrap_samples"] == 200 and saved["timing"]["tuned"]["examples_per_second"] > 0
    assert saved["timing"]["base label likelihood"]["examples_per_second"] > 0

    # Label likelihood: every example gets a label (none unparseable), compared base vs tuned with intervals.
    likely = result.metrics["label_likelihood_accuracy"]
    assert likely.base_ci is not None and likely.diff_ci is not None and likely.tuned_ci[0] <= likely.tuned <= likely.tuned_ci[1]
    assert all(r["tuned_likeliest_label"] in LABELS and set(r["tuned_label_logprobs"]) == set(LABELS) for r in rows)
    hits = [float(r["tuned_likeliest_label"] == r["reference"]) for r in rows]
    assert likely.tuned == pytest.approx(sum(hits) / len(hits))
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "Label likelihood scoring time (tuned)" in report and "summed log-probability" in report

    # The adapter is switched back on afterwards: the tuned loss is measured again.
    again = score(tuned.model, tuned.tokenizer, tickets, cfg, metrics=["loss"], max_seq_length=256)["loss"]
    assert again == pytest.approx(result.metrics["loss"].tuned, rel=1e-6)


def _assert_sensible_interval(comparison, per_example: np.ndarray) -> None:
    """A paired-bootstrap 95% CI brackets its point estimate and is as wide as the per-example spread implies."""
    lo, hi = comparison.diff_ci
    assert lo <= comparison.diff <= hi, (lo, comparison.diff, hi)
    # A resampled mean lies within the per-example differences, so the interval does too...
    assert per_example.min() - 1e-9 <= lo < hi <= per_example.max() + 1e-9, (lo, hi, per_example)
    # ...and its width is about a normal interval's, 2 x 1.96 standard errors (loose: 6 examples, token-weighted).
    normal_width = 2 * 1.96 * per_example.std() / np.sqrt(len(per_example))
    assert 0.3 * normal_width < hi - lo < 2.0 * normal_width, (hi - lo, normal_width)


def _per_example_diffs(eval_dir, metric: str) -> np.ndarray:
    rows = [json.loads(line) for line in (eval_dir / "predictions.jsonl").read_text().splitlines()]
    return np.array([r["tuned_scores"][metric] - r["base_scores"][metric] for r in rows])


def test_a_clear_difference_gives_an_interval_that_excludes_zero(tiny_model_dir, tickets, tmp_path):
    # The base model with its final norm scaled up 30x: its near-uniform predictions turn peaked and
    # (being random) wrong, so every example's answer loss rises; the unchanged base is the baseline.
    from tuneforge.models import load_tokenizer

    worse = load_model(str(tiny_model_dir))[0]
    with torch.no_grad():
        worse.model.norm.weight.mul_(30)
    tokenizer = load_tokenizer(tiny_model_dir)
    base = LoadedModel(load_model(str(tiny_model_dir))[0], tokenizer, str(tiny_model_dir))
    cfg = EvalConfig(metrics=["loss"], forgetting={"enabled": False}, baseline=str(tiny_model_dir), **FAST)
    result = run(cfg, tuned=LoadedModel(worse, tokenizer, str(tiny_model_dir)), baseline=base, examples=tickets,
                 out_dir=tmp_path, max_seq_length=256)
    per_example = _per_example_diffs(tmp_path, "loss")
    assert (per_example > 1.0).all(), per_example  # the premise: a clear, one-sided change
    _assert_sensible_interval(result.metrics["loss"], per_example)
    assert result.metrics["loss"].diff_ci[0] > 0


def test_identical_models_give_an_interval_around_zero(tiny_model_dir, tickets, tmp_path):
    # The base model against a separately loaded copy of itself: every difference is zero, so the
    # interval must include zero (a CI that excluded it would claim an improvement that is not there).
    from tuneforge.models import load_tokenizer

    tuned = LoadedModel(load_model(str(tiny_model_dir))[0], load_tokenizer(tiny_model_dir), str(tiny_model_dir))
    copy = LoadedModel(load_model(str(tiny_model_dir))[0], load_tokenizer(tiny_model_dir), str(tiny_model_dir))
    cfg = EvalConfig(labels=LABELS, forgetting={"enabled": False}, baseline=str(tiny_model_dir), **FAST)
    result = run(cfg, tuned=tuned, baseline=copy, examples=tickets, out_dir=tmp_path, max_seq_length=256)
    for name, comparison in result.metrics.items():
        lo, hi = comparison.diff_ci
        assert comparison.diff == pytest.approx(0.0, abs=1e-9), name
        assert lo <= 0.0 <= hi, (name, lo, hi)
        # Paired resampling draws the same examples for both sides, so every resampled difference is
        # zero: the interval collapses to a point. An unpaired bootstrap would give a wide interval here.
        assert hi - lo == pytest.approx(0.0, abs=1e-9), (name, lo, hi)
    assert result.changed is None or (not result.changed.wrong_to_right and not result.changed.right_to_wrong)


def test_summary_table_lists_metrics(tuned, tickets, tmp_path):
    from rich.console import Console

    cfg = EvalConfig(labels=LABELS, forgetting={"enabled": False}, **FAST)
    result = run(cfg, tuned=tuned, examples=tickets[:3], out_dir=tmp_path, max_seq_length=256)
    console = Console(record=True, width=150)
    console.print(result.summary_table())
    text = console.export_text()
    for column in ("metric", "base", "tuned", "Δ", "95% CI", "accuracy", "perplexity"):
        assert column in text
    assert result.forgetting is None and result.forgetting_skipped is None


def test_run_without_baseline(tuned, tickets, tmp_path):
    cfg = EvalConfig(baseline=None, metrics=["exact_match", "token_f1", "rouge"], forgetting={"enabled": False}, **FAST)
    result = run(cfg, tuned=tuned, examples=tickets, out_dir=tmp_path, max_seq_length=256)
    assert result.baseline_name is None and result.changed is None
    assert set(result.metrics) == {"exact_match", "token_f1", "rouge1", "rouge2", "rougeL"}
    assert all(mc.base is None and mc.diff_ci is None for mc in result.metrics.values())
    assert list(result.timing) == ["tuned"]


def test_score_for_validation_leaves_model_state(tuned, tickets):
    model, tok = tuned.model, tuned.tokenizer
    model.train()
    tok.padding_side = "right"
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    cfg = EvalConfig(labels=LABELS, generation={"do_sample": True, "max_new_tokens": 3})
    values = score(model, tok, tickets, cfg, metrics=["accuracy", "loss", "rouge"], max_seq_length=256)
    assert set(values) == {"accuracy", "loss", "rouge1", "rouge2", "rougeL", "rouge"}
    assert values["rouge"] == values["rougeL"]
    assert model.training and tok.padding_side == "right"
    assert torch.rand(1) == expected_next  # the caller's RNG stream is untouched by seeded sampling


def test_batched_generation_matches_one_by_one(tuned, tickets):
    gen = GenerationConfig(max_new_tokens=5, batch_size=4)
    batched = generate_answers(tuned.model, tuned.tokenizer, tickets, gen).texts
    single = [generate_answers(tuned.model, tuned.tokenizer, [ex], gen).texts[0] for ex in tickets]
    assert batched == single


def test_sampling_is_seeded(tuned, tickets):
    gen = GenerationConfig(max_new_tokens=6, do_sample=True, temperature=1.5, batch_size=3)
    a = generate_answers(tuned.model, tuned.tokenizer, tickets, gen, seed=5).texts
    b = generate_answers(tuned.model, tuned.tokenizer, tickets, gen, seed=5).texts
    c = generate_answers(tuned.model, tuned.tokenizer, tickets, gen, seed=6).texts
    assert a == b and a != c


def test_stop_tokens_include_end_of_turn(tiny_tokenizer):
    assert tiny_tokenizer.convert_tokens_to_ids("<|im_end|>") in stop_token_ids(tiny_tokenizer)


def test_cli_eval_on_run_dir(lora_run, capsys):
    assert main(["eval", str(lora_run), "--max-examples", "4"]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "report.html" in out
    eval_dir = lora_run / "eval"
    saved = json.loads((eval_dir / "metrics.json").read_text())
    assert saved["examples"] == 4 and saved["baseline"] == "base"
    assert saved["settings"]["labels"] == LABELS  # the run config's eval: section was used
    assert saved["forgetting"]["documents"] == 4
    assert (eval_dir / "loss_curve.png").is_file()  # from the run's metrics.jsonl


def test_cli_eval_model_with_data_and_overrides(tiny_model_dir, tickets, tmp_path, capsys):
    data = write_jsonl(tmp_path / "test.jsonl", tickets)
    out = tmp_path / "report"
    code = main(["eval", str(tiny_model_dir), "--data", str(data), "--metrics", "exact_match,token_f1",
                 "--output", str(out)])
    assert code == 0
    saved = json.loads((out / "metrics.json").read_text())
    assert list(saved["metrics"]) == ["exact_match", "token_f1"]
    assert saved["baseline"] is None  # a plain model is its own base
    assert "no base" in saved["forgetting_skipped"] or "bundled" in saved["forgetting_skipped"]


def test_cli_eval_against_another_model(lora_run, tiny_model_dir, tmp_path):
    out = tmp_path / "vs"
    assert main(["eval", str(lora_run), "--baseline", str(tiny_model_dir), "--labels", ",".join(LABELS),
                 "--max-examples", "3", "--output", str(out)]) == 0
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["baseline"] == tiny_model_dir.name
    assert saved["changed"]["metric"] == "accuracy"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--metrics", "acuracy"], "did you mean 'accuracy'"),
        (["--labels", "billing,refund"], "not in eval.labels"),
        (["--metrics", "accuracy", "--labels", ""], "need a label set"),
    ],
)
def test_cli_eval_bad_input(lora_run, tmp_path, capsys, args, message):
    assert main(["eval", str(lora_run), "--output", str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err.replace("\n", " ")


def test_cli_eval_refuses_raw_text_for_a_chat_run(lora_run, tmp_path, capsys):
    text = write_jsonl(tmp_path / "text.jsonl", [{"text": "just some words"}, {"text": "and more words"}])
    assert main(["eval", str(lora_run), "--data", str(text), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "raw text" in err and "'chat'" in err


def test_cli_eval_model_without_data(tiny_model_dir, capsys):
    assert main(["eval", str(tiny_model_dir)]) == 2
    assert "--data" in capsys.readouterr().err


def test_cli_eval_data_renders_prompts_as_in_training(lora_run, tmp_path, capsys):
    """`tuneforge eval RUN --data other.jsonl` applies the run's field_map, system prompt and cleaning."""
    import shutil

    import yaml

    from tuneforge.config.load import load_config
    from tuneforge.eval.generate import render_prompts
    from tuneforge.eval.target import load_test_file

    run_dir = tmp_path / "mapped"
    shutil.copytree(lora_run, run_dir, ignore=shutil.ignore_patterns("eval"))
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    system = "You route support tickets to one queue."
    config["data"] = {"train": [{"path": config["data"]["train"][0]["path"], "field_map": {"ticket": "instruction",
                                                                                          "queue": "output"}}],
                      "system_prompt": system}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    other = write_jsonl(tmp_path / "other.jsonl", [{"ticket": "Where  is my   parcel?", "queue": "shipping"},
                                                   {"ticket": "Refund me", "queue": "refund"}])

    examples = load_test_file(other, load_config(run_dir / "config.yaml").data)
    tok = load_tokenizer_of(run_dir)
    decoded = tok.decode(tok(render_prompts(tok, examples)[0], add_special_tokens=False)["input_ids"])
    assert system in decoded and "Where is my parcel?" in decoded  # system prompt, mapped field, cleaned spaces
    assert decoded.index(system) < decoded.index("Where is my parcel?")

    assert main(["eval", str(run_dir), "--data", str(other), "--max-examples", "2"]) == 0
    rows = [json.loads(line) for line in (run_dir / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert rows[0]["prompt"] == [{"role": "system", "content": system}, {"role": "user", "content": "Where is my parcel?"}]
    assert [r["reference"] for r in rows] == ["shipping", "refund"]


def load_tokenizer_of(run_dir):
    from tuneforge.models import load_tokenizer

    return load_tokenizer(run_dir / "adapter")


def test_run_reports_generation_progress_over_both_models(tuned, tickets, tmp_path):
    reports = []
    cfg = EvalConfig(labels=LABELS, forgetting={"enabled": False}, **{**FAST, "generation": {"max_new_tokens": 2, "batch_size": 3}})
    run(cfg, tuned=tuned, examples=tickets, out_dir=tmp_path, max_seq_length=256, progress=reports.append)
    n = len(tickets)
    assert reports[0]["done"] == 0 and all(r["total"] == 2 * n and r["models"] == 2 for r in reports)
    done = [r["done"] for r in reports]
    assert done == sorted(done) and done[-1] == 2 * n
    assert len(reports) == 1 + 2 * -(-n // 3)  # the start, then one report per batch of each model
    assert [r["phase"] for r in reports if r["done"] == n][0].startswith("generating (")
    assert reports[-1]["elapsed_s"] >= reports[1]["elapsed_s"] >= 0
