# Developer entry points. Everything runs from the repo's own files: `make demo` and
# `make test` work from a fresh clone (deploy/local/up installs what is missing).
#
#   make venv           .venv with the project and its test/bench extras
#   make stack          install and start Kafka, Redis, the device broker (deploy/local/up)
#   make status / down  state of the local services / stop them (data is kept)
#   make lint           ruff, mypy (strict), the import layers (lint-imports), modules at
#                       most 600 lines, bandit (reviewed list), the pins against the vendored
#                       advisory snapshot (reviewed list), shellcheck when installed, the
#                       deploy files
#                       (deploy/helm/validate.py; the first run builds helm: ~3-5 min)
#   make pytest         start the stack, run the test suite (PYTEST_ARGS="-k stack" to narrow)
#   make test           lint, then pytest
#   make demo           a whole rollout: stack, services, fleet, task, progress, summary
#                       (DEMO_ARGS="--size 2000 --keep-running"; see python -m ops.demo --help)
#   make smoke          start the stack and run the smoke check
#   make bench-clients  raw client figures into bench/RESULTS.md

SHELL := /bin/bash
PY := .venv/bin/python
PYTEST_ARGS ?=
DEMO_ARGS ?=
SHELL_SCRIPTS := deploy/local/up deploy/local/down deploy/local/status deploy/local/venv \
	deploy/local/lib.sh .ci/run deploy/tools/install deploy/compose/create-topics.sh
# Python outside the packages of pyproject.toml's [tool.mypy], checked as strictly; add
# files here as they become clean (the whole of tests/ has several conftest.py modules).
MYPY_EXTRA := deploy/local deploy/topics.py deploy/sbom.py deploy/check_manifests.py deploy/helm/validate.py \
	deploy/check_module_size.py deploy/check_bandit.py deploy/osv.py deploy/check_advisories.py \
	bench/clients.py bench/gateway_bench.py tests/conftest.py tests/integration/test_stack.py
# The worker tests (and bench) in a run of their own: their conftests would clash with
# tests/conftest.py as top-level modules, so modules are named from the repo root, and
# their shared kit (workerkit) is imported by name.
MYPY_WORKERS := tests/unit/workers tests/integration/workers tests/faults/workers \
	bench/worker_bench.py
# Recipes that talk to the stack take its settings (ports, URLs) from the env file `up`
# writes; variables set by the caller win.
STATE_DIR := $(or $(OTA_STATE_DIR),$(CURDIR)/.state)
WITH_STACK_ENV := set -a && . "$(STATE_DIR)/env.sh" && set +a &&
# The smoke check moves to the ota package once it has one.
SMOKE := $(if $(wildcard ota/smoke.py),$(PY) -m ota.smoke,$(PY) deploy/local/smoke.py)

.PHONY: venv stack status down lint pytest test check demo smoke bench-clients

venv:
	@deploy/local/venv

stack:
	@deploy/local/up

status:
	@deploy/local/status

down:
	@deploy/local/down

lint: venv
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/mypy $(MYPY_EXTRA)
	MYPYPATH=tests/integration/workers .venv/bin/mypy --explicit-package-bases $(MYPY_WORKERS)
	@# The layers of pyproject.toml's [tool.importlinter]: ota the leaf, services apart, ops on top.
	.venv/bin/lint-imports
	.venv/bin/python deploy/check_module_size.py
	.venv/bin/python deploy/check_manifests.py
	.venv/bin/python deploy/topics.py --check
	@# The image's CycloneDX SBOM must match the lock (deploy/sbom.py --write after a change).
	.venv/bin/python deploy/sbom.py --check
	@# bandit over the shipped packages; every finding fixed or accepted with its reason in
	@# deploy/bandit-reviewed.toml.
	.venv/bin/python deploy/check_bandit.py
	@# The pins (deploy/constraints.txt, deploy/tools/requirements.txt) against the vendored
	@# snapshot of the PyPA advisory database (deploy/advisories/, offline; its first line
	@# says how old it is); findings fixed or accepted in deploy/advisories-reviewed.toml.
	.venv/bin/python deploy/check_advisories.py
	@# The chart and manifests, checked statically (no cluster here): helm, kubernetes-validate,
	@# CRD schemas, checkov, hadolint. install builds/installs them into .tools/ once.
	deploy/tools/install
	.tools/venv/bin/python deploy/helm/validate.py
	@if command -v shellcheck >/dev/null; then \
		echo "shellcheck -x $(SHELL_SCRIPTS)"; shellcheck -x $(SHELL_SCRIPTS); \
	else echo "shellcheck not installed; shell scripts not linted"; fi

# pytest exits 5 when it collected nothing: a broken path or marker, never a pass.
pytest: stack
	@$(WITH_STACK_ENV) status=0; .venv/bin/pytest $(PYTEST_ARGS) || status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests (exit 5): failing" >&2; fi; \
	exit $$status

test: lint pytest

check: test

demo: stack
	@$(WITH_STACK_ENV) $(PY) -m ops.demo --no-stack-up $(DEMO_ARGS)

smoke: stack
	@$(WITH_STACK_ENV) $(SMOKE)

bench-clients: stack
	@$(WITH_STACK_ENV) $(PY) bench/clients.py
