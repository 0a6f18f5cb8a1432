# `make run` and `make test` each create .venv on first use. pip byte-compiles what it installs on one core
# (88 of 135 s); compileall -j 0 does the same on every core: 47 + 40 s (docs/development.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= tfds
ARGS ?=

$(BIN)/agnews-pipeline: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install --no-compile -e ".[dev]"
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib >/dev/null
	touch $@

.PHONY: install run lint test test-fast mutants mutants-fast benchmark clean
install: $(BIN)/agnews-pipeline

run: install
	$(BIN)/agnews-pipeline run --data $(DATA) $(ARGS)

# The bug-finding rules (pyproject.toml [tool.ruff]) and the layer contracts ([tool.importlinter]);
# `make test` and `make test-fast` run it first.
lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# Everything (what CI runs), in three processes, a file each, the longest files first (tests/conftest.py).
# Three on 2 cores: many system tests wait on a subprocess, a server or a cluster, which a third process fills
# (CPU busy 90% -> 96%). Same code, back to back, near-quiet: 19:15 with 3, 21:11 with 2.
test: install lint
	$(BIN)/python -m pytest -q -rs --durations=25 -n 3 --dist loadfile --no-loadscope-reorder $(ARGS)

# While iterating: tests/unit and two end-to-end tests (one run on the sample, then a fully cached run); every
# other test of tests/system is marked slow (tests/conftest.py).
test-fast: install lint
	$(BIN)/python -m pytest -q -m "not slow" -n 2 --dist loadfile --no-loadscope-reorder \
		tests/unit tests/system/test_e2e.py $(ARGS)

# The curated mutation harness (tools/mutants.py; its docstring says how to add one): each mutation breaks one
# behaviour of the product in a throw-away copy, and the tests listed with it must fail. Exits non-zero if any
# mutation survives. `make mutants ARGS="--only NAME"` runs one, ARGS=--list lists them.
mutants: install
	$(BIN)/python tools/mutants.py $(ARGS)

# The mutations whose tests are quick, two at a time (CI; under 3 minutes).
mutants-fast: install
	$(BIN)/python tools/mutants.py --fast --jobs 2 $(ARGS)

clean:
	rm -rf $(VENV) pipeline_root
