# Every target sets itself up: a fresh clone needs only Python 3.11, make and git.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pip-tools and pip-audit, in a venv of their own: their dependencies never mix with the product's.
TOOLS := $(VENV)/tools

.PHONY: demo test lint format bench clean lock audit browser translations

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

test: lint browser
	$(BIN)/pytest -n auto --dist loadfile --durations=15

# The console's browser tests drive Debian's chromium through Playwright's executable_path;
# nothing is downloaded at run time. Installed here when missing (as root, from the apt
# mirror); anyone else is told what to install. Checked on every run: no stamp.
CHROMIUM := /usr/bin/chromium
APT_CHROMIUM := DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium
browser:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	    echo "make: the console's browser tests need $(CHROMIUM): install Debian's chromium package (sudo apt-get install chromium)" >&2; \
	    exit 1; \
	  fi; \
	  echo "make: installing chromium for the console's browser tests"; \
	  $(APT_CHROMIUM) || { apt-get update && $(APT_CHROMIUM); }; \
	  test -x $(CHROMIUM) || { echo "make: $(CHROMIUM) still missing after apt-get install chromium" >&2; exit 1; }; \
	}

# Benchmarks print their figures and ratios; run by hand, never as tests.
bench: $(STAMP)
	@for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

$(TOOLS)/bin/pip-audit:
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --upgrade pip
	$(TOOLS)/bin/python -m pip install --quiet 'pip-tools>=7.5' 'pip-audit>=2.7'

# The runtime dependencies, pinned with their hashes (the Docker image installs exactly these);
# pyproject.toml keeps the ranges. Pins that still fit are kept: `make lock LOCK=--upgrade`
# takes every update, `LOCK='--upgrade-package NAME'` one (a fix for a vulnerability).
lock: $(TOOLS)/bin/pip-audit
	CUSTOM_COMPILE_COMMAND="make lock" $(TOOLS)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	  --no-emit-index-url --no-emit-find-links $(LOCK) --output-file requirements.lock \
	  pyproject.toml

# Known vulnerabilities in the locked packages; fails on any, and (--strict) on a package it
# could not look up. Not part of `make lint`: pip-audit asks PyPI's per-release JSON API
# (/pypi/<name>/<version>/json) or OSV (api.osv.dev), and CI machines that reach only the
# package index get neither.
audit: $(TOOLS)/bin/pip-audit
	$(TOOLS)/bin/pip-audit --strict --disable-pip --require-hashes -r requirements.lock

# The privacy portal's languages: its English msgids extracted into locales/messages.pot, each
# language's catalog (locales/<lang>/LC_MESSAGES/messages.po) updated from it, and compiled to
# the .mo files the portal reads. Translate what the update left empty, then run it again.
LOCALES := bridge/web/portal/locales
translations: $(STAMP)
	$(BIN)/pybabel extract -F bridge/web/portal/babel.cfg -o $(LOCALES)/messages.pot \
	  --add-location=file --sort-by-file --no-wrap --omit-header .
	$(BIN)/pybabel update -i $(LOCALES)/messages.pot -d $(LOCALES) --no-wrap \
	  --no-fuzzy-matching --ignore-obsolete
	$(BIN)/pybabel compile --statistics -d $(LOCALES)

format: $(STAMP)
	$(BIN)/ruff format bridge sandbox tests bench
	$(BIN)/ruff check --fix bridge sandbox tests bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
