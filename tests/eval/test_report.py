"""Report files, valid PNG plots, re-rendering without models (`tuneforge report`), and `tuneforge compare`."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.eval.conftest import write_jsonl
from tuneforge.cli.main import main
from tuneforge.errors import EvalError
from tuneforge.eval import EvalResult, MetricComparison, compare_runs, render_report
from tuneforge.eval.compare import ChangedExamples
from tuneforge.eval.forgetting import ForgettingResult
from tuneforge.eval.plots import read_metrics_log
from tuneforge.eval.report import save_outputs

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _result(accuracy_tuned: float = 0.8, *, flagged: bool = False, truncated: int = 0) -> EvalResult:
    return EvalResult(
        metrics={
            "loss": MetricComparison("loss", 1.2, (1.1, 1.3), False, 2.0, (1.9, 2.1), -0.8, (-0.9, -0.7), n=2),
            "accuracy": MetricComparison("accuracy", accuracy_tuned, (0.7, 0.9), True, 0.5, (0.4, 0.6), 0.3, (0.2, 0.4),
                                         n=3),
        },
        truncated={"base": 0, "tuned": truncated}, prompts_truncated={"base": 0, "tuned": 0},
        examples=3, tuned_name="tickets", baseline_name="base",
        changed=ChangedExamples("accuracy", wrong_to_right=[0, 2], right_to_wrong=[1]),
        unparseable={"base": 1, "tuned": 0},
        forgetting=ForgettingResult("general.jsonl", 4, 100, 10.0, 13.0 if flagged else 10.5, 0.2, (0.1, 0.9)),
        timing={"tuned": {"seconds": 1.0, "examples_per_second": 3.0}},
        settings={"data": "test.jsonl", "labels": ["billing", "refund"], "normalize": ["lower"], "seed": 42,
                  "bootstrap_samples": 1000, "generation": {"max_new_tokens": 8, "batch_size": 16}},
    )


PREDICTIONS = [
    {"index": 0, "prompt": [{"role": "user", "content": "Charged twice"}], "reference": "billing",
     "base_output": "hmm", "tuned_output": "billing"},
    {"index": 1, "prompt": [{"role": "user", "content": "Refund ```please```"}], "reference": "refund",
     "base_output": "refund", "tuned_output": "<script>alert(1)</script>"},
    {"index": 2, "prompt": [{"role": "user", "content": "x | y"}], "reference": "billing",
     "base_output": "", "tuned_output": "billing"},
]


def _assert_png(path: Path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


@pytest.fixture
def eval_dir(tmp_path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    write_jsonl(run / "metrics.jsonl", [{"step": s, "epoch": s / 4, "loss": 2.0 / s} for s in range(1, 5)]
                + [{"step": 4, "epoch": 1.0, "eval_loss": 0.9}])
    save_outputs(_result(), PREDICTIONS, run / "eval", metrics_log=run / "metrics.jsonl")
    return run / "eval"


def test_report_files_and_plots(eval_dir):
    for name in ("report.md", "report.html", "metrics.json", "predictions.jsonl", "metrics.png", "loss_curve.png"):
        assert (eval_dir / name).is_file(), name
    _assert_png(eval_dir / "metrics.png")
    _assert_png(eval_dir / "loss_curve.png")
    md = (eval_dir / "report.md").read_text()
    assert "| metric | n | base | tuned | Δ | 95% CI | verdict |" in md
    assert "| accuracy | 3 | 0.5 | 0.8 | +0.3 | [+0.2, +0.4] | better |" in md  # n: examples behind the value
    assert "| loss | 2 | 2 | 1.2 | -0.8 | [-0.9, -0.7] | better |" in md  # lower loss is better
    assert "95% CI [+0.2, +0.4], n=3)" in md
    assert "## Warnings" not in md
    assert "2 wrong → right, 1 right → wrong" in md
    assert "![Training and validation loss](loss_curve.png)" in md
    assert "base: 1, tuned: 0" in md  # unparseable answers
    assert "````\n[user] Refund ```please```\n````" in md  # fences never closed by model output
    assert "x | y" in md


def test_html_is_self_contained_and_escaped(eval_dir):
    html = (eval_dir / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == 2
    assert 'src="metrics.png"' not in html and "<link" not in html and "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # model output is text, never markup
    assert "<style>" in html and "<table>" in html


def test_truncated_answers_warned_in_report_and_console(tmp_path):
    from rich.console import Console

    result = save_outputs(_result(truncated=3), PREDICTIONS, tmp_path)
    md = (tmp_path / "report.md").read_text()
    warning = "3 of 3 tuned answers hit max_new_tokens=8 without a stop token"
    assert "## Warnings" in md and warning in md
    assert "tuned: 3 of 3; marked `truncated` in predictions.jsonl" in md
    assert warning in (tmp_path / "report.html").read_text()
    console = Console(record=True, width=400)
    console.print(result.summary_table())
    assert warning in console.export_text()
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["truncated"] == {"base": 0, "tuned": 3} and saved["metrics"]["accuracy"]["n"] == 3
    # Two cut answers of 300 are a handful: counted, not shouted about.
    assert not EvalResult(metrics={}, examples=300, tuned_name="t", truncated={"tuned": 2}).warnings()
    assert EvalResult(metrics={}, examples=300, tuned_name="t", truncated={"tuned": 4}).warnings()


def test_forgetting_flag_in_report(tmp_path):
    save_outputs(_result(flagged=True), PREDICTIONS, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "**FLAGGED**" in md and "+30.0%" in md
    assert EvalResult.from_dict(json.loads((tmp_path / "metrics.json").read_text())).forgetting.flagged


def test_metrics_json_round_trip(eval_dir):
    again = EvalResult.from_dict(json.loads((eval_dir / "metrics.json").read_text()))
    original = _result()
    assert again.metrics == original.metrics
    assert again.changed == original.changed and again.forgetting == original.forgetting
    assert again.table_rows() == original.table_rows()


def test_report_rerenders_without_models(eval_dir, capsys):
    for name in ("report.md", "report.html", "metrics.png", "loss_curve.png"):
        (eval_dir / name).unlink()
    assert main(["report", str(eval_dir.parent)]) == 0  # the run directory
    assert "report.html" in capsys.readouterr().out
    for name in ("report.md", "report.html", "metrics.png", "loss_curve.png"):
        assert (eval_dir / name).is_file(), name
    moved = eval_dir.parent.parent / "copy"
    shutil.copytree(eval_dir, moved)
    result = render_report(moved)  # an evaluation folder given directly, no training log beside it
    assert "loss_plot" not in result.paths and result.paths["html"].is_file()


def test_report_without_evaluation(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "run `tuneforge eval` first" in capsys.readouterr().err.replace("\n", " ")


def test_bad_metrics_log_names_the_line(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1, "loss": 2.0}\n{"loss": 1.0}\n')
    with pytest.raises(EvalError, match=r"metrics.jsonl line 2: expected a field 'step' of type int"):
        read_metrics_log(log)
    log.write_text("{oops\n")
    with pytest.raises(EvalError, match="line 1: not valid JSON"):
        read_metrics_log(log)


def test_compare_runs(tmp_path, capsys):
    for name, acc in (("lora-r8", 0.7), ("lora-r16", 0.8)):
        save_outputs(_result(acc), PREDICTIONS, tmp_path / name / "eval")
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "lora-r8"), str(tmp_path / "lora-r16"), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "lora-r8" in printed and "lora-r16" in printed
    md = (out / "compare.md").read_text()
    assert "| metric | lora-r8 | lora-r16 |" in md
    assert "| accuracy | 0.7 (Δ +0.3 [+0.2, +0.4]) | 0.8 (Δ +0.3 [+0.2, +0.4]) |" in md
    _assert_png(out / "compare.png")


def test_compare_bad_inputs(tmp_path):
    save_outputs(_result(), PREDICTIONS, tmp_path / "a" / "eval")
    with pytest.raises(EvalError, match="at least two runs"):
        compare_runs([tmp_path / "a"])
    (tmp_path / "b").mkdir()
    with pytest.raises(EvalError, match="no evaluation found"):
        compare_runs([tmp_path / "a", tmp_path / "b"])


def test_report_without_matplotlib_says_why(tmp_path, monkeypatch):
    # matplotlib is the optional 'plots' extra: without it the report is still written, without images.
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # find_spec then reports it missing
    save_outputs(_result(), PREDICTIONS, tmp_path / "eval")
    md = (tmp_path / "eval" / "report.md").read_text()
    assert not list((tmp_path / "eval").glob("*.png"))
    assert "plots skipped: matplotlib is not installed (pip install 'tuneforge[plots]')" in md
    assert "| accuracy | 3 | 0.5 | 0.8 | +0.3 | [+0.2, +0.4] | better |" in md

