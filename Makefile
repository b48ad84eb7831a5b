# Two commands do everything on a fresh machine:
#   make preview   offline preflight of the dev stack (creates .venv and installs what it needs)
#   make test      lint, types and the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STACK ?= dev
# The installer: a uv on PATH when there is one (CI installs it: astral-sh/setup-uv, or the agent
# image), otherwise the one requirements-lock.txt pins, installed into .venv (see $(VENV)/bin/uv).
ifeq ($(origin UV),undefined)
UV := $(or $(shell command -v uv 2>/dev/null),$(VENV)/bin/uv)
endif
# Every install comes from a lock: each package pinned with its hashes, as `make lock` compiled it.
LOCK := requirements-lock.txt
POLICY_LOCK := policies/requirements-lock.txt

.PHONY: preview test lint types pytest bench clean lock

# Cache bytecode even where the environment says not to: the provider SDKs are large, and compiling
# them on every run triples a preflight's time.
unexport PYTHONDONTWRITEBYTECODE

# `pip sync`, not `pip install`: .venv ends up holding exactly the lock (anything else is removed), and
# a package without a matching hash is refused. The lock covers requirements.txt, requirements-dev.txt
# and policies/requirements.txt, plus pip and uv themselves (requirements-lock.in says why).
# Virtualenvs are created without pip (`--without-pip`: 0.2 s instead of 6 s of ensurepip unpacking its
# bundled wheel on a 2-core machine); the sync installs the pip the lock pins.
$(VENV)/.installed: $(LOCK) | $(UV)
	test -x $(PY) || $(PYTHON) -m venv --without-pip $(VENV)
	$(UV) pip sync --quiet --python $(PY) --require-hashes $(LOCK)
	touch $@

# Only when no uv is on PATH: the version the lock pins, with its hashes, installed by a pip: the venv's
# own once it has one, else the system Python's aimed at the venv (`pip --python`, pip 22.3+; tried
# without a probe, which cost 1.1 s), else, when that fails, the one ensurepip gives the venv.
$(VENV)/bin/uv:
	test -x $(PY) || $(PYTHON) -m venv --without-pip $(VENV)
	awk '/^uv==/ {found = 1} found {print} found && !/\\$$/ {exit}' $(LOCK) > $(VENV)/uv-requirement.txt
	@set -euo pipefail; \
	install() { echo "$$* install uv (requirements-lock.txt's pin)"; "$$@" install --quiet \
		--disable-pip-version-check --no-deps --require-hashes -r $(VENV)/uv-requirement.txt; }; \
	if $(PY) -m pip --version >/dev/null 2>&1; then install $(PY) -m pip; \
	elif ! install $(PYTHON) -m pip --python $(PY); then \
		$(PY) -m ensurepip --default-pip >/dev/null; install $(PY) -m pip; fi

# Recompile both locks from their ranges (requirements-lock.in in the root and in policies/, each
# including its requirements*.txt). Keeps every pin the ranges still allow; `make lock LOCK_ARGS=--upgrade`
# or `LOCK_ARGS="--upgrade-package NAME"` moves pins. Universal (every platform, Python >= 3.11), so
# one lock serves CI, the Jenkins agent and laptops. Dependabot recompiles them the same way: it reads
# the options from the command uv records in each lock's header (tests/test_dependencies.py checks it).
LOCK_ARGS ?=
UV_COMPILE = pip compile --quiet --universal --generate-hashes --python-version 3.11 $(LOCK_ARGS) \
	requirements-lock.in --output-file requirements-lock.txt
LOCK_NOTE := \#    (run `make lock` from the repository root; the ranges are in the files requirements-lock.in includes)
lock: | $(UV)
	$(UV) $(UV_COMPILE)
	cd policies && $(abspath $(UV)) $(UV_COMPILE)
	for f in $(LOCK) $(POLICY_LOCK); do \
		awk -v note='$(LOCK_NOTE)' 'NR == 3 && $$0 != note {print note} {print}' "$$f" > "$$f.tmp" && mv "$$f.tmp" "$$f"; \
	done

# Preflight launches the pack with the interpreter PulumiPolicy.yaml declares, as the CLI does, so
# everything that runs the pack prepares its environment first.
preview: $(VENV)/.installed policy-venv
	$(PY) -m preflight --stack $(STACK)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.dependabot .github/dependabot.yml
	$(VENV)/bin/zizmor --offline --config .github/zizmor.yml --min-severity medium .github/workflows/

types: $(VENV)/.installed
	$(VENV)/bin/mypy

# Two workers, each test file on one of them (pyproject.toml's addopts: --dist loadfile).
pytest: $(VENV)/.installed policy-venv
	$(PY) -m pytest -n 2

test: lint types pytest

# Figures only (bench/*.py say what each measures); bench/scaling.py --sizes 200 is the slow one.
bench: $(VENV)/.installed policy-venv
	$(PY) bench/preflight.py
	$(PY) bench/diff.py
	$(PY) bench/policies.py --processes 1 2
	$(PY) bench/policies.py --processes 1 --resources 5000
	$(PY) bench/scaling.py

# The policy pack's own environment, where `pulumi preview/up --policy-pack policies` looks for it:
# PulumiPolicy.yaml's runtime.options.virtualenv, relative to policies/. The CLI runs the pack with that
# venv's python and installs nothing for a local pack; `pulumi install` inside policies/ installs the
# program instead (pulumi/pulumi#16605). So CI calls this target before any command that passes the pack.
# The directory is read from PulumiPolicy.yaml (never repeated here); created with `python -m venv`, as
# the CLI's pip toolchain creates one, but without ensurepip's pip: the sync to policies/requirements-lock.txt
# (the hashed lock of policies/requirements.txt, pip included; a published pack installs requirements.txt)
# installs the pip it pins, so the environment ends up with pip either way.
POLICY_VENV_OF := import os, sys, yaml; f = sys.argv[1]; rt = yaml.safe_load(open(f))["runtime"]; \
	o = (rt.get("options") or {}) if isinstance(rt, dict) else {}; \
	v = o.get("virtualenv") if o.get("toolchain", "pip") == "pip" else None; \
	print(os.path.join(os.path.dirname(f), v)) if v else \
	sys.exit(f + ": policy-venv prepares a pip virtualenv: declare runtime.options.virtualenv")

.PHONY: policy-venv
policy-venv: $(VENV)/.installed $(POLICY_LOCK)
	@set -euo pipefail; \
	venv="$$($(PY) -c '$(POLICY_VENV_OF)' policies/PulumiPolicy.yaml)"; \
	test -x "$$venv/bin/python" || $(PYTHON) -m venv --without-pip "$$venv"; \
	$(UV) pip sync --quiet --python "$$venv/bin/python" --require-hashes policies/requirements-lock.txt; \
	echo "policy pack environment ready: $$venv"

clean:
	venv="$$($(PY) -c '$(POLICY_VENV_OF)' policies/PulumiPolicy.yaml 2>/dev/null || true)"; \
	rm -rf $(VENV) .mypy_cache .ruff_cache .hypothesis $$venv
