"""Data preparation from config to tokenized splits: load -> clean -> dedupe -> fit -> split -> mix -> cap.

Order matters and is deliberate:

1. Explicit test and validation sources are read before the training sources,
   and one set of seen keys spans all of them, so a training row that repeats
   a held-out row is the copy dropped (no test example is also trained on).
2. Deduplication runs before the split for the same reason.
3. Splitting uses distinct rows; mixing weights repeat or subsample only the
   training part, so a repeated row never lands in two splits.
4. ``max_examples`` caps the mixed, shuffled training rows; ``balance`` then oversamples
   minority labels of the training rows only (:mod:`tuneforge.data.balance`).
5. Rows longer than ``max_seq_length`` are dropped from training and validation
   only. A test row is the benchmark, and generation has no training length
   limit, so test rows are kept whatever their length (a long row of the
   training sources takes part in the split and is dropped only if it lands in
   training or validation); ``data_report.json`` counts them.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tuneforge.config.schema import DataConfig, DatasetSource
from tuneforge.data.cache import fingerprint, read_entry, write_entry
from tuneforge.data.assess import Work, assess_all, choose_num_proc, snippet
from tuneforge.data.clean import Dropped
from tuneforge.data.load import location, stream_examples
from tuneforge.data.report import DataReport
from tuneforge.data.split import mix, split_indices
from tuneforge.data.spool import Spool, indices
from tuneforge.data import store
from tuneforge.data.store import ExampleRows, TokenRows, map_split
from tuneforge.data.template import describe_template
from tuneforge.errors import DataError

ROLES = ("test", "validation", "train")  # the order sources are read in (see the module docstring)


@dataclass
class PreparedData:
    """The output of :func:`prepare`.

    Attributes:
        train: Tokenized training examples ``{"input_ids", "labels"}`` (not packed), mixed and shuffled: a
            list, or for a large split (:data:`~tuneforge.data.store.MEMORY_MAP_MIN_ROWS` rows or more) a
            :class:`~tuneforge.data.store.TokenRows` read from a memory-mapped file (same items, plus ``lengths``).
        validation: Tokenized validation examples, same shape.
        train_examples: The canonical cleaned examples behind ``train``, in the same order (a list, or
            an :class:`~tuneforge.data.store.ExampleRows` over the same file).
        validation_examples: The canonical examples behind ``validation``.
        test_examples: Canonical held-out test examples (for generation-based evaluation).
        format: Detected format of the training data.
        report: What was kept, dropped and why.
        sources: ``path -> sha256`` of every file or folder read (for the run manifest).
        cache_key: The fingerprint it is cached under ("" when caching was off).
        reused: Read back from the cache instead of prepared.
    """

    train: Sequence[dict]
    validation: Sequence[dict]
    train_examples: Sequence[dict]
    validation_examples: Sequence[dict]
    test_examples: list[dict]
    format: str
    report: DataReport
    sources: dict[str, str] = field(default_factory=dict)
    cache_key: str = ""
    reused: bool = False


@dataclass(frozen=True, slots=True)
class _Row:
    """A kept row while the splits are decided: its example and tokens wait in the :class:`Spool` at ``at``."""

    source: str
    key: str
    at: int
    length: int = 0
    answer_tokens: int = 0
    truncated: bool = False
    too_long: tuple[str, str] | None = None
    """``(where, why)`` for a row longer than max_seq_length, kept only in case it is a test row."""


def prepare(
    cfg: DataConfig, tokenizer: Any, *, max_seq_length: int, seed: int, cache_dir: Path | None = None, key: Any = None,
    labels: list[str] | None = None,
) -> PreparedData:
    """Load, clean, split, mix and tokenize the data of a run.

    Args:
        cfg: The ``data`` section of the run config.
        tokenizer: The model's tokenizer (its chat template decides the prompt format).
        max_seq_length: Longest sequence in tokens (``training.max_seq_length``).
        seed: Seed of the split, the weighted sampling and the training order.
        key: Decrypts encrypted data files (a :class:`tuneforge.security.Key`, from the ``security:`` section).
        cache_dir: Cache prepared data here, keyed by :func:`~tuneforge.data.cache.fingerprint`, and
            read it back when the key matches (``None``: no cache; runs use
            :func:`~tuneforge.data.cache.cache_folder`).
        labels: The task's label set (``eval.labels``), for ``cfg.balance``; detected from the answers when ``None``.

    Returns:
        :class:`PreparedData` with tokenized train/validation sets, canonical splits and the report.

    Raises:
        DataError: a source is missing or malformed (with file, line and field), a path is
            listed twice, no training rows survive cleaning, or ``cfg.balance`` finds no labels.

    Example:
        >>> data = prepare(cfg.data, tokenizer, max_seq_length=1024, seed=42)
        >>> data.report.write("runs/demo/data_report.json")
    """
    _check_distinct_paths(cfg)
    entry_key = ""
    if cache_dir is not None:
        entry_key = fingerprint(cfg, tokenizer, max_seq_length=max_seq_length, seed=seed, labels=labels)
        entry = read_entry(cache_dir, entry_key)
        if entry is not None:
            entry["report"].redact_snippets = _redacted_kinds(cfg)
            return PreparedData(**entry, cache_key=entry_key, reused=True)
    # Rows wait in a spool file while the splits are decided, and large splits are read from files
    # mapped into memory (data/spool.py, data/store.py); the folder goes once they are mapped (POSIX keeps
    # a mapped file until it is unmapped). A run that encrypts its files (``key``) must leave no plaintext
    # of its data on disk, so it keeps every row in memory as before, and its memory grows with the rows.
    with tempfile.TemporaryDirectory(prefix="tuneforge-prepare-") as tmp:  # 0700
        folder = None if key is not None else Path(tmp)
        data = _prepare(cfg, tokenizer, max_seq_length=max_seq_length, seed=seed, key=key, labels=labels,
                        spool=Spool(folder), folder=folder)
        if cache_dir is not None:
            write_entry(cache_dir, entry_key, data, written=folder)  # copies the split files made in the folder
            data.cache_key = entry_key
    return data


def _redacted_kinds(cfg: DataConfig) -> tuple[str, ...]:
    return tuple(cfg.clean.pii_types) if cfg.clean.redact_pii else ()


def _prepare(cfg: DataConfig, tokenizer: Any, *, max_seq_length: int, seed: int, key: Any, labels: list[str] | None,
             spool: Spool, folder: Path | None) -> PreparedData:
    report = DataReport(template=describe_template(tokenizer), redact_snippets=_redacted_kinds(cfg))
    seen: set[str] = set()
    work = Work(cfg.clean, tokenizer, max_seq_length)
    loaded: dict[str, list[tuple[DatasetSource, list[_Row]]]] = {}
    for role in ROLES:
        loaded[role] = [(src, _load_source(src, role, cfg, work, report, seen, spool, key)) for src in getattr(cfg, role)]
    spool.close()
    pool = [row for _, rows in loaded["train"] for row in rows]
    if not pool:
        drops = Counter({reason: d.count for s in report.sources.values() for reason, d in s.drops.items()})
        raise DataError(
            f"no training rows left after cleaning ({report.rows_read} read; dropped: "
            f"{', '.join(f'{r} {n}' for r, n in drops.most_common())})"
        )
    parts = split_indices(
        [row.key for row in pool],
        validation=0 if cfg.validation else cfg.split.validation,
        test=0 if cfg.test else cfg.split.test,
        seed=seed,
    )
    held_out = {
        role: [row for _, rows in loaded[role] for row in rows] if getattr(cfg, role) else [pool[i] for i in getattr(parts, role)]
        for role in ("validation", "test")
    }
    train_part = _drop_too_long([pool[i] for i in parts.train], report)
    held_out["validation"] = _drop_too_long(held_out["validation"], report)
    long_tests = sum(row.too_long is not None for row in held_out["test"])
    report.test_longer_than_max_seq_length = long_tests
    if long_tests:
        report.notes.append(
            f"{long_tests} test rows are longer than training.max_seq_length={max_seq_length}; "
            "they are kept and evaluated in full (generation has no training length limit)"
        )
    for role, rows in (("train", train_part), *held_out.items()):
        for row in rows:
            report.source(row.source).split[role] += 1
    report.splits = {"train": len(train_part), **{role: len(rows) for role, rows in held_out.items()}}
    report.split_method = "; ".join(
        f"{role}: from data.{role}" if getattr(cfg, role) else f"{role}: {getattr(cfg.split, role):g} of the training rows (seed {seed})"
        for role in ("validation", "test")
    )
    train = _mix_and_cap(train_part, loaded["train"], cfg.max_examples, seed, report)
    weights = None
    if cfg.balance != "none":
        train, weights = _balance(train, cfg.balance, labels, seed, report, spool)
    report.format = _main_format(train, report)
    report.tokens = _token_stats(train)
    return PreparedData(
        **_split(spool, "train", indices(train), weights, folder),
        **_split(spool, "validation", indices(held_out["validation"]), None, folder),
        test_examples=_test_examples(spool, indices(held_out["test"]), folder),
        format=report.format,
        report=report,
        sources={path: stats.sha256 for path, stats in report.sources.items()},
    )


def _split(spool: Spool, part: str, rows: Sequence[int], weights: list[float] | None, folder: Path | None) -> dict:
    """``{part, part_examples}``: read from a mapped split file written in ``folder`` for a large split, else lists.

    Lists of token ids cost ~36 bytes a token (a pointer and an int object), the file 4.
    """
    if folder is None or len(rows) < store.MEMORY_MAP_MIN_ROWS:
        return {part: spool.tokens(rows, weights), f"{part}_examples": spool.examples(rows)}
    path = folder / f"{part}.arrow"
    spool.write(path, rows, weights)
    table, mapping = map_split(path)
    return {part: TokenRows(table, mapping), f"{part}_examples": ExampleRows(table)}


def _test_examples(spool: Spool, rows: Sequence[int], folder: Path | None) -> Sequence[dict]:
    """The test split's canonical examples: a list, or read from a mapped file when large (like :func:`_split`)."""
    if folder is None or len(rows) < store.MEMORY_MAP_MIN_ROWS:
        return spool.examples(rows)
    spool.write(folder / "test.arrow", rows)
    return ExampleRows(map_split(folder / "test.arrow")[0])


