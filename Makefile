# Developer entry points; .ci/run calls `make test`, `make test-pythons`, `make lint` and `make demo`.
#
#   make test                      pytest in $(VENV) (created with the test extras when missing)
#   make test VENV=/work/venv      the same in an existing virtual environment
#   make test-pythons              scripts/test-pythons.sh: make test under Python 3.10 and 3.13 too
#   make demo                      scripts/demo.sh: fresh venv, pack + unpack the bundled example
#   make demo PYTHON=/path/python  the demo with an existing interpreter (conda backend if importable)
#   make bench                     benchmarks/bench_pack.py (four servers, 1x and 3x), bench_unpack.py, bench_executable.py
#                                  (minutes, ~5 GB of disk; nginx rows need nginx-light installed)

BOOTSTRAP_PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-pythons lint bench venv

# Created only when missing, so that an existing environment (VENV=...) is never touched.
$(BIN)/python:
	$(BOOTSTRAP_PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'

venv: $(BIN)/python

test: venv
	$(BIN)/python -m pytest

test-pythons:
	scripts/test-pythons.sh

# Shell: the self-extracting header runs under any POSIX sh (dash, busybox), hence -s sh for it.
lint: venv
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .
	$(BIN)/shellcheck -s sh conda_pixi_pack/pack/writers/header.sh examples/docker/entrypoint.sh
	$(BIN)/shellcheck scripts/*.sh .ci/run

demo:
	scripts/demo.sh

bench: venv
	$(BIN)/python benchmarks/bench_pack.py --scales 1,3
	$(BIN)/python benchmarks/bench_unpack.py
	$(BIN)/python benchmarks/bench_executable.py
