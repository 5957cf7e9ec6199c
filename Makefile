# Two commands on a fresh machine: `make dev` (set up and run the embedded stack) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
BUF_VERSION := 1.75.0
BUF := .tools/node_modules/.bin/buf
STAMP := $(VENV)/.installed
# The contract as last released: `buf breaking` (in lint) fails on any incompatible change since.
RELEASE_IMAGE := protos/release-image.binpb

.PHONY: dev test lint protos release-image install clean check-prereqs lock k8s-config docs

# Pinned versions with hashes (requirements/dev.lock), then the project itself without resolving.
$(STAMP): pyproject.toml requirements/dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
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

## Regenerate docs/configuration.md from the settings declarations (a test fails when stale).
docs: $(STAMP)
	$(BIN)/python -m common.settings_doc > docs/configuration.md

lint: $(STAMP) $(BUF)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BUF) lint
	$(BUF) breaking --against $(RELEASE_IMAGE)
	$(BIN)/llm-gateway policy check --require-register policy/examples/health-region
	$(BIN)/llm-gateway check-config --config deploy/gateway.yaml

## Stop at once, with the install command, when a server the tests start is missing.
check-prereqs:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	{ command -v initdb || ls /usr/lib/postgresql/*/bin/initdb; } >/dev/null 2>&1 \
		|| missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
		echo "make test needs:$$missing (the tests start their own servers). Install with:"; \
		echo "  sudo apt-get install redis-server postgresql"; \
		echo "and put PostgreSQL's bin directory on PATH if initdb is not:"; \
		echo "  export PATH=\"\$$PATH:\$$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)\""; \
		exit 1; \
	fi

## Lint, type checks, proto lint, then the whole test suite.
test: check-prereqs lint
	$(BIN)/pytest

## Re-pin every dependency (hashes included) after editing pyproject.toml; needs PyPI.
UV_COMPILE = $(BIN)/uv pip compile pyproject.toml --quiet --generate-hashes --universal \
	--python-version 3.11 --custom-compile-command "make lock"
lock: $(STAMP)
	$(BIN)/python -m pip install --quiet uv
	$(UV_COMPILE) -o requirements/runtime.lock
	$(UV_COMPILE) --extra dev -c requirements/runtime.lock -o requirements/dev.lock

## Copy deploy/gateway.yaml and the example policy into the Kubernetes overlay (a test checks it).
K8S_OVERLAY := deploy/k8s/overlays/health-region
k8s-config:
	cp deploy/gateway.yaml $(K8S_OVERLAY)/gateway.yaml
	rm -f $(K8S_OVERLAY)/policy/*.yaml
	cp policy/examples/health-region/*.yaml $(K8S_OVERLAY)/policy/

clean:
	rm -rf $(VENV) .tools .mypy_cache .ruff_cache .pytest_cache