def _check_distinct_paths(cfg: DataConfig) -> None:
    first: dict[str, str] = {}
    for role in ("train", "validation", "test"):
        for i, src in enumerate(getattr(cfg, role)):
            here = f"data.{role}[{i}]"
            if src.path in first:
                raise DataError(f"{first[src.path]} and {here} both name {src.path}; list each file once")
            first[src.path] = here


def _load_source(
    src: DatasetSource, role: str, cfg: DataConfig, work: Work, report: DataReport, seen: set[str], spool: Spool,
    key: Any = None,
) -> list[_Row]:
    """Load one source and clean, dedupe and fit its rows; every row left out is counted in the report.

    The per-row work runs in :func:`~tuneforge.data.assess.assess_all` (possibly in other
    processes); deduplication and the report are decided here, row by row in file order.
    """
    # Streamed: rows go from the file to the workers without all of them being held at once.
    examples = stream_examples(src, on_bad_rows=cfg.on_bad_rows, system_prompt=cfg.system_prompt, report=report, key=key)
    stats = report.source(src.path)
    stats.role = role
    rows = []
    procs = choose_num_proc(cfg.num_proc, stats.rows_read)
    assessed = assess_all(((ex, location(ex["meta"])) for ex in examples), work, num_proc=procs)
    for row in assessed:
        where = row.where
        if row.dropped is not None:
            report.drop(src.path, row.dropped.reason, where, row.dropped.detail)
            continue
        if row.key is not None and row.key in seen:
            report.drop(src.path, "duplicate", where, snippet(row.example))
            continue
        encoded = row.encoded
        if isinstance(encoded, DataError):
            raise encoded
        too_long = None
        if isinstance(encoded, Dropped):
            if encoded.reason != "too_long" or not _may_be_test(role, cfg):
                report.drop(src.path, encoded.reason, where, encoded.detail)
                continue
            too_long, encoded = (where, encoded.detail), None
        if row.key is not None:
            seen.add(row.key)
        for kind, n in row.redactions.items():
            stats.pii_redactions[kind] = stats.pii_redactions.get(kind, 0) + n
        stats.truncated += bool(encoded and encoded.truncated)
        # Test rows are evaluated by generation, from the canonical example; their tokens are not kept.
        tokens = None if role == "test" else encoded
        at = spool.add(row.example_json, tokens, targets=row.targets)
        rows.append(_Row(src.path, row.exact_key, at, too_long=too_long, length=len(tokens.input_ids) if tokens else 0,
                         answer_tokens=row.answer_tokens if tokens else 0, truncated=bool(tokens and tokens.truncated)))
    stats.rows_kept = len(rows)
    return rows


