# Parley: `make up` runs the whole stack and its services; `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BROWSER := tests/browser
CHROMIUM ?= /usr/bin/chromium

.PHONY: up down test lint venv status browser-deps

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

lint: $(STAMP)
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/mypy domain commands infra streams projections queries parley bench client tests
	@$(BIN)/lint-imports --no-logo
