# Two commands do everything on a fresh machine:
#   make book   build the book into _build/html (creates .venv on first use)
#   make test   run the whole test suite        (same environment)
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check --no-input
STAMP := $(VENV)/.installed
# pip warns about every local index folder a package is missing from; keep the log readable.
PIPQUIET := 2> >(grep -v "is neither a file nor a directory" >&2)

.PHONY: help venv book book-student test test-fast lint bench clean assignments grade

help:
	@echo "make book    build the book into _build/html (creates .venv on first use)"
	@echo "make test    run the whole test suite"
	@echo "make bench   step-time benchmark (python -m optlib.bench steps)"
	@echo "make clean   remove _build"

$(STAMP): pyproject.toml constraints.txt
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	@echo ">> installing torch==2.13.0 (CPU) first, then the pinned toolchain and optlib (editable)"
	$(PIP) install -q "torch==2.13.0" -c constraints.txt $(PIPQUIET)
	$(PIP) install -q -c constraints.txt -e ".[book,test]" $(PIPQUIET)
	@$(PY) -c "import torch, optlib; assert torch.__version__.startswith('2.13.0'), torch.__version__; print('>> environment ready: torch', torch.__version__)"
	@touch $(STAMP)

venv: $(STAMP)

book: $(STAMP)
	$(PY) -m optlib.build book

test: $(STAMP)
	$(PY) -m pytest tests
	$(PY) -m pytest -p tests.nbtiming --nbval-lax --nbval-current-env chapters

test-fast: $(STAMP)
	$(PY) -m pytest tests -m "not slow" -x -q

lint: $(STAMP)
	$(PY) -m ruff check optlib tests

bench: $(STAMP)
	$(PY) -m optlib.bench steps

clean:
	rm -rf _build
