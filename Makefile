# `make run` and `make test` work from a fresh clone: each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= examples/daemon.toml

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# `make run` installs the project alone; `make test` adds the test extras (and so also
# serves `make run` afterwards).
$(VENV)/.installed-run: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed-run

# Byte-compiled sources: where PYTHONDONTWRITEBYTECODE is set (containers often set it), every
# Python process would otherwise compile actors/ and transport/ again: ~0.15 s per CLI call,
# and the suite starts ~900 of them. compileall skips what is up to date.
# The suite runs on two pytest workers (pytest-xdist), a test file per worker at a time: most
# tests wait on subprocesses and sockets, so one worker leaves a core idle. One file's tests
# stay on one worker (--dist loadfile): their module fixtures start once. Files with a `slow`
# test go first (tests/conftest.py), in that order (--no-loadscope-reorder): xdist's own order,
# by test count, started those minute-long few-test files last, with the other worker idle.
COMPILE := $(BIN)/python -m compileall -q actors transport tests bench examples

run: $(VENV)/.installed-run
	$(COMPILE)
	$(BIN)/tradeloom --log-format console daemon --config $(CONFIG)

test: $(VENV)/.installed
	$(COMPILE)
	$(BIN)/ruff check actors transport tests bench examples
	$(BIN)/mypy
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder

# Every benchmark, then docs/benchmarks.md (run it alone: the benches share the cores).
# `python -m bench --help`: --quick (CI smoke), --only NAME, --soak [--soak-minutes N].
bench: $(VENV)/.installed
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .tradeloom .pytest_cache .mypy_cache .ruff_cache
