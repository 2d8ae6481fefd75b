"""``tuneforge audit verify|show``: prove the audit log's chain intact, and list who trained what on which data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(name="audit", no_args_is_help=True, help="Check and read the audit log (who trained what, on which data).")

_LOG = typer.Argument(
    None, help="The audit log (default: $TUNEFORGE_AUDIT_LOG, else runs/audit.jsonl).", show_default=False
)


def _log(log: Path | None) -> Path:
    from tuneforge.security.audit import log_path

    return log if log is not None else log_path("runs")


@app.command("verify")
def verify(
    log: Optional[Path] = _LOG,
    hmac_key_file: Annotated[Optional[Path], typer.Option(
        "--hmac-key-file", help="Check every entry's HMAC with this key (default: $TUNEFORGE_AUDIT_HMAC_KEY[_FILE]).")] = None,
    expect_last: Annotated[Optional[str], typer.Option(
        "--expect-last", help="Anchor: the hash of an entry you recorded earlier; it must still be in the log.")] = None,
) -> int:
    """Check the hash chain (and HMACs); exit 0 when intact, 1 naming the first edited, removed or reordered entry."""
    from tuneforge.security.audit import read_hmac_key
    from tuneforge.security.audit import verify as verify_log

    path = _log(log)
    result = verify_log(path, read_hmac_key(hmac_key_file), expect_last)
    typer.echo(f"{path}: {result.summary()}")
    for note in result.notes:
        typer.echo(f"note: {note}")
    return 0 if result.ok else 1


@app.command("show")
def show(
    log: Optional[Path] = _LOG,
    run: Annotated[Optional[str], typer.Option("--run", help="Only this run's actions.")] = None,
) -> int:
    """List actions: when, who, what, which run, data and model hashes, and how it ended."""
    from rich.console import Console
    from rich.table import Table

    from tuneforge.security.audit_show import action_rows

    path = _log(log)
    rows = action_rows(path, run)
    table = Table(title=f"{path}: {len(rows)} actions")
    for col in ("seq", "when (UTC)", "who", "action", "run / key", "data (SHA-256)", "base model", "status"):
        table.add_column(col, overflow="fold")
    for r in rows:
        data = "\n".join(f"{Path(p).name} {h[:12]}" for p, h in r.data.items())
        table.add_row(str(r.seq), r.time[:19].replace("T", " "), r.who, r.action, r.run, data, r.model[:12], r.status)
    Console(width=200).print(table)
    return 0
