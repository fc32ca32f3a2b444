# `make run` and `make test` work from a fresh clone: both create .venv first (scripts/setup.sh).
PY := .venv/bin/python
SCENARIO ?= scenarios/advection_lr.py
RUN_DIR ?= runs/$(basename $(notdir $(SCENARIO)))

.PHONY: setup run test lint clean
setup:
	@bash scripts/setup.sh

run: setup
	$(PY) -m evo_engine run $(SCENARIO) --run-dir $(RUN_DIR) --force

test: setup
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check evo_engine tests benchmarks scenarios

clean:
	rm -rf .venv runs .pytest_cache
