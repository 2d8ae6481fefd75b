"""The data report: what each source held, what was kept, and every dropped row with its reason.

Nothing is lost silently: for every source ``rows_read == rows_kept + dropped``,
and ``rows_kept`` is split into train/validation/test. The report is written
as the run's ``data_report.json`` and printed by the CLI as a table.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.data.clean import redact_pii

MAX_DROP_EXAMPLES = 3
SNIPPET_CHARS = 80


@dataclass
class DropRecord:
    """How many rows were dropped for one reason, with the first few as ``file:line: snippet``."""

    count: int = 0
    examples: list[str] = field(default_factory=list)


@dataclass
class SourceStats:
    """Counts for one source file or folder."""

    path: str
    role: str = "train"
    format: str = ""
    weight: float = 1.0
    sha256: str = ""
    note: str = ""
    rows_read: int = 0
    rows_kept: int = 0
    drops: dict[str, DropRecord] = field(default_factory=dict)
    pii_redactions: dict[str, int] = field(default_factory=dict)
    truncated: int = 0
    split: dict[str, int] = field(default_factory=lambda: {"train": 0, "validation": 0, "test": 0})
    rows_in_training: int = 0
    """Training rows taken from this source after mixing by weight and ``max_examples``."""

    @property
    def dropped(self) -> int:
        return sum(d.count for d in self.drops.values())


@dataclass
class DataReport:
    """Everything data preparation kept, dropped and measured.

    Attributes:
        redact_snippets: PII kinds redacted in drop snippets (set when ``clean.redact_pii`` is on,
            so the report never leaks what cleaning removes).
    """

    sources: dict[str, SourceStats] = field(default_factory=dict)
    format: str = ""
    template: str = ""
    splits: dict[str, int] = field(default_factory=lambda: {"train": 0, "validation": 0, "test": 0})
    split_method: str = ""
    max_examples: dict[str, int] | None = None
    tokens: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    test_longer_than_max_seq_length: int = 0
    """Test rows longer than training.max_seq_length: kept, since evaluation does not need the training limit."""
    redact_snippets: tuple[str, ...] = ()
    balance: dict[str, Any] | None = None
    """``data.balance``: method, where the labels came from, training rows per label ``before`` and ``after``."""

    def source(self, path: str) -> SourceStats:
        """The stats of ``path``, created on first use."""
        if path not in self.sources:
            self.sources[path] = SourceStats(path=path)
        return self.sources[path]

    def drop(self, path: str, reason: str, where: str, snippet: str = "") -> None:
        """Count one dropped row of ``path`` and keep it as an example if fewer than three are kept."""
        record = self.source(path).drops.setdefault(reason, DropRecord())
        record.count += 1
        if len(record.examples) < MAX_DROP_EXAMPLES:
            snippet = " ".join(snippet.split())
            if self.redact_snippets:
                snippet = redact_pii(snippet, self.redact_snippets)[0]
            short = snippet if len(snippet) <= SNIPPET_CHARS else snippet[: SNIPPET_CHARS - 1] + "…"
            record.examples.append(f"{where}: {short}" if short else where)

    @property
    def rows_read(self) -> int:
        return sum(s.rows_read for s in self.sources.values())

    @property
    def rows_kept(self) -> int:
        return sum(s.rows_kept for s in self.sources.values())

    @property
    def dropped(self) -> int:
        return sum(s.dropped for s in self.sources.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (the content of ``data_report.json``)."""
        out = asdict(self)
        del out["redact_snippets"]
        out["sources"] = [{**asdict(s), "dropped": s.dropped} for s in self.sources.values()]
        out["totals"] = {"rows_read": self.rows_read, "rows_kept": self.rows_kept, "dropped": self.dropped}
        return out

    def write(self, path: str | Path) -> Path:
        """Write the report as JSON and return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    def table(self):
        """A :class:`rich.table.Table` with one row per source, for the CLI."""
        from rich.table import Table

        table = Table(title=f"Data ({self.format or 'unknown format'})", show_lines=False)
        for name in ("source", "role", "format", "read", "kept", "dropped", "pii", "train", "val", "test"):
            table.add_column(name, justify="left" if name in ("source", "role", "format", "dropped", "pii") else "right")
        for s in self.sources.values():
            drops = ", ".join(f"{reason} {d.count}" for reason, d in s.drops.items()) or "-"
            pii = ", ".join(f"{kind} {n}" for kind, n in s.pii_redactions.items() if n) or "-"
            table.add_row(
                Path(s.path).name, s.role, s.format, str(s.rows_read), str(s.rows_kept), drops, pii,
                str(s.split["train"]), str(s.split["validation"]), str(s.split["test"]),
            )
        lines = [f"template: {self.template}"] if self.template else []
        if self.tokens:
            t = self.tokens
            lines.append(
                f"training: {t['examples']} examples, {t['total_tokens']} tokens ({t['answer_tokens']} answer), "
                f"mean {t['mean_length']:.0f}, max {t['max_length']}"
            )
        if self.balance:
            before, after = self.balance["before"], self.balance["after"]
            lines.append(f"balance ({self.balance['method']}, labels {self.balance['labels_from']}): "
                         + ", ".join(f"{label} {before[label]}→{after.get(label, 0)}" for label in before)
                         + (f"; loss weights {self.balance['weights']}" if self.balance.get("weights") else ""))
        lines += self.notes
        table.caption = "\n".join(lines) or None
        return table
