# `make demo` and `make test` work on a fresh machine: the first use creates .venv and installs
# the package with its dependencies; later uses reinstall only when pyproject.toml changes.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Tests run in two processes (pytest-xdist), a test file per process at a time: files share
# module-scoped fixtures, and TensorFlow's small models leave a core idle (README, "Tests").
PYTEST_JOBS ?= -n 2 --dist loadfile

.PHONY: demo test test-unit test-fast lint ui

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/study run sweeps/demo.yaml
	$(BIN)/study run sweeps/demo_compression.yaml
	$(BIN)/study report demo demo_compression

# Everything CI runs: the linter, the type checker, then every tier of tests (README, "Tests").
test: lint
	$(BIN)/python -m pytest $(PYTEST_JOBS)

# The unit tier alone: pure logic, no TensorFlow, seconds.
test-unit: $(STAMP)
	$(BIN)/python -m pytest $$(grep -l '^pytestmark = pytest.mark.unit' tests/test_*.py)

# Without the slow end-to-end tier.
test-fast: lint
	$(BIN)/python -m pytest $(PYTEST_JOBS) -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check study tests benchmarks
	$(BIN)/mypy

ui: $(STAMP)
	$(BIN)/study ui
