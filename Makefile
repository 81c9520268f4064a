# `make demo`: set up .venv and run the default job on the local backend, waiting for its result.
# `make test`: set up .venv and run the fast test tier (no training); `make test-all` runs every tier.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1

.PHONY: setup setup-ray demo test test-slow test-all lint bench

setup: $(VENV)/.installed

setup-ray: $(VENV)/.installed-ray

# torch goes in first and pinned: this machine keeps its CPU wheel on disk, while a bare `torch` requirement
# would fetch a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[local,dev]'
	touch $@

# the slow tier runs the Ray executor on a local multi-node Ray cluster: the ray extra, on top of setup
$(VENV)/.installed-ray: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[local,dev,ray]'
	touch $@

demo: setup
	$(BIN)/rftlab launch wait=true

test: setup
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/pytest -q -m "not slow"

# RFTLAB_REQUIRE_RAY=1: a missing Ray stops the run instead of skipping the Ray executor's tests
test-slow: setup-ray
	RFTLAB_REQUIRE_RAY=1 $(BIN)/pytest -q -m slow

test-all: test test-slow

lint: setup
	$(BIN)/ruff check --fix src tests bench scripts
	$(BIN)/ruff format src tests bench scripts

bench: setup
	$(BIN)/pip install -q -e '.[local,dev,bench]'
	$(BIN)/python bench/launcher.py
	$(BIN)/python bench/engine_vs_trl.py
	$(BIN)/python bench/update_efficiency.py
	$(BIN)/python bench/evaluator_overlap.py
