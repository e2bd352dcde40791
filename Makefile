# nhs-xca-gateway: the only entry point for humans and CI. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
BIN := $(VENV)/bin
PY ?= python3.11
SRC_DIRS := libs/common/src libs/devstack/src $(wildcard services/*/src)
PKG_FILES := $(wildcard libs/*/pyproject.toml services/*/pyproject.toml)
export NO_MKDOCS_2_WARNING := 1

.PHONY: help install lock compose-test deploy-check fuzz load proto proto-check fmt lint typecheck check unit e2e test run sandbox bench docs docs-examples demo clean

help: ## List every target
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  %-14s %s\n", $$1, $$2}'

install: $(VENV)/.stamp ## Create .venv from requirements-dev.lock (installs Redis when root and missing)

$(VENV)/.stamp: requirements-dev.lock requirements-tools.txt $(PKG_FILES) scripts/install.sh
	PY=$(PY) ./scripts/install.sh
	@touch $@

lock: ## Recompile requirements-dev.lock (pins only) and constraints.txt from requirements-dev.in
	UV_PYTHON_DOWNLOADS=never $(BIN)/uv pip compile -q --python-version 3.11 --no-header requirements-dev.in -o requirements-dev.lock
	grep -v '^-e ' requirements-dev.lock | grep -v '^ *#' > constraints.txt

proto: install ## Regenerate the gRPC stubs in libs/contracts from protos/
	./scripts/gen_protos.sh

proto-check: install ## Fail when committed stubs differ from protos/, and run buf lint
	./scripts/gen_protos.sh
	@git diff --exit-code --stat -- libs/contracts || (echo "proto-check: stubs are stale; run 'make proto' and commit" && exit 1)
	@test -z "$$(git status --porcelain -- libs/contracts)" || (echo "proto-check: untracked generated files"; git status --porcelain -- libs/contracts; exit 1)
	$(BIN)/buf lint

fmt: install ## Format and autofix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lint: install ## ruff, ruff format --check, bandit, secret scan, mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/bandit -q -c pyproject.toml -r $(SRC_DIRS)
	$(BIN)/python scripts/secret_scan.py $$(git ls-files)
	$(BIN)/mypy $(SRC_DIRS)

typecheck: install ## mypy --strict on libs and services/*/src
	$(BIN)/mypy $(SRC_DIRS)

check: lint proto-check ## Lint (incl. types) and contracts

unit: install ## Unit and component tests (no whole-stack e2e)
	$(BIN)/pytest -m "not e2e" -q

e2e: install ## End-to-end tests: the whole stack started by the launcher
	$(BIN)/pytest -m e2e -q tests-e2e

test: install check ## Everything: lint, types, proto-check, unit, component and e2e tests
	$(BIN)/pytest -q

run: install ## Start Redis, the NHS sandbox and every service (Ctrl-C stops all)
	$(BIN)/python -m xcagw_devstack up

sandbox: install ## Run the NHS sandbox alone
	$(BIN)/python -m xcagw_devstack sandbox

bench: install ## Benchmarks: converter, SOAP parse/serialise, Redis store, throughput vs bare FastAPI, profile
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq wrk >/dev/null 2>&1; } \
		|| echo "bench: wrk not installed: the Python load generator is used and caps the bare baseline"
	@# The converter as the image ships it: conversion modules compiled with mypyc (a failed build
	@# leaves the Python source there, and the benchmark says which build it measured).
	@mkdir -p services/ccda-converter/build
	$(BIN)/python services/ccda-converter/build_mypyc.py >services/ccda-converter/build/mypyc.log 2>&1 \
		|| echo "bench: mypyc build failed (services/ccda-converter/build/mypyc.log): the converter is measured as Python source"
	PYTHONPATH=services/ccda-converter/build/mypyc $(BIN)/python services/ccda-converter/benchmarks/bench_convert.py
	$(BIN)/python benchmarks/bench_soap.py
	$(BIN)/python benchmarks/bench_store.py
	$(BIN)/python benchmarks/bench_throughput.py --xua signed
	PYTHONPATH=services/ccda-converter/build/mypyc $(BIN)/python benchmarks/bench_capacity.py
	$(BIN)/python benchmarks/profile_soap_edge.py --pyinstrument

fuzz: install ## Long soap-edge fuzz campaign (>= 100k inputs; atheris when installed)
	$(BIN)/python scripts/fuzz_long.py --runs 100000

load: install ## Locust partner load for 5 min on a fresh stack; stats CSV in out/load/
	$(BIN)/python tests-e2e/load/load_runner.py --seconds 300 --users 20 --out out/load

deploy-check: install ## Deploy checks only: compose, k8s, Prometheus rules, dashboards, Dockerfiles
	$(BIN)/pytest -q tests-deploy

compose-test: install ## Build images with podman and run the ITI-47/38/39 flow on docker-compose (root)
	./deploy/compose-test.sh

docs: install ## Regenerate docs/reference/ from the code and build the site (mkdocs --strict)
	$(BIN)/python scripts/gen_docs.py && $(BIN)/mkdocs build --strict

docs-examples: install ## Re-capture the partner pages' example messages from a real local stack
	$(BIN)/python scripts/docs_examples.py

demo: install ## ITI-47 -> ITI-38 -> ITI-39 against the running `make run` stack (NHS=9000000009)
	$(BIN)/xcagw demo --nhs-number $${NHS:-9000000009} --out out

clean: ## Remove the venv, caches and local stack state
	rm -rf $(VENV) .devstack .pytest_cache .mypy_cache .ruff_cache
