# Two commands do everything on a fresh machine (Python 3.11): `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-loop test lint bench clean

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

test: $(STAMP)
	$(BIN)/ruff check motex_stream tests benchmarks services
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
