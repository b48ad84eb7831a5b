# Two commands do everything on a fresh machine:
#   make preview   offline preflight of the dev stack (creates .venv and installs what it needs)
#   make test      lint, types and the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STACK ?= dev

.PHONY: preview test lint types pytest bench clean

# Cache bytecode even where the environment says not to: the provider SDKs are large, and compiling
# them on every run triples a preflight's time.
unexport PYTHONDONTWRITEBYTECODE

$(VENV)/.installed: requirements.txt requirements-dev.txt policies/requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	test -x $(UV) || $(PY) -m pip install --quiet --disable-pip-version-check "uv>=0.13,<0.14"
	$(UV) pip install --quiet --python $(PY) -r requirements-dev.txt
	touch $@

preview: $(VENV)/.installed
	$(PY) -m preflight --stack $(STACK)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(VENV)/bin/zizmor --offline --config .github/zizmor.yml --min-severity medium .github/workflows/

types: $(VENV)/.installed
	$(VENV)/bin/mypy

pytest: $(VENV)/.installed
	$(PY) -m pytest -n 2

test: lint types pytest

bench: $(VENV)/.installed
	$(PY) bench/preflight.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .hypothesis
