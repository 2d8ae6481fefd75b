"""A cache of prepared data, keyed by a fingerprint of everything the result depends on.

A second run with the same sources (by content), data config, tokenizer,
``max_seq_length``, seed and data-preparation code reads the prepared splits
back instead of cleaning and tokenizing again. The key (:func:`fingerprint`)
hashes:

- each source's path and SHA-256 (the report names the paths, so they count too);
- the ``data`` section, less the fields that do not change the result
  (``num_proc``, ``cache``, ``packing``: packing happens later, in the trainer);
- the tokenizer: its class, full serialized vocabulary/merges, chat template and special tokens;
- ``max_seq_length`` and the seed;
- the code: tuneforge's version and the source of the ``tuneforge.data`` modules, so
  editing any preparation step invalidates older entries.

Entries live in ``$TUNEFORGE_CACHE/data/<key>/`` (default ``~/.cache/tuneforge``; see :func:`cache_root`),
folders 0700 and files 0600, written to a temporary folder and renamed into
place, so a crashed run never leaves a half-written entry that a later run reads.
Token ids and examples are Arrow IPC files (:mod:`tuneforge.data.store`; memory-mapped when read, and a large
split is then read from the file one example at a time), the report JSON.

The cache holds the data in plain text outside the run directory. Runs whose
data must be encrypted at rest turn it off: :func:`cache_folder` returns None when
``data.cache`` is false or :func:`plaintext_cache_forbidden` says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tuneforge.config.schema import DataConfig
from tuneforge.data.load import source_digest
from tuneforge.data.report import DataReport, DropRecord, SourceStats
from tuneforge.data.store import WRITE_BATCH_ROWS  # read at each write: tests set it lower (many batches a file)

FORMAT_VERSION = 2  # 2: split files carry a targets column (data/store.py)
_NOT_IN_KEY = {"num_proc", "cache", "packing"}


def cache_root() -> Path:
    """``$TUNEFORGE_DATA_CACHE``, else ``$TUNEFORGE_CACHE/data`` (default ``~/.cache/tuneforge/data``).

    A variable of its own lets the test suite keep prepared data out of the user's cache
    while models are still found in it.
    """
    from tuneforge.models.load import cache_dir

    return Path(os.environ.get("TUNEFORGE_DATA_CACHE") or cache_dir() / "data")


def plaintext_cache_forbidden(run_cfg: Any) -> bool:
    """True when the run's data must not be cached in plain text: ``security.encrypt`` is on.

    A run that encrypts its files must not leave a plaintext copy of its tokenized data in the
    user cache (the canary scan of tests/security checks the run and its temp folder, not the cache).
    """
    return bool(run_cfg.security.encrypt)


def cache_folder(run_cfg: Any) -> Path | None:
    """Where a run caches prepared data, or None when it must not (``data.cache: false`` or encryption)."""
    if not run_cfg.data.cache or plaintext_cache_forbidden(run_cfg):
        return None
    return cache_root()


def fingerprint(cfg: DataConfig, tokenizer: Any, *, max_seq_length: int, seed: int,
                labels: list[str] | None = None) -> str:
    """The cache key of a preparation: a SHA-256 hex digest (see the module docstring for what it covers)."""
    # A missing source is keyed as such; preparing it then fails with the loader's error (file and path).
    sources = [(src.path, source_digest(src.path) if Path(src.path).exists() else "missing")
               for role in ("train", "validation", "test") for src in getattr(cfg, role)]
    parts = {
        "format": FORMAT_VERSION,
        "sources": sources,
        "data": cfg.model_dump(mode="json", exclude=_NOT_IN_KEY),
        "tokenizer": tokenizer_digest(tokenizer),
        "max_seq_length": max_seq_length,
        "seed": seed,
        "labels": labels,  # eval.labels decide data.balance's label of each row
        "code": code_digest(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def tokenizer_digest(tokenizer: Any) -> str:
    """A hash of what decides a tokenizer's output: class, vocabulary and merges, chat template, special tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocab = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    parts = [type(tokenizer).__name__, vocab, str(getattr(tokenizer, "chat_template", None)),
             json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def code_digest() -> str:
    """tuneforge's version and the source of every ``tuneforge.data`` module."""
    import tuneforge

    h = hashlib.sha256(tuneforge.__version__.encode())
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- entries


