"""Rank 0 of ``benchmarks/throughput.py``: ``python -m evo_engine`` with its coordinator loop timed.

Run as the first program of an MPMD launch (``mpiexec -n 1 python _rank0_cpu.py ARGS : -n N
python -m evo_engine ARGS``): it wraps ``Coordinator.run`` and writes, to the file named by
``EVO_BENCH_RANK0_OUT``, one JSON object: the evaluations the loop finished, and rank 0's CPU
seconds (user + system, every thread of the process: ``time.process_time``) and wall seconds
in the loop. CPU per evaluation moves much less with the machine's load than the wall-clock
rate does.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import time

from evo_engine.job import coordinator


def main() -> None:
    out = os.environ["EVO_BENCH_RANK0_OUT"]
    real = coordinator.Coordinator.run

    def timed(self: coordinator.Coordinator) -> str:
        n0 = self.engine.n_finished
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            return real(self)
        finally:
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            with open(out, "w", encoding="utf-8") as fh:
                json.dump({"evaluations": self.engine.n_finished - n0, "cpu_s": cpu,
                           "wall_s": wall}, fh)

    coordinator.Coordinator.run = timed  # type: ignore[method-assign]
    sys.argv = ["evo_engine", *sys.argv[1:]]
    runpy.run_module("evo_engine", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
