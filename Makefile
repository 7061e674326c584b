# `make demo` and `make test` work on a fresh machine: the first use creates .venv and installs
# the package with its dependencies; later uses reinstall only when pyproject.toml changes.
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Tests run in two processes (pytest-xdist), a test file per process at a time: files share
# module-scoped fixtures, and TensorFlow's small models leave a core idle (README, "Tests").
PYTEST_JOBS ?= -n 2 --dist loadfile

.PHONY: demo test test-unit test-fast test-optuna-oldest lint ui

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/study run sweeps/demo.yaml
	$(BIN)/study run sweeps/demo_compression.yaml
	$(BIN)/study report demo demo_compression

# Everything CI runs: the linter, the type checker, then every tier of tests (README, "Tests"),
# then the trial ledger's tests again on the oldest Optuna the pins allow.
test: lint
	$(BIN)/python -m pytest $(PYTEST_JOBS)
	$(MAKE) test-optuna-oldest

# The tests of a trial's life (the one module that reaches into Optuna's storage) on Optuna 4.9,
# the oldest that pyproject.toml allows; the installed, newest one runs everything else.
# Installed once (like .venv), so that `make test` needs no package index after the first run.
OLDEST_OPTUNA := $(VENV)/optuna-oldest
$(OLDEST_OPTUNA)/.installed: $(STAMP)
	rm -rf $(OLDEST_OPTUNA)
	$(BIN)/python -m pip install --quiet --no-deps --target $(OLDEST_OPTUNA) 'optuna==4.9.*'
	touch $@

test-optuna-oldest: $(OLDEST_OPTUNA)/.installed
	PYTHONPATH=$(OLDEST_OPTUNA) $(BIN)/python -c 'import optuna; assert optuna.__version__.startswith("4.9"), optuna.__version__'
	PYTHONPATH=$(OLDEST_OPTUNA) $(BIN)/python -m pytest $(PYTEST_JOBS) -p no:cacheprovider \
		tests/test_ledger.py tests/test_recovery.py tests/test_budget.py

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
