# Parley: `make up` runs the whole stack and its services; `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BROWSER := tests/browser
CHROMIUM ?= /usr/bin/chromium

.PHONY: up down test test-unit lint venv status browser-deps

$(STAMP): pyproject.toml
	@echo "parley: creating the virtualenv and installing Parley with its pinned dependencies"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $(STAMP)

venv: $(STAMP)

up: $(STAMP)
	@$(BIN)/parley up

down: $(STAMP)
	@$(BIN)/parley down

status: $(STAMP)
	@$(BIN)/parley stack status

# The browser test's tools: Debian's chromium and playwright-core from the lockfile.
browser-deps: $(BROWSER)/node_modules/.installed
	@test -x $(CHROMIUM) || { \
	  echo "parley: installing Debian's chromium for the browser test"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q \
	    --no-install-recommends chromium fonts-dejavu-core; }

$(BROWSER)/node_modules/.installed: $(BROWSER)/package-lock.json
	@echo "parley: installing playwright-core for the browser test (npm ci)"
	@cd $(BROWSER) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

test: $(STAMP) browser-deps
	@$(BIN)/parley stack up
	@$(BIN)/python -m pytest

# The fast tier: the domain, the handlers and processor on in-memory stores, the bulk
# planner, the frame parser, pure projection code. No server: every address points at a
# closed port, so a test that reaches for one fails instead of passing by luck.
test-unit: $(STAMP)
	@PARLEY_MANAGED_SERVICES="" PARLEY_KAFKA_BOOTSTRAP=127.0.0.1:9 PARLEY_PG_PORT=9 \
	  PARLEY_REDIS_URL=redis://127.0.0.1:9/0 $(BIN)/python -m pytest -m unit -q -p no:cacheprovider

lint: $(STAMP)
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/mypy domain commands infra streams projections queries parley bench client tests
	@$(BIN)/lint-imports --no-logo
