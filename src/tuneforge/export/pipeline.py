"""The export stage: turn a run (or an adapter, or a model) into a servable artifact.

``run(source, fmt)`` reads top to bottom: find what the source is, make sure a
merged Hugging Face folder exists, then write the requested format
(``hf``: merged model + adapter + README; ``gguf``: GGUF file + Ollama
Modelfile, checked against the merged model by a greedy round trip, and in
llama.cpp itself when llama-cpp-python is installed).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from typing import Any
from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.errors import ExportError
from tuneforge.export.card import write_model_card
from tuneforge.export.gguf_file import check_quant, read_config, write_gguf
from tuneforge.export.llamacpp import LlamaCppReport, check_llamacpp, llama_cpp_available
from tuneforge.export.hf import export_hf
from tuneforge.export.merging import (
    Source, check_merge_output, check_mergeable, find_source, is_current, is_reward_model, merge_source,
)
from tuneforge.export.output import atomic_folder, check_output
from tuneforge.export.modelfile import build_modelfile, inspect_template, modelfile_problems, parse_modelfile
from tuneforge.export.roundtrip import DEFAULT_PROMPTS, RoundtripReport, check_roundtrip
from tuneforge.security.lineage import audited_output

log = logging.getLogger("tuneforge.export")

FORMATS = ("hf", "gguf")


@dataclass
class ExportResult:
    """What an export wrote."""

    format: str
    output: Path
    files: list[Path] = field(default_factory=list)
    roundtrip: RoundtripReport | None = None
    """The GGUF-vs-merged comparison (gguf with ``check=True``)."""
    llamacpp: LlamaCppReport | None = None
    """The same prompts decoded by llama.cpp itself (gguf with ``check=True`` and llama-cpp-python installed)."""
    modelfile_problems: list[str] = field(default_factory=list)
    """Where the Modelfile's TEMPLATE/stop disagree with the stop token llama.cpp used (with ``llamacpp``)."""


def _default_output(source: Source, fmt: str) -> Path:
    if source.run is None:
        raise ExportError(f"{source.path} is not a run directory; give an output folder (--output DIR)")
    return source.run.export / fmt


def _merged_dir(source: Source, scratch: Path, overwrite: bool, trust_remote_code: bool) -> Path:
    """A merged HF folder for ``source``: ``RUN/merged`` (merged now if missing or stale), else a scratch one."""
    if source.kind == "model":
        return source.path
    target = source.run.merged if source.run is not None else scratch / "merged"
    if not is_current(source, target):
        log.info("merging %s into %s", source.weights, target)
        merge_source(source, target, overwrite=overwrite, trust_remote_code=trust_remote_code)
    return target


def _plaintext_sealer(source: Source, output: Path, decrypt: bool) -> Any:
    """A plain sealer when ``source`` is an encrypted run exported with ``decrypt``; None for a plain source.

    Raises:
        ExportError: an encrypted run without ``decrypt``.
    """
    from tuneforge.security.at_rest import Sealer, run_security

    if source.run is None or not run_security(source.run.root).get("encrypt"):
        return None
    if not decrypt:
        raise ExportError(
            f"{source.run.root} is encrypted, and an export is read by other tools (vLLM, llama.cpp) that cannot "
            "decrypt it: give --decrypt to write the export in plaintext, or use `tuneforge merge` (stays encrypted)"
        )
    Sealer.for_run(source.run.root)  # the key must be there (and right) before anything is written
    return Sealer(output)


def _export_gguf(source: Source, merged: Path, output: Path, quant: str, check: bool) -> ExportResult:
    from tuneforge.data import end_of_turn_token
    from tuneforge.models import load_tokenizer

    read_config(merged)  # fail on an unsupported architecture before any writing
    with atomic_folder(output, f"export gguf {quant}") as folder:
        gguf_path = write_gguf(merged, folder / f"model-{quant}.gguf", quant, name=source.path.resolve().name)
        tokenizer = load_tokenizer(merged)
        (folder / "Modelfile").write_text(
            build_modelfile(
                gguf_path.name, inspect_template(tokenizer), end_of_turn_token(tokenizer), source=str(source.path)
            )
        )
        # Checked before the swap: a file that fails to load never replaces a good export.
        report = check_roundtrip(merged, gguf_path, DEFAULT_PROMPTS, max_new_tokens=16) if check else None
        in_llamacpp = None
        if check and llama_cpp_available():
            in_llamacpp = check_llamacpp(merged, gguf_path, DEFAULT_PROMPTS, n_tokens=16)
        elif check:
            log.info("llama-cpp-python is not installed: skipping the check in llama.cpp (pip install 'tuneforge[interop]')")
        problems = []
        if in_llamacpp is not None and in_llamacpp.chat is not None and in_llamacpp.chat.stop:
            # Ollama runs llama.cpp: its Modelfile must stop where llama.cpp's own chat handler stops.
            problems = modelfile_problems(parse_modelfile((folder / "Modelfile").read_text()), in_llamacpp.chat.stop[0])
            for problem in problems:
                log.warning("Modelfile: %s", problem)
        write_model_card(source.path, folder)  # README.md: lineage, data, eval, hashes of the files
    files = [output / gguf_path.name, output / "Modelfile", output / "README.md"]
    return ExportResult("gguf", output, files, report, in_llamacpp, problems)


