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

# Four pytest-xdist workers on two cores: most of the suite's time is spent waiting (on
# subprocess and mpiexec runs, their start-up, sleeps and the disk), so four overlap the waits
# while two CPU-bound tests still get a core each; `worksteal` keeps the long tests from
# leaving a worker idle at the end. TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 4
test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal

lint: setup
	$(PY) -m ruff check evo_engine tests benchmarks scenarios

clean:
	rm -rf .venv runs .pytest_cache
