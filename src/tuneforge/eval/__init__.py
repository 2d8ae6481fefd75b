"""Evaluation: did the fine-tune help? Task metrics, base vs tuned with paired bootstrap CIs, forgetting, report.

Modules:
    metrics      pure metric functions (normalisation, exact match, labels, token F1, JSON, ROUGE/BLEU/chrF wrappers)
    scoring      per-example statistics + aggregation per metric (what the bootstrap resamples)
    checks       input checks (EvalError) and default metrics for the data
    generate     batched, seeded, left-padded generation through the chat template
    loss         teacher-forced NLL of answer tokens (loss, perplexity) and of plain text
    compare      paired bootstrap and the examples that changed between base and tuned
    forgetting   general-text perplexity before/after
    plots, report, result   PNG plots, report.md/report.html, EvalResult (metrics.json)
    stage        run() and score(): the stage the trainer calls
    target       evaluate(): run dirs / models / overrides, behind ``tuneforge eval``
    sidebyside   compare_runs(): several runs side by side, behind ``tuneforge compare``

Example:
    >>> from tuneforge.eval import evaluate
    >>> result = evaluate("runs/tickets")          # the run's test split and its config's eval: section
    >>> result.metrics["accuracy"].diff_ci           # 95% paired-bootstrap CI of tuned - base
    (0.08, 0.19)

Standard benchmarks with lm-evaluation-harness:
    tuneforge measures the task the model was tuned for. For standard benchmarks
    (HellaSwag, ARC, MMLU, ...) use EleutherAI's lm-evaluation-harness (PyPI
    ``lm-eval``, 0.4.13 at the time of writing; not a tuneforge dependency, it pulls
    scikit-learn, evaluate and others). Merge the adapter first so the harness sees a plain model::

        tuneforge merge runs/tickets                      # writes runs/tickets/merged/
        pip install "lm-eval[hf]"
        lm_eval --model hf --model_args pretrained=runs/tickets/merged,dtype=float32 \\
                --tasks hellaswag,arc_easy --device cpu --batch_size 8 --output_path runs/tickets/lm-eval

    Run the same command with ``pretrained=`` the base model folder to get the
    "before" numbers. Without merging, the harness's ``hf`` model also takes the
    adapter directly: ``--model_args pretrained=BASE_FOLDER,peft=runs/tickets/adapter``.
    Its tasks download datasets from the Hugging Face Hub, so they need network
    access (unset ``HF_HUB_OFFLINE``).
"""

from tuneforge.eval.compare import ChangedExamples, PairedInterval, bootstrap_indices, changed_examples, paired_bootstrap
from tuneforge.eval.forgetting import ForgettingResult
from tuneforge.eval.generate import Generations, generate_answers
from tuneforge.eval.report import render_report
from tuneforge.eval.result import EvalResult, MetricComparison
from tuneforge.eval.scoring import METRIC_NAMES, MetricValues, score_outputs
from tuneforge.eval.sidebyside import RunsComparison, compare_runs
from tuneforge.eval.stage import NO_TEST_ROWS, run, score
from tuneforge.eval.target import evaluate

__all__ = [
    "METRIC_NAMES", "NO_TEST_ROWS", "ChangedExamples", "EvalResult", "ForgettingResult", "Generations", "MetricComparison",
    "MetricValues", "PairedInterval", "RunsComparison", "bootstrap_indices", "changed_examples", "compare_runs",
    "evaluate", "generate_answers", "paired_bootstrap", "render_report", "run", "score", "score_outputs",
]
