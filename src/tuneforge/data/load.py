"""Read one data source (JSONL, JSON, CSV, Parquet or a ``datasets.save_to_disk`` folder) into canonical examples.

Every row keeps where it came from (``meta``: source path and line, or record
index for formats without lines) so that each error and each dropped row can
be reported as ``file:line``. Rows are only parsed and validated here, not
cleaned (:mod:`tuneforge.data.clean`).
"""

from __future__ import annotations

import csv
import difflib
from collections import Counter
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from tuneforge.config.schema import DatasetSource
from tuneforge.data.formats import RowError, check_kind, detect_row_format, format_by_vote, to_canonical, with_system_prompt
from tuneforge.data.report import DataReport
from tuneforge.errors import DataError

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


@dataclass(frozen=True)
class RawRow:
    """One row as read from a file, before format conversion."""

    position: int
    """1-based line (JSONL, CSV) or 0-based record index (JSON, Parquet, datasets)."""
    data: Any = None
    error: str | None = None
    """Why the row could not be parsed (then ``data`` is None)."""
    raw: str = ""


@dataclass(frozen=True)
class RawSource:
    rows: Iterable[RawRow]
    """A list, or for JSON Lines a re-readable stream (:class:`_JsonlRows`)."""
    by_line: bool
    """True when ``position`` is a line number."""
    note: str = ""


def location(meta: dict) -> str:
    """``file:line`` or ``file: record N`` for an example's ``meta``."""
    if "record" in meta:
        return f"{meta['source']}: record {meta['record']}"
    return f"{meta['source']}:{meta['line']}"