def read_entry(root: Path, key: str) -> dict[str, Any] | None:
    """The fields of a cached :class:`~tuneforge.data.prepare.PreparedData`, or None when there is no usable entry.

    An entry that cannot be read (edited or damaged on disk) is removed, so this run prepares the
    data again and stores a good entry in its place.
    """
    import pyarrow as pa

    folder = root / key
    if not (folder / "report.json").is_file():
        return None
    try:
        return _read(folder)
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException):  # JSONDecodeError is a ValueError
        shutil.rmtree(folder, ignore_errors=True)
        return None


def _read(folder: Path) -> dict[str, Any]:
    from tuneforge.data.store import MEMORY_MAP_MIN_ROWS, ExampleRows, TokenRows, map_split

    meta = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    out: dict[str, Any] = {"format": meta["format"], "sources": meta["sources"], "report": _report_from_dict(meta["report"])}
    for part in ("train", "validation", "test"):
        table, mapping = map_split(folder / f"{part}.arrow")
        if table.num_rows >= MEMORY_MAP_MIN_ROWS:  # large: read from the mapped file when used
            out[f"{part}_examples"] = ExampleRows(table)
            if part != "test":
                out[part] = TokenRows(table, mapping)
            continue
        if part != "test":
            out[part] = [{"input_ids": ids, "labels": labels}
                         for ids, labels in zip(table.column("input_ids").to_pylist(), table.column("labels").to_pylist())]
            if "weight" in table.column_names:  # data.balance: loss_weights
                for row, weight in zip(out[part], table.column("weight").to_pylist()):
                    row["weight"] = weight
        out[f"{part}_examples"] = [json.loads(e) for e in table.column("example").to_pylist()]
    return out


def write_entry(root: Path, key: str, data: Any, written: Path | None = None) -> Path:
    """Store a :class:`~tuneforge.data.prepare.PreparedData` under ``root/key`` (atomically, private).

    Args:
        written: A folder where preparation already wrote some splits as files (the large ones):
            those are copied as bytes, not read back through their mapping (which would make
            every page of them resident).
    """
    from tuneforge.data.store import write_split

    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(root, 0o700)
    target = root / key
    tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=root))  # mkdtemp: 0700
    try:
        tokens = {"train": data.train, "validation": data.validation, "test": None}
        for part, rows in tokens.items():
            made = written / f"{part}.arrow" if written is not None else None
            if made is not None and made.is_file():
                _copy_private(made, tmp / f"{part}.arrow")
            else:
                write_split(tmp / f"{part}.arrow", getattr(data, f"{part}_examples"), rows, batch_rows=WRITE_BATCH_ROWS)
        meta = {"format": data.format, "sources": data.sources, "report": data.report.to_dict()}
        _write_private(tmp / "report.json", json.dumps(meta, ensure_ascii=False).encode())
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
            shutil.rmtree(tmp)  # another process (a DDP rank, a parallel run) stored the same key first: same content
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _copy_private(source: Path, target: Path) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(source, "rb") as src, os.fdopen(fd, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def _write_private(path: Path, content: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(content)


def _report_from_dict(d: dict[str, Any]) -> DataReport:
    """The inverse of :meth:`DataReport.to_dict` (its derived ``dropped`` and ``totals`` are recomputed)."""
    fields = {k: v for k, v in d.items() if k not in ("sources", "totals")}
    report = DataReport(**fields)
    for s in d["sources"]:
        s = {k: v for k, v in s.items() if k != "dropped"}
        s["drops"] = {reason: DropRecord(**record) for reason, record in s["drops"].items()}
        report.sources[s["path"]] = SourceStats(**s)
    return report
