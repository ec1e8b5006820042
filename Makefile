# Nova: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STACK := $(PYTHON) deploy/local/stack.py
PACKAGES := libs/events libs/platform $(wildcard services/*)
PACKAGE_NAMES := $(foreach p,$(PACKAGES),$(shell sed -n 's/^name = "\(.*\)"/\1/p' $(p)/pyproject.toml))
STAMP := $(VENV)/.installed
# `USER` is also the login name in most shells: only a USER given on the make
# command line names the token's user.
TOKEN_USER := $(if $(filter command line,$(origin USER)),$(USER),00000000-0000-4000-8000-000000000001)
SCOPES ?= audio:read audio:write

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): requirements/lock.txt $(addsuffix /pyproject.toml,$(PACKAGES))
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements/lock.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation $(addprefix -e ./,$(PACKAGES))
	@touch $@

.PHONY: install
install: $(STAMP) ## Create .venv from the hash-checked lock
	@$(STACK) install

.PHONY: lock
lock: $(STAMP) ## Re-resolve requirements/lock.txt (exact versions, hashes, no URLs)
	$(BIN)/uv pip compile requirements/workspace.in --generate-hashes \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		$(addprefix --no-emit-package ,$(PACKAGE_NAMES)) -o requirements/lock.txt

.PHONY: schemas
schemas: $(STAMP) ## Re-export the event JSON Schemas into libs/events
	$(BIN)/python -m nova_events.schemas

.PHONY: lint
lint: $(STAMP) ## ruff format check, ruff lint, mypy strict
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

.PHONY: fmt
fmt: $(STAMP) ## Format and auto-fix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

.PHONY: test
test: install lint ## Everything CI runs: lint, types, the whole pytest suite
	$(BIN)/pytest

.PHONY: test-unit
test-unit: $(STAMP) ## Unit tests only (no backends)
	$(BIN)/pytest -m "not integration and not e2e"

.PHONY: stack-start stack-stop stack-status
stack-start: install ## Start Kafka, OpenSearch, moto and Redis as local processes
	@$(STACK) start
stack-stop: ## Stop the local stack
	@$(STACK) stop
stack-status: ## Show the local stack
	@$(STACK) status

.PHONY: run
run: install ## Start the stack and every service; Ctrl-C stops it all
	@$(BIN)/python deploy/local/run.py

.PHONY: token
token: $(STAMP) ## Print a development JWT (USER=<uuid> SCOPES="audio:read audio:write")
	@$(BIN)/python -m nova_platform.auth.dev_token --user "$(TOKEN_USER)" --scopes "$(SCOPES)"