def _may_be_test(role: str, cfg: DataConfig) -> bool:
    """Rows of an explicit test source, or of training sources a test split is carved from."""
    return role == "test" or (role == "train" and not cfg.test and cfg.split.test > 0)


def _drop_too_long(rows: list[_Row], report: DataReport) -> list[_Row]:
    """Training and validation keep only rows that fit max_seq_length; the others are counted as dropped now."""
    kept = []
    for row in rows:
        if row.too_long is None:
            kept.append(row)
            continue
        where, why = row.too_long
        report.drop(row.source, "too_long", where, why)
        report.source(row.source).rows_kept -= 1
    return kept


def _mix_and_cap(
    train_part: list[_Row], sources: list[tuple[DatasetSource, list[_Row]]], max_examples: int | None, seed: int, report: DataReport
) -> list[_Row]:
    by_source: dict[str, list[_Row]] = {src.path: [] for src, _ in sources}
    for row in train_part:
        by_source[row.source].append(row)
    train = mix([(by_source[src.path], src.weight) for src, _ in sources], seed=seed)
    if max_examples is not None:
        report.max_examples = {"limit": max_examples, "removed": max(0, len(train) - max_examples)}
        train = train[:max_examples]
    for path, n in Counter(row.source for row in train).items():
        report.source(path).rows_in_training = n
    if not train:
        raise DataError("no training rows left after mixing by weight; raise the sources' weights")
    return train


