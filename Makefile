# Parley: `make up` runs the whole stack and its services; `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up down test lint venv status

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

test: $(STAMP)
	@$(BIN)/parley stack up
	@$(BIN)/python -m pytest

lint: $(STAMP)
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/mypy domain commands infra streams projections queries