def source_digest(path: str | Path) -> str:
    """SHA-256 of a file, or of a folder's files (relative names and contents, in sorted order)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            h.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def read_rows(path: str | Path, key: Any = None) -> RawSource:
    """Read the raw rows of a file or saved ``datasets`` folder.

    A file encrypted by ``tuneforge encrypt`` (``rows.jsonl.enc``, or any name: the header tells)
    is decrypted in memory with ``key`` (a :class:`tuneforge.security.Key`; default: the
    ``TUNEFORGE_KEY_FILE``/``TUNEFORGE_KEY``/``TUNEFORGE_PASSPHRASE`` environment); its
    type is that of the name without ``.enc``.

    Raises:
        DataError: the path is missing, of an unsupported type, or unreadable as a whole.
        DecryptError: the file is encrypted and the key is missing or wrong, or the file was modified.
    """
    from tuneforge.security.crypto import is_encrypted

    path = Path(path)
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    if path.is_dir():
        return _read_saved_dataset(path)
    suffix = Path(path.name.removesuffix(".enc")).suffix.lower()
    readers = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}
    reader = readers.get(suffix)
    if reader is None:
        raise DataError(
            f"{path}: unsupported data file type '{suffix}'; expected {', '.join(SUFFIXES)} (optionally + .enc) "
            "or a folder written by datasets.save_to_disk"
        )
    content: bytes | None = None
    if is_encrypted(path):
        from tuneforge.security.at_rest import read_file

        content = read_file(path, key)
    try:
        return reader(path, content)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}): {exc.reason}") from None


def _text(path: Path, content: bytes | None, newline: str | None = None) -> Any:
    """A text stream over the file, or over its decrypted ``content`` (which never touches the disk)."""
    if content is None:
        return open(path, encoding="utf-8-sig", newline=newline)
    return io.StringIO(content.decode("utf-8-sig"), newline=newline)


# json.loads recurses once per nesting level; a hostile line of 100k "[" ends in RecursionError.
_TOO_DEEP = "not valid JSON: nested too deeply (more levels than the JSON parser's recursion limit)"


@dataclass(frozen=True)
class _JsonlRows:
    """The rows of a JSON Lines file, parsed again on each pass instead of held in memory.

    Loading reads a file twice (once to count rows, vote on the format and check the
    field map, once to convert), so a source larger than memory streams through.
    """

    path: Path
    content: bytes | None = None
    """The decrypted bytes of an encrypted file (in memory only, never on disk), else None."""

    def __iter__(self) -> Iterator[RawRow]:
        # Parsed line by line (not pandas.read_json(lines=True)) to keep each row's line number.
        try:
            with _text(self.path, self.content) as f:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        yield RawRow(lineno, json.loads(line), raw=line)
                    except json.JSONDecodeError as exc:
                        yield RawRow(lineno, None, f"not valid JSON: {exc.msg} (column {exc.colno})", line)
                    except RecursionError:
                        yield RawRow(lineno, None, _TOO_DEEP, line[:200])
        except UnicodeDecodeError as exc:
            raise DataError(f"{self.path}: not UTF-8 text (byte {exc.start}): {exc.reason}") from None


def _read_jsonl(path: Path, content: bytes | None = None) -> RawSource:
    return RawSource(_JsonlRows(path, content), by_line=True)


def _read_json(path: Path, content: bytes | None = None) -> RawSource:
    with _text(path, content) as f:
        text = f.read()
    if not text.strip():
        return RawSource([], by_line=False)
    try:
        data = json.loads(text)
    except RecursionError:
        raise DataError(f"{path}: {_TOO_DEEP}") from None
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # many ".json" files are JSON Lines
            return RawSource(_JsonlRows(path, content), True, "read as JSON Lines (one object per line)")
        raise DataError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg} (column {exc.colno})") from None
    if isinstance(data, dict):
        key = next((k for k in ("data", "rows", "examples") if isinstance(data.get(k), list)), None)
        if key is None:
            raise DataError(
                f"{path}: a JSON object must hold the records as a list under 'data', 'rows' or 'examples' "
                f"(keys: {sorted(data)[:10]})"
            )
        data = data[key]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return RawSource([RawRow(i, row) for i, row in enumerate(data)], by_line=False)


def _read_csv(path: Path, content: bytes | None = None) -> RawSource:
    # The csv module (not pandas) because it reports where each record starts, even when
    # quoted cells span several lines; every value stays a string.
    rows = []
    with _text(path, content, newline="") as f:
        reader = csv.DictReader(f)
        start = 2  # line 1 is the header
        try:
            for record in reader:
                extra = record.pop(None, None)  # DictReader files surplus cells under the None key
                if extra:
                    n = len(record) + len(extra)
                    error = f"has {n} cells but the header has {len(reader.fieldnames)} columns"
                    rows.append(RawRow(start, None, error, ",".join(str(v) for v in record.values())))
                else:
                    rows.append(RawRow(start, record, raw=json.dumps(record, ensure_ascii=False)))
                start = reader.line_num + 1
        except csv.Error as exc:
            raise DataError(f"{path}:{reader.line_num}: not valid CSV: {exc}") from None
    return RawSource(rows, by_line=True)


def _read_parquet(path: Path, content: bytes | None = None) -> RawSource:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path if content is None else pa.BufferReader(content))
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file: {exc}") from None
    return RawSource([RawRow(i, row) for i, row in enumerate(table.to_pylist())], by_line=False)


def _read_saved_dataset(path: Path) -> RawSource:
    from datasets import DatasetDict, load_from_disk

    try:
        dataset = load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(f"{path}: a folder must be written by datasets.save_to_disk ({exc})") from None
    note = ""
    if isinstance(dataset, DatasetDict):
        if "train" not in dataset:
            raise DataError(f"{path}: the saved DatasetDict has no 'train' split (splits: {', '.join(dataset)})")
        note = f"DatasetDict: used its 'train' split (splits: {', '.join(dataset)})"
        dataset = dataset["train"]
    return RawSource([RawRow(i, row) for i, row in enumerate(dataset.to_list())], by_line=False, note=note)


def load_examples(
    source: DatasetSource | str,
    *,
    on_bad_rows: str = "error",
    system_prompt: str | None = None,
    report: DataReport | None = None,
    objective: str = "sft",
    key: Any = None,
) -> list[dict]:
    """Read one source, detect or apply its format, validate, and return canonical examples.

    Args:
        source: A :class:`DatasetSource` (path, format, field_map) or a path.
        on_bad_rows: ``"error"`` stops at the first bad row; ``"skip"`` counts it as dropped.
        system_prompt: Prepended as a system message to chat examples that have none.
        report: Counts (rows read, drops by reason, format, SHA-256) are recorded here.
        objective: ``"sft"`` takes supervised formats and refuses preference pairs; a preference
            objective (``"dpo"``) takes only pairs (see :func:`tuneforge.data.formats.check_kind`).
        key: Decrypts an encrypted file (see :func:`read_rows`).

    Returns:
        Canonical examples (not yet cleaned), each with ``meta`` = source and line.

    Raises:
        DataError: missing or empty file, undetectable format or one the objective cannot use, a bad row
            (with ``on_bad_rows="error"``), or no usable rows at all.

    Example:
        >>> examples = load_examples("data/tickets.jsonl", system_prompt="Classify the ticket.")
    """
    return list(stream_examples(source, on_bad_rows=on_bad_rows, system_prompt=system_prompt, report=report,
                                objective=objective, key=key))


def stream_examples(
    source: DatasetSource | str,
    *,
    on_bad_rows: str = "error",
    system_prompt: str | None = None,
    report: DataReport | None = None,
    objective: str = "sft",
    key: Any = None,
) -> Iterator[dict]:
    """:func:`load_examples` one example at a time: the checks of the whole source run now, the rows as iterated.

    The first pass (row count, empty file, field map, format vote) happens before this returns, so
    ``report.source(path).rows_read`` is known; a bad row raises (or is counted) when it is reached.
    A JSON Lines source is never held in memory as a whole.
    """
    src = DatasetSource(path=source) if isinstance(source, str) else source
    path = str(src.path)
    raw = read_rows(path, key)
    report = report if report is not None else DataReport()
    stats = report.source(path)
    stats.sha256, stats.note, stats.weight = source_digest(path), raw.note, src.weight
    survey = _survey(raw.rows, src.field_map)
    stats.rows_read = survey.rows
    if not survey.rows:
        raise DataError(f"{path}: the file is empty (no rows)")
    _check_field_map(src.field_map, survey, path)
    fmt = src.format
    if fmt == "auto" and survey.parsed:
        fmt = format_by_vote(survey.votes, survey.first_fields, path, objective=objective)
    elif fmt != "auto":
        check_kind(fmt, objective, path)
    stats.format = fmt
    return _examples(raw, src, fmt, on_bad_rows, system_prompt, report)


@dataclass
class _Survey:
    """What the first pass over a source learns, in memory that does not grow with the rows."""

    rows: int = 0
    parsed: int = 0
    """Rows that are JSON objects (the format vote counts only these)."""
    fields: set[str] | None = None
    """Every field name (before renaming), for the field_map check."""
    mapped: set[str] | None = None
    """The field_map keys some row has."""
    votes: Counter | None = None
    first_fields: set[str] | None = None
    """Fields (after renaming) of the first 20 objects, named when no format fits."""


def _survey(rows: Iterable[RawRow], field_map: dict[str, str]) -> _Survey:
    survey = _Survey(fields=set(), mapped=set(), votes=Counter(), first_fields=set())
    for r in rows:
        survey.rows += 1
        if not isinstance(r.data, dict):
            continue
        survey.fields.update(str(k) for k in r.data)
        survey.mapped.update(old for old in field_map if old in r.data)
        row = _rename(r.data, field_map)
        if survey.parsed < 20:
            survey.first_fields.update(row)
        survey.parsed += 1
        survey.votes[detect_row_format(row)] += 1
    return survey


def _examples(
    raw: RawSource, src: DatasetSource, fmt: str, on_bad_rows: str, system_prompt: str | None, report: DataReport
) -> Iterator[dict]:
    path = str(src.path)
    stats = report.source(path)
    kept = 0
    for r in raw.rows:
        row = _rename(r.data, src.field_map) if isinstance(r.data, dict) else r.data
        meta = {"source": path, "line": r.position} if raw.by_line else {"source": path, "line": r.position, "record": r.position}
        where = location(meta)
        try:
            if r.error is not None:
                raise RowError(f"{where}: {r.error}")
            if not isinstance(row, dict):
                raise RowError(f"{where}: expected an object with fields, got {type(row).__name__}")
            example = to_canonical(row, fmt, where)
        except RowError as exc:
            if on_bad_rows != "skip":
                raise
            report.drop(path, exc.reason, where, r.raw or json.dumps(r.data, ensure_ascii=False, default=str))
            continue
        kept += 1
        yield {**with_system_prompt(example, system_prompt), "meta": meta}
    stats.rows_kept = kept
    if not kept:
        drops = ", ".join(f"{reason} {d.count}" for reason, d in stats.drops.items())
        raise DataError(f"{path}: no usable rows ({stats.rows_read} read, all dropped: {drops})")


def _rename(row: dict, field_map: dict[str, str]) -> dict:
    return {field_map.get(k, k): v for k, v in row.items()} if field_map else row


def _check_field_map(field_map: dict[str, str], survey: _Survey, path: str) -> None:
    """A field_map key that no row has is a typo: say so, with the closest existing field.

    Checked on the rows as read (before renaming): checking the renamed field instead would
    pass whenever the target name already exists, and the mapping would be silently ignored.
    """
    if not survey.parsed:
        return
    fields = sorted(survey.fields)
    for old, new in field_map.items():
        if old in survey.mapped:
            continue
        close = difflib.get_close_matches(old, fields, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        shown = ", ".join(fields[:20]) + (f", ... ({len(fields)} in all)" if len(fields) > 20 else "")
        raise DataError(
            f"{path}: field_map renames '{old}' to '{new}' but no row has a field '{old}'{hint} (fields in the file: {shown})"
        )
