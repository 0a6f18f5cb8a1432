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

.PHONY: install run test benchmark clean
install: $(BIN)/agnews-pipeline

run: install
	$(BIN)/agnews-pipeline run --data $(DATA) $(ARGS)

test: install
	$(BIN)/python -m pytest -q -rs $(ARGS)

clean:
	rm -rf $(VENV) pipeline_root
