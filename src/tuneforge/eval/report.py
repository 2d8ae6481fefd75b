"""Write and re-render the evaluation report: metrics.json, predictions.jsonl, plots, report.md, report.html.

The report is written once as Markdown; the HTML page is the same Markdown
rendered by ``markdown-it-py`` (raw HTML disabled, so model output cannot
inject markup) with inline CSS and every plot embedded as a base64 PNG, so the
single file can be mailed or attached to a ticket.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from tuneforge.errors import EvalError
from tuneforge.eval.jsonl import parse_json_lines
from tuneforge.eval.plots import NO_PLOTS, plot_loss_curves, plot_metric_bars, plots_available, read_metrics_log
from tuneforge.eval.result import LIKELIHOOD_TIMING, EvalResult, fmt, fmt_ci
from tuneforge.rundir import RunDir
from tuneforge.security.at_rest import Sealer, key_of, read_text
from tuneforge.security.crypto import is_encrypted

SHOWN_CHANGES = 10
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#1f2328;line-height:1.5}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #d0d7de;padding:4px 10px}
th{background:#f6f8fa}td{text-align:right}td:first-child,td:last-child{text-align:left}
pre{background:#f6f8fa;padding:8px;overflow-x:auto;white-space:pre-wrap}img{max-width:100%}
h1{border-bottom:1px solid #d0d7de}code{background:#f6f8fa}
"""


