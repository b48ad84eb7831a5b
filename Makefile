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

# Preflight launches the pack with the interpreter PulumiPolicy.yaml declares, as the CLI does, so
# everything that runs the pack prepares its environment first.
preview: $(VENV)/.installed policy-venv
	$(PY) -m preflight --stack $(STACK)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(VENV)/bin/zizmor --offline --config .github/zizmor.yml --min-severity medium .github/workflows/

types: $(VENV)/.installed
	$(VENV)/bin/mypy

pytest: $(VENV)/.installed policy-venv
	$(PY) -m pytest -n 2

test: lint types pytest

bench: $(VENV)/.installed policy-venv
	$(PY) bench/preflight.py

# The policy pack's own environment, where `pulumi preview/up --policy-pack policies` looks for it:
# PulumiPolicy.yaml's runtime.options.virtualenv, relative to policies/. The CLI runs the pack with that
# venv's python and installs nothing for a local pack; `pulumi install` inside policies/ installs the
# program instead (pulumi/pulumi#16605). So CI calls this target before any command that passes the pack.
# The directory is read from PulumiPolicy.yaml (never repeated here); created like the CLI's pip toolchain
# creates one (python -m venv, pip included), then policies/requirements.txt installed into it with uv.
POLICY_VENV_OF := import os, sys, yaml; f = sys.argv[1]; rt = yaml.safe_load(open(f))["runtime"]; \
	o = (rt.get("options") or {}) if isinstance(rt, dict) else {}; \
	v = o.get("virtualenv") if o.get("toolchain", "pip") == "pip" else None; \
	print(os.path.join(os.path.dirname(f), v)) if v else \
	sys.exit(f + ": policy-venv prepares a pip virtualenv: declare runtime.options.virtualenv")

.PHONY: policy-venv
policy-venv: $(VENV)/.installed
	@set -euo pipefail; \
	venv="$$($(PY) -c '$(POLICY_VENV_OF)' policies/PulumiPolicy.yaml)"; \
	test -x "$$venv/bin/python" || $(PYTHON) -m venv "$$venv"; \
	$(UV) pip install --quiet --python "$$venv/bin/python" -r policies/requirements.txt; \
	echo "policy pack environment ready: $$venv"

clean:
	venv="$$($(PY) -c '$(POLICY_VENV_OF)' policies/PulumiPolicy.yaml 2>/dev/null || true)"; \
	rm -rf $(VENV) .mypy_cache .ruff_cache .hypothesis $$venv
