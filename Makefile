# torrust-hybrid-tls — developer entry points. Interfaces other tools rely on:
#   make test                 Python-only suite; real-tool tests skip with a reason when a tool is missing
#   make check                lint + types + every test, real tools required (REQUIRE_REAL_TOOLS=1)
#   make e2e                  the e2e tier alone (root; real dockerd; tests/e2e/README.md)
#   make plan STACK=dev       offline plan under mocks -> build/plan/<stack>/
#   make plan-diff BASE=<ref> [STACK=dev] [PLAN_DIFF_ARGS=--json]   Markdown (or JSON) review of a change
STACK ?= dev
BASE ?= origin/main
VENV ?= venv
PYTHON ?= $(shell test -x $(VENV)/bin/python && echo $(VENV)/bin/python || echo python3)

.PHONY: venv test check e2e lint typecheck plan plan-diff actionlint clean

venv:
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements-dev.txt

test:
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

typecheck:
	$(PYTHON) -m mypy

actionlint:
	$(PYTHON) -m tools.run_actionlint

check: lint typecheck actionlint
	REQUIRE_REAL_TOOLS=1 $(PYTHON) -m pytest -q

e2e:
	E2E=1 REQUIRE_REAL_TOOLS=1 $(PYTHON) -m pytest -q -s tests/e2e

plan:
	$(PYTHON) -m tools.plan --stack $(STACK)

plan-diff:
	$(PYTHON) -m tools.plan_diff --base $(BASE) --stack $(STACK) $(PLAN_DIFF_ARGS)

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
