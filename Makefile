# `make demo` and `make test` work on a fresh machine: the first use creates .venv and installs
# the package with its dependencies; later uses reinstall only when pyproject.toml changes.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast ui

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/study run sweeps/demo.yaml
	$(BIN)/study run sweeps/demo_compression.yaml
	$(BIN)/study report demo demo_compression

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

ui: $(STAMP)
	$(BIN)/study ui
