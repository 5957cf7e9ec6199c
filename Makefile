# Two commands on a fresh machine: `make dev` (set up and run the embedded stack) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
BUF_VERSION := 1.75.0
BUF := .tools/node_modules/.bin/buf
STAMP := $(VENV)/.installed

.PHONY: dev test lint protos install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

$(BUF):
	npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION)

## Set up .venv and run gateway + simulated worker + audit store on 127.0.0.1:50051.
dev: $(STAMP)
	$(BIN)/llm-gateway dev

## Regenerate the Python modules from protos/ (checked in; tests fail when they are stale).
protos: $(STAMP)
	$(BIN)/python protos/generate.py

lint: $(STAMP) $(BUF)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BUF) lint
	$(BIN)/llm-gateway policy check policy/examples/health-region
	$(BIN)/llm-gateway check-config --config deploy/gateway.yaml

## Lint, type checks, proto lint, then the whole test suite.
test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .tools .mypy_cache .ruff_cache .pytest_cache
