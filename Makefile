# Two commands on a fresh machine: `make dev` (set up and run the embedded stack) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
BUF_VERSION := 1.75.0
BUF := .tools/node_modules/.bin/buf
STAMP := $(VENV)/.installed
# The contract as last released: `buf breaking` (in lint) fails on any incompatible change since.
RELEASE_IMAGE := protos/release-image.binpb

.PHONY: dev test lint protos release-image install clean

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

## Regenerate the Python modules from protos/ (checked in; tests fail when they are stale),
## for the server and for the client library in clients/python.
protos: $(STAMP)
	$(BIN)/python protos/generate.py
	$(BIN)/python protos/generate.py --client

## At a release: record the protos as released, the baseline for `buf breaking`.
release-image: $(BUF)
	$(BUF) build --exclude-source-info -o $(RELEASE_IMAGE)

lint: $(STAMP) $(BUF)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BUF) lint
	$(BUF) breaking --against $(RELEASE_IMAGE)
	$(BIN)/llm-gateway policy check policy/examples/health-region
	$(BIN)/llm-gateway check-config --config deploy/gateway.yaml

## Lint, type checks, proto lint, then the whole test suite.
test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .tools .mypy_cache .ruff_cache .pytest_cache
