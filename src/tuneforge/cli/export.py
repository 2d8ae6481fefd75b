"""``tuneforge export RUN --format hf|gguf``: write a servable Hugging Face folder or a GGUF file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tuneforge.cli.options import overwrite_option, trust_remote_code_option, warn_trust_remote_code


def export(
    source: Annotated[
        str, typer.Argument(help="A run directory (runs/NAME), a PEFT adapter folder, a model folder or an alias.")
    ],
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="hf (merged safetensors + adapter + vLLM README) or gguf (llama.cpp/Ollama).")
    ] = "hf",
    quant: Annotated[str, typer.Option("--quant", "-q", help="GGUF weight type: f16 or q8_0.")] = "f16",
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Export folder (default: RUN/export/<format>).")
    ] = None,
    check: Annotated[
        bool, typer.Option("--check/--no-check", help="GGUF: reload the file (transformers, and llama.cpp if installed) and compare greedy completions.")
    ] = True,
    overwrite: bool = overwrite_option(),
    trust_remote_code: bool = trust_remote_code_option(),
    decrypt: Annotated[
        bool, typer.Option("--decrypt", help="Export an encrypted run in plaintext (other tools cannot decrypt it).")
    ] = False,
) -> int:
    """Export a run as a Hugging Face folder (vLLM, transformers) or a GGUF file (llama.cpp, Ollama)."""
    from tuneforge.export import run

    warn_trust_remote_code(trust_remote_code, source)
    result = run(
        source, fmt=fmt, quant=quant, output=output, check=check, overwrite=overwrite,
        trust_remote_code=trust_remote_code, decrypt=decrypt,
    )
    typer.echo(f"{result.format} export written to {result.output}")
    for path in result.files:
        size = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        typer.echo(f"  {path.name:<32} {size / 1e6:10.3f} MB")
    if result.roundtrip is not None:
        typer.echo(result.roundtrip.summary())
        for c in result.roundtrip.checks:
            mark = "same" if c.identical else f"{c.token_agreement:.0%}"
            typer.echo(f"  [{mark}] {c.prompt!r} -> {c.exported!r}")
    if result.llamacpp is not None:
        typer.echo(result.llamacpp.summary())
        typer.echo(result.llamacpp.table())
    return 0
