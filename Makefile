# The two commands (see README):
#   make run    set up and start the BinAudit dashboard on the embedded default
#   make test   set up and run the whole test suite (browser tests included)
# For development: make test-fast (the suite without tests marked slow), make flake-check, make lint.

SHELL := bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# pip on some machines warns about every local index it cannot use; keep the log readable. The braces keep grep's
# "nothing left to print" from hiding pip's own exit status (pipefail): a failed install stops make here.
PIP_FILTER := { grep -v -e "is ignored: it is neither a file nor a directory" || true; }

# worksteal: idle workers take queued tests from busy ones, so one long test near the end does not leave a core idle
# (loadgroup cannot group on pytest 9.2: pytest-xdist issue #1386)
PYTEST := $(BIN)/python -m pytest -n 2 --dist worksteal

.PHONY: run test test-fast flake-check setup setup-dev chromium postgresql java container-env lint bench demo-data

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime-installed: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt 2>&1 | $(PIP_FILTER)
	touch $@

$(VENV)/.dev-installed: requirements-dev.txt $(VENV)/.runtime-installed
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements-dev.txt 2>&1 | $(PIP_FILTER)
	touch $@

setup: $(VENV)/.runtime-installed
setup-dev: $(VENV)/.dev-installed

# Debian's Chromium for the browser tests (Playwright cannot download its own browser here).
chromium:
	@command -v chromium >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }
	@chromium --version

# Debian's PostgreSQL server binaries (15 or newer) for the tests, which start their own throwaway server.
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql >/dev/null; }
	@ls -d /usr/lib/postgresql/*/bin | tail -1

# A Java runtime for TorchServe (AWS's PyTorch inference toolkit serves models with it in the contract tests).
java:
	@command -v java >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq openjdk-17-jre-headless >/dev/null; }
	@java -version 2>&1 | head -1

# The Python environment of AWS's PyTorch containers (tests/container_env.py): built once, then reused.
container-env: setup-dev
	$(BIN)/python -m tests.container_env 2>&1 | $(PIP_FILTER)

run: setup
	$(BIN)/python -m app.launch

test: setup-dev chromium postgresql java container-env
	$(PYTEST)

# the inner loop: everything but the tests marked slow (training runs, tuning, DDP, browser, the 600-bin acceptance)
test-fast: setup-dev postgresql
	$(PYTEST) -m "not slow"

# the timing-sensitive tests 10 times in a row, the whole suite 3 times; stops at the first failure (tests/flake_check.py)
flake-check: setup-dev chromium postgresql java container-env
	$(BIN)/python -m tests.flake_check

lint: setup-dev
	$(BIN)/ruff check .

bench: setup-dev
	$(BIN)/python -m bench --help
