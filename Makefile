# `make run` and `make test` each create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= tfds
ARGS ?=

$(BIN)/agnews-pipeline: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[dev]"
	touch $@

.PHONY: install run lint test test-fast benchmark clean
install: $(BIN)/agnews-pipeline

run: install
	$(BIN)/agnews-pipeline run --data $(DATA) $(ARGS)

# The bug-finding rules (pyproject.toml [tool.ruff]) and the layer contracts ([tool.importlinter]);
# `make test` and `make test-fast` run it first.
lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# Everything (what CI runs).
test: install lint
	$(BIN)/python -m pytest -q -rs --durations=25 $(ARGS)

# While iterating: tests/unit and two end-to-end tests (one run on the sample, then a fully cached run); every
# other test of tests/system is marked slow (tests/conftest.py).
test-fast: install lint
	$(BIN)/python -m pytest -q -m "not slow" tests/unit tests/system/test_e2e.py $(ARGS)

clean:
	rm -rf $(VENV) pipeline_root
