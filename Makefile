# Two commands do everything on a fresh machine (Python 3.11): `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-loop test test-fast test-slow lint bench clean

# The pinned tree is installed by uv (itself pinned in constraints.txt), bootstrapped with the
# venv's own pip: from scratch it took a quarter to a third of pip's wall time on the 2-core
# machine (73-160 s against 297-755 s, under load) and installs the same versions (`pip
# freeze` checked against constraints.txt): parallel downloads and unpacking, no bytecode
# compiled up front. uv reads no pip configuration, so the wheel folders pip is told to look in
# (PIP_FIND_LINKS, else pip's config) are handed on: the CPU-only torch wheel lies in one.
comma := ,
space := $(subst ,, )
pip_find_links = $(or $(PIP_FIND_LINKS),$(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null))
export UV_FIND_LINKS ?= $(subst $(space),$(comma),$(strip $(pip_find_links)))

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or: make PYTHON=python3 ...)"; exit 1; }
	@start=$$(date +%s); \
	set -e; \
	test -d $(VENV) || $(PYTHON) -m venv $(VENV); \
	$(BIN)/pip install --quiet -c constraints.txt uv; \
	$(BIN)/uv pip install --quiet --python $(BIN)/python -c constraints.txt -e ".[dev]"; \
	echo "== install: $$(( $$(date +%s) - start )) s wall =="
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/motex-stream demo

# the closed loop (docs/closed-loop.md): redis + Queue Server + service + agent; needs redis-server
demo-loop: $(STAMP)
	$(BIN)/python services/demo_loop.py

# The fast suite (`-m "not slow"`) is the one to run while working; `make test` (what CI runs)
# runs it and then the slow end-to-end and paper tests as a second pytest session, each
# printing its wall time, so every CI log shows both numbers. Both run even if the first
# fails (one CI run reports every failure); the exit status fails if either did.
# Each suite runs on TEST_WORKERS pytest-xdist worker processes: on 2 cores one worker's waits
# (servers starting, subprocesses, sockets) are filled by the other's computing. Every test
# module stays whole in one worker (--dist loadfile: its module fixtures and the paper tests'
# shared analyses made once); xdist hands out the modules with the most tests first, so the
# paper module (26 slow tests, minutes) starts at once. TEST_WORKERS=0: serially.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)
timed = start=$$(date +%s); $(PYTEST) $(2); rc=$$?; \
	echo "== $(1): $$(( $$(date +%s) - start )) s wall (exit $$rc) =="

lint: $(STAMP)
	$(BIN)/ruff check motex_stream tests benchmarks services

test-fast: lint
	@$(call timed,fast suite,-m "not slow"); exit $$rc

test-slow: lint
	@$(call timed,slow suite,-m slow); exit $$rc

test: lint
	@$(call timed,fast suite,-m "not slow"); fast=$$rc; \
	$(call timed,slow suite,-m slow); [ $$fast -eq 0 ] && [ $$rc -eq 0 ]

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
