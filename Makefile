# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv if missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
CONSTRAINTS := requirements/constraints.txt
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q -c $(CONSTRAINTS)

.PHONY: demo test lint bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-install when the dependency files change.
$(VENV)/.installed: $(BIN)/python pyproject.toml $(CONSTRAINTS)
	$(PIP) -e ".[dev,ray,serve,ray-serve]"
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(PIP) -e ".[dev,ray,serve,ray-serve,bench]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/rlops quickstart

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy

test: $(VENV)/.installed lint
	$(BIN)/python -m pytest

bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/env_throughput.py
	$(BIN)/python benchmarks/ppo_vs_sb3.py
	command -v wrk >/dev/null || apt-get install -y wrk || \
		echo "no wrk: benchmarks/serving.py falls back to its asyncio load client"
	$(BIN)/python benchmarks/serving.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