def save_outputs(result: EvalResult, predictions: Sequence[dict], out_dir: Path, *, metrics_log: Path | None = None,
                 sealer: Sealer | None = None) -> EvalResult:
    """Write ``metrics.json`` and ``predictions.jsonl``, then the plots and reports; fills ``result.paths``.

    Files go through ``sealer`` (default: that of the run ``out_dir`` belongs to), so an encrypted
    run's predictions and reports are encrypted; ``metrics.json`` and the plots hold no examples.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sealer = sealer or Sealer.for_run(out_dir.parent)
    sealer.write_text(out_dir / "metrics.json", json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n")
    sealer.write_text(out_dir / "predictions.jsonl",
                      "".join(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n" for row in predictions))
    result.paths = {"metrics": out_dir / "metrics.json", "predictions": out_dir / "predictions.jsonl"}
    result.paths.update(write_report(result, predictions, out_dir, metrics_log=metrics_log, sealer=sealer))
    return result


def render_report(target: str | Path, *, metrics_log: Path | None = None) -> EvalResult:
    """Re-render a report from saved files, without running any model.

    Args:
        target: A run directory (its ``eval/`` is used) or an evaluation folder holding ``metrics.json``.
        metrics_log: The training log for the loss plot; default ``RUN/metrics.jsonl`` when it exists.

    Raises:
        EvalError: ``metrics.json`` or ``predictions.jsonl`` is missing or unreadable.

    Example:
        >>> render_report("runs/quickstart").paths["html"]
        PosixPath('runs/quickstart/eval/report.html')
    """
    target = Path(target)
    eval_dir = RunDir(target).eval if (target / "eval" / "metrics.json").is_file() else target
    metrics_file, predictions_file = eval_dir / "metrics.json", eval_dir / "predictions.jsonl"
    for needed in (metrics_file, predictions_file):
        if not needed.is_file():
            raise EvalError(f"{needed} not found: run `tuneforge eval` first (report re-renders its output)")
    try:
        result = EvalResult.from_dict(json.loads(read_text(metrics_file)))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise EvalError(f"{metrics_file} is not an evaluation result: {exc}") from exc
    predictions = parse_json_lines(read_text(predictions_file), predictions_file, require={"index": int})
    if metrics_log is None and (eval_dir.parent / "metrics.jsonl").is_file():
        metrics_log = eval_dir.parent / "metrics.jsonl"
    result.paths = {"metrics": metrics_file, "predictions": predictions_file}
    sealer = Sealer.for_run(eval_dir.parent)
    if sealer.key is None and is_encrypted(predictions_file):  # an encrypted report outside its run stays encrypted
        sealer = Sealer(eval_dir.parent, key_of(predictions_file))
    result.paths.update(write_report(result, predictions, eval_dir, metrics_log=metrics_log, sealer=sealer))
    return result


def write_report(
    result: EvalResult, predictions: Sequence[dict], out_dir: Path, *, metrics_log: Path | None = None,
    sealer: Sealer | None = None,
) -> dict[str, Path]:
    """Draw the plots and write ``report.md`` and ``report.html``; returns the paths written."""
    paths: dict[str, Path] = {}
    bars = plot_metric_bars(result.metrics, out_dir / "metrics.png", base_label=result.baseline_name or "base")
    if bars:
        paths["metrics_plot"] = bars
    if metrics_log is not None and Path(metrics_log).is_file():
        curve = plot_loss_curves(read_metrics_log(metrics_log), out_dir / "loss_curve.png")
        if curve:
            paths["loss_plot"] = curve
    images = [p.name for key, p in paths.items() if key.endswith("_plot")]
    sealer = sealer or Sealer(out_dir)
    sealer.write_text(out_dir / "report.md", render_markdown(result, predictions, images, lambda name: name))
    html_body = render_markdown(result, predictions, images, lambda name: _data_uri(out_dir / name))
    sealer.write_text(out_dir / "report.html", _to_html(html_body, f"Evaluation: {result.tuned_name}"))
    return {**paths, "markdown": out_dir / "report.md", "html": out_dir / "report.html"}


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _to_html(markdown: str, title: str) -> str:
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    title = title.replace("&", "&amp;").replace("<", "&lt;")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{_CSS}</style></head>\n<body>\n{body}</body></html>\n"
    )


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _fenced(text: str) -> str:
    # A fence longer than any backtick run inside, so model output cannot close it.
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"


def _prompt_text(row: dict) -> str:
    prompt = row.get("prompt") or []
    return "\n".join(f"[{m['role']}] {m['content']}" for m in prompt if m.get("role") != "system")


def render_markdown(
    result: EvalResult, predictions: Sequence[dict], images: Sequence[str], image_src: Callable[[str], str]
) -> str:
    """The report as Markdown: verdict, metric table, plots, forgetting, changed examples, method."""
    s = result.settings
    lines = [f"# Evaluation report: {result.tuned_name}", ""]
    lines.append(
        f"{result.examples} examples from `{s.get('data', 'the test set')}`, tuned model **{result.tuned_name}** "
        f"against baseline **{result.baseline_name or 'none'}**."
    )
    warnings = result.warnings()
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- **warning**: {w}" for w in warnings]
    lines += ["", "## Verdict", ""]
    for name, mc in result.metrics.items():
        over = "" if mc.n is None else f", n={mc.n}"
        if mc.diff is None:
            lines.append(f"- **{name}**: {fmt(mc.tuned)} (95% CI {fmt_ci(mc.tuned_ci)}; no baseline{over})")
        else:
            lines.append(
                f"- **{name}**: {mc.verdict} — {fmt(mc.base)} → {fmt(mc.tuned)} "
                f"(Δ {fmt(mc.diff, signed=True)}, 95% CI {fmt_ci(mc.diff_ci)}{over})"
            )
    if result.forgetting is not None:
        f = result.forgetting
        state = f"**FLAGGED**: above the {f.max_rise:.0%} limit" if f.flagged else f"within the {f.max_rise:.0%} limit"
        lines.append(
            f"- **forgetting**: general-text perplexity {fmt(f.base_perplexity)} → {fmt(f.tuned_perplexity)} "
            f"({f.rise:+.1%}), {state}"
        )
    elif result.forgetting_skipped:
        lines.append(f"- **forgetting**: not checked ({result.forgetting_skipped})")
    columns = result.columns()
    lines += ["", "## Metrics", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in result.table_rows()]
    for name in images:
        title = "Training and validation loss" if name.startswith("loss") else "Base vs tuned"
        lines += ["", f"### {title}", "", f"![{title}]({image_src(name)})"]
    if not plots_available():
        lines += ["", f"_{NO_PLOTS}._"]
    if result.unparseable:
        labels = ", ".join(s.get("labels") or [])
        counts = ", ".join(f"{side}: {n}" for side, n in result.unparseable.items())
        lines += ["", "## Unparseable answers", "",
                  f"Answers that matched no label ({labels}) and were counted wrong — {counts} of {result.examples}."]
    if result.truncated or result.prompts_truncated:
        lines += ["", "## Truncation", "",
                  f"Answers that reached max_new_tokens={gen_limit(result)} without a stop token (cut, scored as "
                  "they are): " + (", ".join(f"{side}: {n}" for side, n in result.truncated.items()) or "none")
                  + f" of {result.examples}; marked `truncated` in predictions.jsonl.",
                  "", "Prompts longer than the model's context minus max_new_tokens, cut from the left: "
                  + (", ".join(f"{side}: {n}" for side, n in result.prompts_truncated.items()) or "none")
                  + f" of {result.examples}."]
    if result.forgetting is not None:
        f = result.forgetting
        lines += ["", "## Forgetting check", "",
                  f"Perplexity on {f.documents} general-text documents ({f.tokens} tokens) from `{f.source}`: "
                  f"base {fmt(f.base_perplexity)}, tuned {fmt(f.tuned_perplexity)}, relative change {f.rise:+.1%} "
                  f"(flag above +{f.max_rise:.0%}); 95% CI of the difference {fmt_ci(f.ci)}."]
    lines += _changed_section(result, predictions)
    lines += _method_section(result)
    return "\n".join(lines) + "\n"


def _changed_section(result: EvalResult, predictions: Sequence[dict]) -> list[str]:
    c = result.changed
    if c is None:
        return []
    by_index = {row["index"]: row for row in predictions}
    lines = ["", f"## Changed examples (by {c.metric})", "",
             f"{len(c.wrong_to_right)} wrong → right, {len(c.right_to_wrong)} right → wrong "
             f"(net {len(c.wrong_to_right) - len(c.right_to_wrong):+d})."]
    for title, indices in (("Wrong → right", c.wrong_to_right), ("Right → wrong", c.right_to_wrong)):
        if not indices:
            continue
        lines += ["", f"### {title} (first {min(len(indices), SHOWN_CHANGES)} of {len(indices)})"]
        for i in indices[:SHOWN_CHANGES]:
            row = by_index.get(i)
            if row is None:
                continue
            lines += ["", f"**Example {i}**", "", "Prompt:", "", _fenced(_prompt_text(row)), ""]
            lines += ["Reference:", "", _fenced(row.get("reference") or ""), ""]
            lines += ["Base:", "", _fenced(row.get("base_output") or ""), ""]
            lines += ["Tuned:", "", _fenced(row.get("tuned_output") or "")]
    return lines


def gen_limit(result: EvalResult) -> object:
    return (result.settings.get("generation") or {}).get("max_new_tokens")


def _method_section(result: EvalResult) -> list[str]:
    s = result.settings
    gen = s.get("generation") or {}
    decoding = "sampled" if gen.get("do_sample") else "greedy"
    origin = {"derived": " (derived: longest reference or label in tokens + stop token + margin)",
              "config": " (set in eval.generation)"}.get(s.get("max_new_tokens_from"), "")
    lines = ["", "## Method", "",
             f"- Every example of the test set is evaluated ({result.examples}); `n` is the number of examples "
             "behind each metric. Test rows are not filtered by training.max_seq_length.",
             f"- Decoding: {decoding}, max_new_tokens={gen.get('max_new_tokens')}{origin}, batch size {gen.get('batch_size')}"
             + (f", temperature={gen.get('temperature')}, top_p={gen.get('top_p')}" if gen.get("do_sample") else "")
             + f", seed {s.get('seed')}.",
             f"- Normalisation before exact match and label parsing: {', '.join(s.get('normalize') or []) or 'none'}.",
             f"- Confidence intervals: paired bootstrap, {s.get('bootstrap_samples')} resamples of the examples "
             f"(seed {s.get('seed')}), the same resample for both models; every metric is recomputed on each "
             "resample (BLEU/chrF from summed n-gram statistics, loss token-weighted). 95% = 2.5th–97.5th "
             "percentile. 'better'/'worse' means the interval of Δ excludes 0.",
             "- Loss/perplexity: teacher-forced NLL of the answer tokens (incl. end-of-turn), token-weighted; an "
             "example longer than the model's context is scored on its last tokens (the answer)"
             + (f"; {s['loss_examples_skipped']} examples had no answer token within the context and were not "
                "scored for loss." if s.get("loss_examples_skipped") else ".")]
    if any(name.startswith("label_likelihood_") for name in result.metrics):
        lines.append("- Label likelihood (label_likelihood_accuracy, label_likelihood_macro_f1): no generation; each "
                     "label and the end-of-turn token are scored by their summed log-probability after the prompt, "
                     "and the most probable label is the answer (never unparseable). The sum, not the per-token "
                     "mean: it is the probability of answering exactly that label.")
    for key, t in result.timing.items():
        side, _, kind = key.partition(" ")
        what = "Label likelihood scoring time" if kind == LIKELIHOOD_TIMING else "Generation time"
        lines.append(f"- {what} ({side}): {t['seconds']:.1f} s, {t['examples_per_second']:.2f} examples/s.")
    return lines