@audited_output("export")  # audit log: who exported which run, and the SHA-256 of every file written
def run(
    source: str | Path, fmt: str = "hf", quant: str = "f16", output: str | Path | None = None, check: bool = True,
    *, overwrite: bool = False, trust_remote_code: bool = False, decrypt: bool = False,
) -> ExportResult:
    """Export a run, adapter or model as a Hugging Face folder or a GGUF file.

    Args:
        source: A run directory (``runs/NAME``), a PEFT adapter folder, a model folder or a model alias.
        fmt: ``"hf"`` (merged safetensors + tokenizer + adapter + README) or ``"gguf"``
            (llama.cpp/Ollama file + Modelfile).
        quant: GGUF matrix type: ``"f16"`` or ``"q8_0"`` (``hf`` takes only the default).
        output: The export folder; default ``RUN/export/<fmt>`` (required for non-run sources).
        check: For gguf, load the file back with transformers and compare greedy completions, and
            run the same prompts in llama.cpp when llama-cpp-python is installed.
        overwrite: Replace an existing output folder that tuneforge did not write (no ``.tuneforge`` marker).
        trust_remote_code: Run custom model code shipped with the base model (``--trust-remote-code``).
        decrypt: Export an encrypted run in plaintext (other tools cannot read our encryption);
            refused without it, so a plaintext copy is never made by accident.

    Returns:
        An :class:`ExportResult` with the files written and the round-trip report.

    Raises:
        ExportError: unknown format or quantization, missing source, unsupported architecture, or an
            output that is a file, not writable, inside the source or base model, or not written by tuneforge.

    Example:
        >>> result = run("runs/support-bot", fmt="gguf", quant="q8_0")
        >>> print(result.roundtrip.summary())
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if fmt == "gguf":
        check_quant(quant)
    elif quant != "f16":
        raise ExportError(f"--quant {quant} applies to the gguf format only; the hf export keeps the model's dtype")
    src = find_source(source)
    check_mergeable(src)  # every format is written from the merged model
    if is_reward_model(src):
        raise ExportError(
            f"{source} is a reward model (a one-output score head instead of a language-model head). A GGUF file "
            "holds a causal language model for llama.cpp/Ollama to generate with: the score head has no place in "
            "it and would be lost, leaving a model that scores nothing. The hf export is written for chat serving "
            "too. Use `tuneforge merge` for a Hugging Face sequence-classification folder "
            "(AutoModelForSequenceClassification), or `tuneforge serve` for POST /v1/rewards"
        )
    out = Path(output) if output is not None else _default_output(src, fmt)
    check_merge_output(src, out, overwrite=overwrite)  # before any slow load
    plain = _plaintext_sealer(src, out, decrypt)
    if fmt == "hf":
        return ExportResult("hf", out, export_hf(src, out, overwrite=overwrite, trust_remote_code=trust_remote_code,
                                                 sealer=plain))
    scratch = Path(tempfile.mkdtemp(prefix="tuneforge-export-", dir=src.run.root if plain else None))
    try:
        if plain is not None:  # RUN/merged is encrypted: the GGUF writer reads a plaintext merge, removed below
            merged = merge_source(src, scratch / "merged", trust_remote_code=trust_remote_code, sealer=plain)
        else:
            merged = _merged_dir(src, scratch, overwrite, trust_remote_code)
        check_output(out, protected=[merged], overwrite=overwrite)  # not into the merged folder it reads
        return _export_gguf(src, merged, out, quant, check)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
