"""Merge adapters into their base model and export runs as Hugging Face folders or GGUF files.

    merge("runs/NAME")                        -> runs/NAME/merged (plain HF model)
    run("runs/NAME", fmt="hf")                -> runs/NAME/export/hf (merged + adapter/ + README)
    run("runs/NAME", fmt="gguf", quant="q8_0") -> runs/NAME/export/gguf (model-q8_0.gguf + Modelfile)
"""

from tuneforge.export.gguf_file import SUPPORTED_ARCHITECTURES, write_gguf
from tuneforge.export.llamacpp import LlamaCppReport, check_llamacpp, llama_cpp_available
from tuneforge.export.merging import merge
from tuneforge.export.modelfile import build_modelfile, inspect_template
from tuneforge.export.pipeline import FORMATS, ExportResult, run
from tuneforge.export.roundtrip import DEFAULT_PROMPTS, PromptCheck, RoundtripReport, check_roundtrip

__all__ = [
    "DEFAULT_PROMPTS", "FORMATS", "SUPPORTED_ARCHITECTURES", "ExportResult", "LlamaCppReport", "PromptCheck",
    "RoundtripReport", "build_modelfile", "check_llamacpp", "check_roundtrip", "inspect_template",
    "llama_cpp_available", "merge", "run", "write_gguf",
]
