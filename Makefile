# `make run` and `make test` work from a fresh clone: both create .venv first (scripts/setup.sh).
PY := .venv/bin/python
SCENARIO ?= scenarios/advection_lr.py
RUN_DIR ?= runs/$(basename $(notdir $(SCENARIO)))

.PHONY: setup run test lint clean
setup:
	@bash scripts/setup.sh

# Never deletes a run: continues it (--resume) when RUN_DIR holds one; FORCE=1 starts over.
run: setup
	$(PY) -m evo_engine run $(SCENARIO) --run-dir $(RUN_DIR) \
		$(if $(FORCE),--force,$(if $(wildcard $(RUN_DIR)/run.zarr),--resume,))

test: setup
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check evo_engine tests benchmarks scenarios

clean:
	rm -rf .venv runs .pytest_cache
