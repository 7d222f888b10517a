# Two targets do all the set-up on a fresh machine:
#   make demo   builds .venv, installs pinned dependencies and runs the main job end to end
#   make test   builds the same environment plus dev dependencies and runs the test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev

.PHONY: demo test bench env clean help

help:
	@echo "make demo   - build .venv and run the end-to-end demo (simulate, train, federate, query)"
	@echo "make test   - build .venv with dev dependencies and run the test suite"
	@echo "make bench  - run every benchmark in bench/ (each prints a JSON summary as its last line)"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch is pinned: 2.13.0 is the CPU wheel; an unpinned torch pulls a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

env: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/infrabrain demo

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
