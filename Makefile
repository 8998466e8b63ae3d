# Crossbook: `make up` runs everything, `make test` runs every test.
# Both install what is missing first (venv, Python packages, pinned npm tools) and are
# fast when it is already there: installs are keyed on pyproject.toml and package-lock.json.

SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
BIN := $(VENV)/bin
PY_STAMP := $(VENV)/.stamp-install
NPM_STAMP := node_modules/.stamp-install
KEYS_STAMP := var/zk-keys/.stamp-install
NATIVE_STAMP := var/native.json
NATIVE_SRC := $(wildcard scripts/build_native.py app/domain/native.py app/domain/router.py app/domain/amm/*.py app/domain/routing/*.py)
PYTEST_ARGS ?=

.PHONY: help install up test test-unit bench lint contracts clean

help:
	@echo "make up     install what is missing, start Redis, the 3-chain devnet and the services (Ctrl-C stops all)"
	@echo "make test   install what is missing, run the whole test suite"
	@echo "make bench  run the benchmarks (JSON)"
	@echo "make lint   ruff + mypy"

install: $(PY_STAMP) $(NPM_STAMP) $(KEYS_STAMP) $(NATIVE_STAMP)

# The router and pool math compiled with mypyc (about a minute, once per change of their
# sources); app.domain.native runs the sources instead whenever this stamp is stale. A
# failed build is not fatal: the same code runs from its sources, slower, and the next
# make tries again.
$(NATIVE_STAMP): $(PY_STAMP) $(NATIVE_SRC)
	@$(BIN)/python -m scripts.build_native || echo "warning: the router runs uncompiled (slower)"

# The devnet's Groth16 setup for the batch circuits (fresh randomness, discarded) and the
# verifiers generated from it, cached by circuit hash: done here, with progress, so the
# first `devnet up` after install is as fast as every other.
$(KEYS_STAMP): $(PY_STAMP) $(NPM_STAMP) $(wildcard settlement/zk/*.py)
	@echo "preparing the batch circuits' keys and verifiers (first time: about a minute)"
	@$(BIN)/python -c "from scripts.devnet.deploy_settlement import batch_verifier_bytecode as b; b(progress=lambda m: print('  ' + m, flush=True))" || { echo "error: key setup failed (see above)"; exit 1; }
	@mkdir -p $(dir $@) && touch $@

$(PY_STAMP): pyproject.toml
	@PY=$$(scripts/bootstrap/find_python.sh) || exit 1; \
	if [ ! -x $(BIN)/python ]; then echo "creating $(VENV) with $$PY"; "$$PY" -m venv $(VENV) || { echo "error: could not create a venv (install python3-venv)"; exit 1; }; fi
	@echo "installing Python packages (pyproject.toml)"
	@$(BIN)/python -m pip install -q --upgrade pip >/dev/null || { echo "error: pip could not reach the package index"; exit 1; }
	@$(BIN)/python -m pip install -q -e '.[dev]' || { echo "error: pip install failed (see above)"; exit 1; }
	@touch $@

$(NPM_STAMP): package.json package-lock.json
	@command -v npm >/dev/null || { echo "error: npm (Node.js) is required for the pinned anvil and solc"; exit 1; }
	@echo "installing pinned npm tools (package-lock.json)"
	@# `npm install`, not `npm ci`: the lock pins every version, but it can only list the
	@# Anvil platform binaries the registry serves; `npm ci` rejects a lock without all of
	@# @foundry-rs/anvil's optional platform packages, `npm install` resolves this one.
	@npm install --no-audit --no-fund --loglevel=error || { echo "error: npm install failed (see above)"; exit 1; }
	@test -n "$$(ls node_modules/@foundry-rs/anvil-*/bin/anvil 2>/dev/null)" || { echo "error: no anvil binary for this platform in node_modules/@foundry-rs"; exit 1; }
	@touch $@

# Installs run two at a time (the Python packages and the npm tools, then the router's
# compilation and the circuits' keys): on a fresh clone the compilation and the key setup
# each take about a minute.
up:
	@$(MAKE) --no-print-directory -j2 install
	@$(BIN)/crossbook up

# Two pytest workers, whole files each: most integration tests wait on chain windows,
# block times and finality depth, so two overlap well on two cores (measured: 11.6 min
# against 15.6 serially). Each worker starts its own session devnet and Redis. Files go
# out in path order (`--no-loadscope-reorder`; xdist's default sends files with the most
# tests first): tests/e2e, with the 200-order run (4-6 min, one test), starts at once on
# one worker while the other takes the rest, so the longest test cannot start late and
# set the end (by the default order it started 7 min in). The 25 slowest tests are
# listed at the end, to keep the suite within its 15-minute budget.
test:
	@$(MAKE) --no-print-directory -j2 install
	@$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder --durations=25 $(PYTEST_ARGS)

test-unit: install
	@$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

# The JSON alone on stdout (`make bench > bench.json`): what install prints goes to stderr.
bench:
	@$(MAKE) --no-print-directory install >&2
	@$(BIN)/crossbook bench

lint: install
	@$(BIN)/ruff check .
	@$(BIN)/mypy

contracts: install
	@$(BIN)/python -m scripts.build_contracts

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
