"""Preference-style data from config to split rows: load -> clean -> dedupe -> fit -> split -> mix -> cap.

One loop for every kind of row the preference objectives learn from (a :class:`RowKind` each):
pairs (DPO, ORPO, KTO), KTO's unpaired judged answers and GRPO's prompts; a row's kind is read
from its canonical fields (:func:`kind_of`).

The same order and guarantees as supervised data (:mod:`tuneforge.data.prepare`):
held-out sources are read first and one set of seen keys spans every source, so a
training pair that repeats a held-out pair is the copy dropped; deduplication runs
before the seeded split; every row read is kept or counted under a reason in the
:class:`~tuneforge.data.report.DataReport`. Unlike supervised test rows, a too-long
test pair is dropped too: its evaluation scores whole sequences with the model.

Pairs stay untokenized: TRL's trainers apply the chat template themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from tuneforge.config.schema import DataConfig
from tuneforge.data.clean import Dropped
from tuneforge.data.load import load_examples, location
from tuneforge.data.pairs import check_pair_length, clean_pair, pair_key, side, snippet
from tuneforge.data.report import DataReport
from tuneforge.data.split import mix, split_indices
from tuneforge.data.template import describe_template
from tuneforge.data import unpaired
from tuneforge.errors import DataError


@dataclass(frozen=True)
class RowKind:
    """What the shared loop needs of one kind of row: pure functions, each over a canonical row.

    Attributes:
        clean: ``(row, CleanConfig) -> Kept | Dropped``.
        key: ``(row, dedupe mode) -> str | None``, the dedupe key.
        fit: ``(row, tokenizer | None, max_seq_length) -> Dropped | None`` (``None`` tokenizer: characters only).
        snippet: ``row -> str`` for the data report.
        example: ``row -> dict | None``, the supervised example the generation eval scores.
    """

    clean: Callable[..., Any]
    key: Callable[[dict, str], str | None]
    fit: Callable[..., Dropped | None]
    snippet: Callable[[dict], str]
    example: Callable[[dict], dict | None]


KINDS = {
    "pair": RowKind(clean_pair, pair_key, check_pair_length, snippet, lambda pair: side(pair, "chosen")),
    "unpaired": RowKind(unpaired.clean_unpaired, unpaired.unpaired_key, unpaired.check_unpaired_length,
                        unpaired.unpaired_snippet, unpaired.as_example),
    "prompt": RowKind(unpaired.clean_prompt, unpaired.unpaired_key, unpaired.check_unpaired_length,
                      unpaired.unpaired_snippet, unpaired.as_example),
}
# The format recorded in the data report for each objective.
_FORMATS = {"kto": "unpaired", "grpo": "prompt_only"}


def kind_of(row: dict) -> RowKind:
    """The :class:`RowKind` of a canonical row, from its fields."""
    return KINDS["pair" if "chosen" in row else "unpaired" if "label" in row else "prompt"]


@dataclass
class PreferenceData:
    """The output of :func:`prepare_pairs`: canonical pairs per split, and the report.

    Attributes:
        train: Canonical pairs ``{"prompt", "chosen", "rejected", "meta"}``, mixed and shuffled.
        validation: Held-out pairs for evaluation during training.
        test: Held-out pairs for the final evaluation.
        report: What was kept, dropped and why.
        sources: ``path -> sha256`` of every source read (for the run manifest).
    """

    train: list[dict]
    validation: list[dict]
    test: list[dict]
    report: DataReport
    sources: dict[str, str] = field(default_factory=dict)
    format: str = "preference"

    @property
    def test_examples(self) -> list[dict]:
        """The test prompts with the chosen (desirable, reference) answer: what the generation eval scores."""
        return reference_examples(self.test)

    @property
    def validation_examples(self) -> list[dict]:
        return reference_examples(self.validation)

    @property
    def pairs(self) -> dict[str, list[dict]]:
        """Only the pairs of each split (KTO may mix pairs and unpaired rows), for the preference-accuracy eval."""
        return {role: [r for r in getattr(self, role) if "chosen" in r] for role in ("train", "validation", "test")}


def reference_examples(rows: list[dict]) -> list[dict]:
    """Rows as the supervised examples the generation eval scores (supervised rows pass through as they are).

    A pair gives its prompt with the chosen answer, a KTO row its desirable answer, a GRPO prompt its
    reference; rows with nothing to compare against (undesirable answers, prompts without a reference) are left out.
    """
    return [ex for row in rows if (ex := row if "messages" in row or "text" in row else kind_of(row).example(row)) is not None]


def prepare_pairs(cfg: DataConfig, tokenizer: Any, *, max_seq_length: int, seed: int, objective: str,
                  key: Any = None) -> PreferenceData:
    """Load, clean, dedupe, length-check, split and mix the preference pairs (KTO rows, GRPO prompts) of a run.

    Args:
        cfg: The ``data`` section of the run config.
        tokenizer: The model's tokenizer (lengths are counted with its chat template).
        max_seq_length: Longest prompt + answer in tokens (``training.max_seq_length``).
        seed: Seed of the split and the training order.
        objective: The objective, named in the error when a source holds supervised data.
        key: Decrypts encrypted data files (from the ``security:`` section).

    Raises:
        DataError: a source is missing, malformed (file, line and field) or supervised, or
            no training pairs survive cleaning.

    Example:
        >>> pairs = prepare_pairs(cfg.data, tokenizer, max_seq_length=1024, seed=42, objective="dpo")
        >>> pairs.report.splits
        {'train': 800, 'validation': 100, 'test': 100}
    """
    report = DataReport(
        template=describe_template(tokenizer),
        redact_snippets=tuple(cfg.clean.pii_types) if cfg.clean.redact_pii else (),
    )
    seen: set[str] = set()
    loaded: dict[str, list[tuple[Any, list[dict]]]] = {}
    for role in ("test", "validation", "train"):
        loaded[role] = [
            (src, _load(src, role, cfg, tokenizer, report, seen, max_seq_length, objective, key)) for src in getattr(cfg, role)
        ]
    pool = [(src.path, pair) for src, pairs in loaded["train"] for pair in pairs]
    if not pool:
        raise DataError(f"no training pairs left after cleaning ({report.rows_read} read, {report.dropped} dropped; "
                        "see the data report)")
    parts = split_indices(
        [kind_of(row).key(row, "exact") for _, row in pool],
        validation=0 if cfg.validation else cfg.split.validation,
        test=0 if cfg.test else cfg.split.test,
        seed=seed,
    )
    held = {
        role: [(src.path, p) for src, pairs in loaded[role] for p in pairs] if getattr(cfg, role)
        else [pool[i] for i in getattr(parts, role)]
        for role in ("validation", "test")
    }
    by_source: dict[str, list[dict]] = {src.path: [] for src, _ in loaded["train"]}
    for i in parts.train:
        by_source[pool[i][0]].append(pool[i][1])
    train = mix([(by_source[src.path], src.weight) for src, _ in loaded["train"]], seed=seed)
    if cfg.max_examples is not None:
        report.max_examples = {"limit": cfg.max_examples, "removed": max(0, len(train) - cfg.max_examples)}
        train = train[: cfg.max_examples]
    for role, rows in (("train", [(p["meta"]["source"], p) for p in train]), *held.items()):
        for path, _ in rows:
            report.source(path).split[role] += 1
    report.splits = {"train": len(train), **{role: len(rows) for role, rows in held.items()}}
    report.split_method = "; ".join(
        f"{role}: from data.{role}" if getattr(cfg, role) else f"{role}: {getattr(cfg.split, role):g} of the training pairs (seed {seed})"
        for role in ("validation", "test")
    )
    report.format = _FORMATS.get(objective, "preference")
    return PreferenceData(
        train=train, validation=[p for _, p in held["validation"]], test=[p for _, p in held["test"]],
        report=report, sources={path: stats.sha256 for path, stats in report.sources.items()}, format=report.format,
    )


def _load(src: Any, role: str, cfg: DataConfig, tokenizer: Any, report: DataReport, seen: set[str],
          max_seq_length: int, objective: str, key: Any = None) -> list[dict]:
    """One source's rows, cleaned, deduplicated and fitted; every row left out is counted in the report."""
    rows = load_examples(
        src, on_bad_rows=cfg.on_bad_rows, system_prompt=cfg.system_prompt, report=report, objective=objective, key=key
    )
    stats = report.source(src.path)
    stats.role = role
    kept = []
    for pair in rows:
        if "messages" in pair:  # a supervised row for GRPO: its answer becomes the reference
            pair = unpaired.prompt_from_supervised(pair)
        kind = kind_of(pair)
        where = location(pair["meta"])
        oversized = kind.fit(pair, None, max_seq_length)
        if oversized is not None:  # before cleaning: its regexes would crawl over a huge row too
            report.drop(src.path, oversized.reason, where, oversized.detail)
            continue
        cleaned = kind.clean(pair, cfg.clean)
        if isinstance(cleaned, Dropped):
            report.drop(src.path, cleaned.reason, where, cleaned.detail or kind.snippet(pair))
            continue
        pair = cleaned.example
        dedupe = kind.key(pair, cfg.clean.dedupe)
        if dedupe is not None and dedupe in seen:
            report.drop(src.path, "duplicate", where, kind.snippet(pair))
            continue
        too_long = kind.fit(pair, tokenizer, max_seq_length)
        if too_long is not None:
            report.drop(src.path, too_long.reason, where, too_long.detail)
            continue
        if dedupe is not None:
            seen.add(dedupe)
        for kind, n in cleaned.redactions.items():
            stats.pii_redactions[kind] = stats.pii_redactions.get(kind, 0) + n
        kept.append(pair)
    stats.rows_kept = len(kept)
    return kept
