# Every target sets itself up: a fresh clone needs only Python 3.11, make and git.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The product and, beside it, the sandbox (emulators and demo), which the wheel never holds.
$(STAMP): pyproject.toml sandbox/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -e ./sandbox
	touch $(STAMP)

# The whole story against both emulators, every claim checked; nothing left running.
demo: $(STAMP)
	$(BIN)/bridge demo

lint: $(STAMP)
	$(BIN)/ruff check bridge sandbox tests bench
	$(BIN)/ruff format --check bridge sandbox tests bench
	$(BIN)/mypy --strict bridge sandbox/bridge_sandbox
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest

# Benchmarks print their figures and ratios; run by hand, never as tests.
bench: $(STAMP)
	@for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

format: $(STAMP)
	$(BIN)/ruff format bridge sandbox tests bench
	$(BIN)/ruff check --fix bridge sandbox tests bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
