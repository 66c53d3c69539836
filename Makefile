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

.PHONY: help venv book book-student test test-fast test-chapters test-chapter lint bench clean \
	assignments grade test-exercises test-chapters-perturbed test-browser dist \
	test-suite test-notebooks

help:
	@echo "make book    build the book into _build/html (creates .venv on first use)"
	@echo "make test    run the whole test suite"
	@echo "make test-chapter NB=chapters/<chapter>.ipynb   one chapter, as is and perturbed"
	@echo "make bench   step-time benchmark (python -m optlib.bench steps)"
	@echo "make clean   remove _build"
	@echo "make dist    the distribution optlib-course (import name optlib): wheel and sdist in dist/"
	@echo "make assignments   otter releases of exercises/*.ipynb into _build/assignments/<name>/"
	@echo "make grade ASSIGNMENT=01_gradient_descent SUBMISSIONS=dir OUT=grades.csv"
	@echo "make book-student  the book with exercise solutions removed (_build/student/_build/html)"

$(STAMP): pyproject.toml constraints.txt
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	@echo ">> installing torch==2.13.0 (CPU) first, then the pinned toolchain and optlib (editable)"
	$(PIP) install -q "torch==2.13.0" -c constraints.txt $(PIPQUIET)
	@# the distribution was called "optlib" before it became "optlib-course": drop a stale copy
	@$(PIP) uninstall -q -y optlib 2>/dev/null || true
	$(PIP) install -q -c constraints.txt -e ".[book,test,notebooks,lab]" $(PIPQUIET)
	@$(PY) -c "import torch, optlib; assert torch.__version__.startswith('2.13.0'), torch.__version__; print('>> environment ready: torch', torch.__version__)"
	@touch $(STAMP)

venv: $(STAMP)

book: $(STAMP)
	$(PY) -m optlib.course.build book

# Every chapter runs twice: as it is, and under another base seed (OPTLIB_SEED, which moves every
# seeded helper in optlib) with other CPU kernels (ATen's portable kernels instead of AVX2/AVX-512,
# MKL limited to SSE4.2), which changes float32 training runs in their last digits. Every assert
# must hold in both (COURSE.md, "Claims that hold on every machine"). The second run gets its own
# experiment cache, emptied first: every experiment a chapter memoises (optlib.course.cache) is
# recomputed there at every run, under the other seed and kernels, while the first run reads the
# cache the last build left (or computes from cold, as in a fresh clone). So both the cached and
# the recomputed path meet the chapters' asserts.
# absolute: the kernels run in chapters/, so a relative path would land in chapters/_build
PERTURBED_CACHE := $(CURDIR)/_build/.optlib-cache-perturbed
PERTURBED := OPTLIB_SEED=1 ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2 \
	OPTLIB_CACHE_DIR=$(PERTURBED_CACHE)
NBVAL_CHAPTERS := -m pytest -p tests.nbtiming --nbval-lax --nbval-current-env

# Property-based tests draw the same examples everywhere (the hypothesis profile "ci" of
# tests/conftest.py, named here so that a HYPOTHESIS_PROFILE set in the shell cannot change CI).
# The book build is the chapters' first, unperturbed run: it executes every chapter (a cell that
# raises fails it; so does a notebook over the 60 s budget; it prints each notebook's time), and
# the browser tests in tests/ then read the site it wrote. The second run is nbval's, perturbed.
#
# After the book, the test suite and the notebooks' second runs (chapters perturbed, then the
# exercises) go side by side, one per core (-j2, output kept whole per line). The 60 s budget per
# chapter is enforced by the book build, which runs alone; the perturbed pass runs beside the test
# suite, so it gets twice the budget (NOTEBOOK_BUDGET_S) instead.
test: $(STAMP)
	$(PY) -m optlib.course.build book
	$(MAKE) --no-print-directory -j2 --output-sync=line test-suite test-notebooks

test-suite: $(STAMP)
	HYPOTHESIS_PROFILE=ci $(PY) -m pytest tests

test-notebooks: $(STAMP)
	NOTEBOOK_BUDGET_S=120 $(MAKE) --no-print-directory test-chapters-perturbed
	$(MAKE) --no-print-directory test-exercises

test-chapters: $(STAMP)
	$(PY) $(NBVAL_CHAPTERS) chapters
	$(MAKE) --no-print-directory test-chapters-perturbed

test-chapters-perturbed: $(STAMP)
	@echo ">> the chapters again, under OPTLIB_SEED=1 and perturbed CPU kernels"
	rm -rf $(PERTURBED_CACHE)
	$(PERTURBED) $(PY) $(NBVAL_CHAPTERS) chapters

# The browser tests alone (they read the site that make book wrote)
test-browser: $(STAMP)
	$(PY) -m pytest tests/test_site_browser.py tests/test_jupyterlab_browser.py -v

# One chapter, both runs: make test-chapter NB=chapters/02_stochastic_gradient_descent.ipynb
test-chapter: $(STAMP)
	@test -n "$(NB)" || { echo "usage: make test-chapter NB=chapters/<chapter>.ipynb"; exit 2; }
	$(PY) $(NBVAL_CHAPTERS) $(NB)
	rm -rf $(PERTURBED_CACHE)
	$(PERTURBED) $(PY) $(NBVAL_CHAPTERS) $(NB)

test-fast: $(STAMP)
	$(PY) -m pytest tests -m "not slow" -x -q

lint: $(STAMP)
	$(PY) -m ruff check optlib tests

bench: $(STAMP)
	$(PY) -m optlib.bench steps

# The distribution optlib-course (import name optlib): a wheel and an sdist in dist/. The wheel is
# built from the sdist (a file missing from the sdist fails here), with the venv's setuptools (no
# download). tests/test_wheel.py installs such a wheel into a fresh virtual environment.
dist: $(STAMP)
	rm -rf dist
	$(PY) -m build --no-isolation --outdir dist .

clean:
	rm -rf _build

# --- exercises: otter-grader releases, the trusted grader, nbval (see optlib/course/grading) -
EXERCISES := $(sort $(wildcard exercises/[0-9]*.ipynb))

assignments: $(STAMP)
	$(PY) -m optlib.course.grading assign $(EXERCISES)

# Each submission in its own bubblewrap sandbox (apt-get install bubblewrap); both cores unless
# JOBS=1; GRADEFLAGS=--resume continues an interrupted CSV (see --help for the limits).
grade: $(STAMP)
	@test -n "$(ASSIGNMENT)" -a -n "$(SUBMISSIONS)" -a -n "$(OUT)" || { echo \
	  "usage: make grade ASSIGNMENT=01_gradient_descent SUBMISSIONS=folder OUT=grades.csv"; exit 2; }
	$(PY) -m optlib.course.grading grade $(ASSIGNMENT) $(SUBMISSIONS) $(OUT) \
	  $(if $(JOBS),--jobs $(JOBS)) $(GRADEFLAGS)

book-student: $(STAMP)
	$(PY) -m optlib.course.build book --student

test-exercises: assignments
	$(PY) -m pytest --nbval --nbval-current-env $(EXERCISES)
	$(PY) -m pytest --nbval-lax --nbval-current-env \
	  _build/assignments/*/student/*.ipynb exercises/grill_quiz.ipynb
