# Cascade developer entry points. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv with both distributions (editable) and the dev tools

$(STAMP): client/pyproject.toml server/pyproject.toml pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ./client -e ./server --group dev
	touch $(STAMP)

serve: install ## start embedded Postgres, load demo data if empty, run the four servers (Ctrl-C stops)
	$(BIN)/cascade demo

# Each group runs in its own pytest process: tests/db trains TensorFlow models and
# tests/rpc runs gRPC servers in-process, and a rare interpreter crash (SIGSEGV while
# garbage-collecting) was only ever seen in processes that had run both.
TEST_GROUPS ?= tests/unit tests/properties tests/db tests/rpc tests/faults tests/e2e

# PYTEST_DEBUG_TEMPROOT: this run's temporary directories (and embedded Postgres) live
# apart from any other run's, which pytest would otherwise prune while in use.
test: install ## run the whole test suite (TEST_GROUPS="tests/rpc" for a part)
	@set -e; root=$$(mktemp -d /tmp/cascade-tests-XXXXXX); \
	for group in $(TEST_GROUPS); do \
		echo "== pytest $$group"; PYTEST_DEBUG_TEMPROOT=$$root $(BIN)/pytest $$group; \
	done; rm -rf $$root

protos: install ## regenerate client/src/cascade from protos/
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python protos/generate.py

protos-check: protos ## fail if the committed generated code differs from a fresh generation
	git diff --exit-code --stat -- client/src/cascade
	test -z "$$(git status --porcelain -- client/src/cascade)"

proto-lint: install ## buf lint (STANDARD) and format check
	$(BIN)/buf lint
	$(BIN)/buf format --diff --exit-code

lint: install proto-lint ## ruff (lint + format check) and buf
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: install ## format Python and protos
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
	$(BIN)/buf format -w

typecheck: install ## mypy --strict on hand-written code
	$(BIN)/mypy client/src/cascade_client server/src/cascade_server migrations tests bench protos/generate.py

bench: install ## load and latency: every stage and Recommend under open-loop load, cold start, swap, index (not part of the tests)
	$(BIN)/python bench/load.py

soak: install ## mixed faults under load for 3 minutes (kills, Postgres restart, release swaps): served, failed, degraded, events acknowledged vs stored
	$(BIN)/python bench/soak.py

bench-quality: install ## ML-1M quality end to end through the API (needs ../shared/datasets)
	$(BIN)/python bench/quality.py

bench-sources: install ## latency of each retrieval candidate source on the demo data
	$(BIN)/python bench/sources.py

bench-instructions: install ## instructions each server executes per request, under callgrind (needs valgrind; HOME_DIR=dir reuses a trained home)
	$(BIN)/python bench/instructions.py $(if $(HOME_DIR),--home $(HOME_DIR))

bench-cputime: install ## CPU time per request, two versions side by side (BASELINE=dir and/or BASELINE_ENV=NAME=VALUE; HOME_DIR=dir reuses a trained home)
	$(BIN)/python bench/cputime.py $(if $(HOME_DIR),--home $(HOME_DIR)) $(if $(BASELINE),--baseline $(BASELINE)) $(if $(BASELINE_ENV),--baseline-env $(BASELINE_ENV))

bench-policy: install ## the blending policy on and off through Recommend (demo data, then ML-1M if present)
	$(BIN)/python bench/policy.py --data demo
	$(BIN)/python bench/policy.py --data ml-1m

check: lint typecheck protos-check test ## everything CI runs

clean: ## remove the virtualenv (keeps .cascade state)
	rm -rf $(VENV)

.PHONY: help install serve test protos protos-check proto-lint lint fmt typecheck bench bench-quality bench-sources bench-policy bench-instructions bench-cputime soak check clean
