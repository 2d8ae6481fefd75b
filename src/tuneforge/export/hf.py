"""Hugging Face export: the merged safetensors model, the adapter in PEFT layout, and a README with vLLM commands.

Two ways to serve a LoRA run with vLLM, both written down in the export's README:
the merged model on its own (``vllm serve DIR``), or the base model with the
adapter attached at request time (``--enable-lora --lora-modules name=DIR/adapter``),
which lets one server host many adapters of the same base.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tuneforge.export.card import write_model_card
from tuneforge.export.merging import Source, merge_source
from tuneforge.export.output import MARKER
from tuneforge.models.sealed import ADAPTER_WEIGHTS
from tuneforge.security.at_rest import read_file, write_atomic
from tuneforge.security.crypto import is_encrypted

ADAPTER_DIR = "adapter"
# vLLM accepts only these values for --max-lora-rank (vllm/config LoRAConfig).
_VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def vllm_lora_rank(rank: int) -> int:
    """The smallest ``--max-lora-rank`` vLLM accepts that fits an adapter of rank ``rank``."""
    return next((r for r in _VLLM_LORA_RANKS if r >= rank), rank)


def readme(output: Path, name: str, *, base: str | None = None, adapter_config: dict | None = None) -> str:
    """The export's README: what is in the folder and the exact commands to serve it.

    Args:
        output: The export folder (absolute paths are written, so commands run from anywhere).
        name: The model name clients pass in requests.
        base: The base model path or id (for the LoRA variant).
        adapter_config: The adapter's ``adapter_config.json`` when the source is an adapter run.
    """
    out = Path(output).resolve()
    text = [
        f"# {name}: exported by tuneforge",
        "",
        "This folder is a plain Hugging Face model: safetensors weights (any adapter already merged in), "
        "the tokenizer with its chat template, and a generation config that stops at the end-of-turn token.",
        "",
        "## Serve the merged model with vLLM",
        "",
        "```bash",
        f"vllm serve {out} --served-model-name {name}",
        "```",
        "",
        "```bash",
        "curl http://localhost:8000/v1/chat/completions -H 'Content-Type: application/json' \\",
        f"  -d '{{\"model\": \"{name}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello!\"}}]}}'",
        "```",
        "",
    ]
    if adapter_config is not None and base is not None:
        rank = int(adapter_config.get("r", 16))
        text += [
            "## Serve the base model with the LoRA adapter",
            "",
            f"`{ADAPTER_DIR}/` holds the adapter in PEFT layout; vLLM attaches it to the base model per request:",
            "",
            "```bash",
            f"vllm serve {base} --enable-lora --lora-modules {name}={out / ADAPTER_DIR} "
            f"--max-lora-rank {vllm_lora_rank(rank)}",
            "```",
            "",
            f"Requests then name the adapter: `\"model\": \"{name}\"` (the base model stays available under its own name).",
            "",
        ]
        if adapter_config.get("use_dora"):
            text += ["Note: this is a DoRA adapter, which vLLM cannot attach; serve the merged model instead.", ""]
    text += [
        "## Load with transformers",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        f"model = AutoModelForCausalLM.from_pretrained(\"{out}\")",
        f"tokenizer = AutoTokenizer.from_pretrained(\"{out}\")",
        "```",
    ]
    return "\n".join(text) + "\n"


def export_hf(source: Source, output: Path, *, overwrite: bool = False, trust_remote_code: bool = False,
              sealer: Any = None) -> list[Path]:
    """Write the merged model, the adapter copy (LoRA runs) and the README into ``output``, atomically.

    ``sealer`` writes the weights (an export of an encrypted run is written in plaintext: the
    caller passes a plain one after ``--decrypt``).

    Returns:
        The paths written (model folder files, ``adapter/``, ``README.md``).
    """
    output = Path(output)
    has_adapter = source.kind in ("run", "adapter") and (source.weights / "adapter_config.json").is_file()

    def add(folder: Path, base: str) -> None:
        adapter_config = None
        if has_adapter:
            shutil.copytree(source.weights, folder / ADAPTER_DIR)
            copied = folder / ADAPTER_DIR / ADAPTER_WEIGHTS
            if is_encrypted(copied):  # the export is for other tools: the adapter goes out decrypted too
                write_atomic(copied, lambda f: f.write(read_file(source.weights / ADAPTER_WEIGHTS)))
            adapter_config = json.loads((source.weights / "adapter_config.json").read_text())
        name = source.path.resolve().name
        # The card's usage names the final folder, not the temporary one it is written in.
        usage = readme(output, name, base=base if has_adapter else None, adapter_config=adapter_config)
        write_model_card(source.path, folder, usage=usage)  # README.md: lineage, data, eval, file hashes

    merge_source(source, output, overwrite=overwrite, trust_remote_code=trust_remote_code, what="export hf", add=add,
                 sealer=sealer)
    return sorted(p for p in output.iterdir() if p.name != MARKER)
