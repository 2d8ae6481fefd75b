"""The Ollama Modelfile, parsed back and checked against the stop token llama.cpp uses."""

from __future__ import annotations

import pytest

from tuneforge.errors import ExportError


def test_generated_modelfile_parses(gguf_f16):
    from tuneforge.export.modelfile import CHATML_GO_TEMPLATE, modelfile_problems, parse_modelfile

    parsed = parse_modelfile((gguf_f16.output / "Modelfile").read_text())
    assert parsed.from_ == "./model-f16.gguf"
    assert parsed.template == CHATML_GO_TEMPLATE
    assert parsed.system == "You are a helpful assistant."
    assert parsed.stops == ["<|im_end|>"]
    # The GGUF's eos token, which llama.cpp's chat handler stops on (tests/export/test_llamacpp.py).
    assert modelfile_problems(parsed, "<|im_end|>") == []


def test_modelfile_problems_name_what_is_wrong(gguf_f16):
    from tuneforge.export.modelfile import modelfile_problems, parse_modelfile

    text = (gguf_f16.output / "Modelfile").read_text()
    no_stop = parse_modelfile(text.replace('PARAMETER stop "<|im_end|>"', 'PARAMETER stop "</s>"'))
    assert modelfile_problems(no_stop, "<|im_end|>") == ["PARAMETER stop does not name '<|im_end|>' (stops: ['</s>'])"]
    bad_template = parse_modelfile(text.replace("{{ .Content }}<|im_end|>", "{{ .Content }}"))
    assert modelfile_problems(bad_template, "<|im_end|>") == ["TEMPLATE does not end a message's content with '<|im_end|>'"]
    no_template = parse_modelfile("FROM ./m.gguf\nPARAMETER stop <|im_end|>\nPARAMETER temperature 0.2\n")
    assert no_template.stops == ["<|im_end|>"] and ("temperature", "0.2") in no_template.parameters
    assert modelfile_problems(no_template, "<|im_end|>") == ["no TEMPLATE: Ollama would fall back to the GGUF's chat template"]


def test_unknown_instruction_is_reported_with_its_line():
    from tuneforge.export.modelfile import parse_modelfile

    with pytest.raises(ExportError, match=r"Modelfile line 3: unknown instruction 'PARAMETR'"):
        parse_modelfile('FROM ./m.gguf\n# comment\nPARAMETR stop "<|im_end|>"\n')
