# torrust-hybrid-tls — developer entry points. Interfaces other tools rely on:
#   make test                 the unit tier (seconds); real-tool, e2e and engine tests skip with the reason
#   make check                lint + types + every test, real tools required (REQUIRE_REAL_TOOLS=1)
#   make e2e [E2E_STACKS=...] the e2e tier alone, per stack (root; real dockerd; tests/e2e/README.md)
#   make plan STACK=dev       offline plan under mocks -> build/plan/<stack>/
#   make plan-diff BASE=<ref> [STACK=dev] [PLAN_DIFF_ARGS=--json]   Markdown (or JSON) review of a change
#   make docs                 regenerate Pulumi.yaml `config:` and the README configuration reference
#   make doctor STACK=<stack> [OUTPUTS=file] [DOCTOR_ARGS=--json]   check the live deployment from outside
STACK ?= dev
BASE ?= origin/main
VENV ?= venv
PYTHON ?= $(VENV)/bin/python
# Every target runs in $(VENV), created on first use and re-installed whenever a requirements file
# is newer than the stamp. The interpreter that creates it is the first of these that is Python
# 3.11 or newer (`python3` alone may be older); override with BOOTSTRAP_PYTHON=/path/to/python3.11.
PYTHON_CANDIDATES ?= python3.13 python3.12 python3.11 python3
IS_311 = -c 'import sys; sys.exit(sys.version_info < (3, 11))'
BOOTSTRAP_PYTHON ?= $(firstword $(foreach candidate,$(PYTHON_CANDIDATES),$(shell \
	command -v $(candidate) >/dev/null 2>&1 && $(candidate) $(IS_311) 2>/dev/null && echo $(candidate))))
VENV_STAMP := $(VENV)/.requirements.stamp

# `$(call need,TOOL,HOW TO GET IT)`: stop with what is missing and how to install it.
need = @command -v $(1) >/dev/null 2>&1 || { echo 'error: make $@ needs $(1) on PATH' >&2; \
	echo '  fix: $(2)' >&2; exit 1; }

.PHONY: venv test check lint typecheck plan plan-diff doctor e2e actionlint docs clean

venv: $(VENV_STAMP)

$(VENV_STAMP): requirements.txt requirements-dev.txt
	@if [ ! -x $(PYTHON) ]; then \
	  if [ -z "$(BOOTSTRAP_PYTHON)" ]; then \
	    echo "error: Python 3.11 or newer is needed to create $(VENV) (tried: $(PYTHON_CANDIDATES))." >&2; \
	    echo "  fix: install python3.11 (Debian/Ubuntu: apt-get install python3 python3-venv), or" \
	      "run make BOOTSTRAP_PYTHON=/path/to/python3.11 ..." >&2; \
	    exit 1; \
	  fi; \
	  echo "creating $(VENV) with $(BOOTSTRAP_PYTHON)"; \
	  $(BOOTSTRAP_PYTHON) -m venv $(VENV) || exit 1; \
	fi
	@$(PYTHON) $(IS_311) || { echo "error: $(VENV) runs Python older than 3.11; remove it (rm -r $(VENV)) and run make again" >&2; exit 1; }
	$(PYTHON) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	@touch $@

# The unit tier: seconds. Two workers (pytest-xdist), one test file per worker; the real-tool,
# e2e and engine tiers skip with their reason (tests/conftest.py) and run in `make check`.
test: $(VENV_STAMP)
	$(PYTHON) -m pytest -q -n auto --dist loadfile

lint: $(VENV_STAMP)
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

typecheck: $(VENV_STAMP)
	$(PYTHON) -m mypy

actionlint: $(VENV_STAMP)
	$(PYTHON) -m tools.run_actionlint

# The e2e tier deploys each of these stacks in turn: the pingoo edge (dev) and the nginx edge.
E2E_STACKS ?= dev nginx-example

check: lint typecheck actionlint
	REQUIRE_REAL_TOOLS=1 $(PYTHON) -m pytest -q
	@# The run above includes the e2e tier for `dev`; the other stacks' e2e sessions follow.
	@for stack in $(filter-out dev,$(E2E_STACKS)); do \
	  echo "e2e tier, stack $$stack"; \
	  E2E=1 REQUIRE_REAL_TOOLS=1 E2E_STACK=$$stack $(PYTHON) -m pytest -q tests/e2e || exit 1; \
	done

e2e: $(VENV_STAMP)
	@[ "$$(id -u)" -eq 0 ] || { echo "error: make e2e needs root (network namespaces, its own dockerd)" >&2; \
	  echo "  fix: sudo make e2e   (the tools it needs: .ci/run installs them)" >&2; exit 1; }
	@for stack in $(E2E_STACKS); do \
	  echo "e2e tier, stack $$stack"; \
	  E2E=1 REQUIRE_REAL_TOOLS=1 E2E_STACK=$$stack $(PYTHON) -m pytest -q -s tests/e2e || exit 1; \
	done

plan: $(VENV_STAMP)
	$(PYTHON) -m tools.plan --stack $(STACK)

# Regenerate Pulumi.yaml's config block and the README's configuration reference from core/settings.py.
docs: $(VENV_STAMP)
	$(PYTHON) -m tools.config_reference

plan-diff: $(VENV_STAMP)
	$(call need,git,install git (Debian/Ubuntu: apt-get install git))
	$(PYTHON) -m tools.plan_diff --base $(BASE) --stack $(STACK) $(PLAN_DIFF_ARGS)

# Reads `pulumi stack output --json --show-secrets --stack $(STACK)`, or the saved OUTPUTS file.
doctor: $(VENV_STAMP)
	$(if $(OUTPUTS),,$(call need,pulumi,install the Pulumi CLI (https://www.pulumi.com/docs/iac/download-install/) or pass OUTPUTS=file saved from: pulumi stack output --json --show-secrets))
	$(PYTHON) -m tools.doctor $(if $(OUTPUTS),--outputs $(OUTPUTS),--stack $(STACK)) $(DOCTOR_ARGS)

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