def _balance(
    train: list[_Row], method: str, labels: list[str] | None, seed: int, report: DataReport, spool: Spool,
) -> tuple[list[_Row], list[float] | None]:
    """Oversample the training rows' minority labels, or weigh their loss (then also returned, one per row).

    The report records the rows per label before and after (and the weights).
    """
    from tuneforge.data.balance import detect_labels, label_counts, label_of, label_weights, oversample
    from tuneforge.data.template import reference

    answers = [reference(ex) if "messages" in ex else "" for ex in map(spool.example, (row.at for row in train))]
    found = labels or detect_labels(answers)
    if not found:
        raise DataError(
            f"data.balance: {method} needs labels: set eval.labels, or use answers that are a small set of short "
            f"labels (the training answers hold {len(set(answers))} distinct values)"
        )
    row_labels = [label_of(a, found) for a in answers]
    if not any(row_labels):
        raise DataError(f"data.balance: no training answer is one of the labels {found}")
    report.balance = {"method": method, "labels_from": "eval.labels" if labels else "detected from the answers",
                      "before": label_counts(row_labels, found)}
    if method == "loss_weights":
        per_label = label_weights(row_labels)
        report.balance.update(after=report.balance["before"], weights=per_label)
        return train, [per_label.get(label, 1.0) if label else 1.0 for label in row_labels]
    order = oversample(list(range(len(train))), row_labels, seed=seed)
    report.balance["after"] = label_counts([row_labels[i] for i in order], found)
    return [train[i] for i in order], None


def _main_format(train: list[_Row], report: DataReport) -> str:
    """The format most training rows come in (sources may mix formats)."""
    counts = Counter(report.source(row.source).format for row in train)
    if len(counts) > 1:
        report.notes.append("training sources mix formats: " + ", ".join(f"{f} {n}" for f, n in counts.most_common()))
    return counts.most_common(1)[0][0]


def _token_stats(train: list[_Row]) -> dict[str, float]:
    lengths = [row.length for row in train]
    return {
        "examples": len(train),
        "total_tokens": sum(lengths),
        "answer_tokens": sum(row.answer_tokens for row in train),
        "mean_length": sum(lengths) / len(lengths),
        "max_length": max(lengths),
        "truncated": sum(row.truncated for row in train),
    }
