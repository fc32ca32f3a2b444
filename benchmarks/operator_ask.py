"""An operator's cost per result on the coordinator at cluster scale: the Engine alone.

    python benchmarks/operator_ask.py [--workers 4096] [--results 8000] [--operator surrogate]
                                      [--handover 0]

Fills ``--workers`` simulated workers (every one with a task in flight), then tells the
oldest result and asks for the next task ``--results`` times (a 10-dimensional sphere, 8
islands of 32, no store, no transport, no clock): the time of each tell + ask is what the
coordinator spends on the search per result. ``--handover 0`` keeps the surrogate's model
on every island for the whole run (by default it hands islands to the ES once it stops
finding better results, which on this landscape happens within a few hundred results), so
the model's steady state, a 256-point archive and 64 believed evaluations, is what is timed.
``checkpoint.py --scale`` measures the same with the store, ASHA and the rest of a run.

Prints the median and p99 per operator of the issued tasks (the surrogate's ``fill:random``
space filling before its model starts, its model's asks, the ES's after a hand-over) and
one JSON line. A benchmark, not a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import collections
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import scipy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import code_version  # noqa: E402

from evo_engine.search.engine import Engine, EngineConfig  # noqa: E402
from evo_engine.search.messages import EvalState, Result  # noqa: E402
from evo_engine.space import Float, Space  # noqa: E402


def run(workers: int, results: int, operator: str, handover: int | None) -> dict:
    space = Space(**{f"x{i}": Float(0.0, 1.0) for i in range(10)})
    settings = {} if handover is None else {"handover": handover}
    engine = Engine(space, EngineConfig(max_evals=results + workers, islands=8,
                                        population_size=32, operator=operator, seed=0,
                                        operator_settings=settings))
    queue = collections.deque(engine.ask(w) for w in range(workers))
    seconds, kinds = [], []
    for i in range(results):
        task = queue.popleft()
        loss = float(sum((v - 0.3) ** 2 for v in task.params.values()))
        start = time.perf_counter()
        engine.tell(Result(uid=task.uid, worker=0, state=EvalState.COMPLETE,
                           fitness=loss))
        nxt = engine.ask(i % workers)
        seconds.append(time.perf_counter() - start)
        kinds.append(nxt.operator if nxt is not None else "none")
        queue.append(nxt)
    ms = np.array(seconds) * 1e3
    by = np.array(kinds)
    out = {"all": {"n": int(ms.size), "median_ms": float(np.median(ms)),
                   "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}}
    for op in sorted(set(kinds)):
        s = ms[by == op]
        out[op] = {"n": int(s.size), "median_ms": float(np.median(s)),
                   "p99_ms": float(np.percentile(s, 99)), "mean_ms": float(s.mean())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=4096)
    ap.add_argument("--results", type=int, default=8000)
    ap.add_argument("--operator", default="surrogate")
    ap.add_argument("--handover", type=int, default=0,
                    help="the surrogate's hand-over patience (0: never; -1: its default)")
    args = ap.parse_args()
    code = code_version(ROOT)  # before the runs: commits may land meanwhile
    handover = None if args.handover < 0 or args.operator != "surrogate" else args.handover
    started = time.time()
    table = run(args.workers, args.results, args.operator, handover)
    print(f"{'issued by':>12} {'n':>6} {'median ms':>10} {'p99 ms':>8} {'mean ms':>8}")
    for op, row in table.items():
        print(f"{op:>12} {row['n']:>6} {row['median_ms']:>10.3f} {row['p99_ms']:>8.3f} "
              f"{row['mean_ms']:>8.3f}")
    print(json.dumps({"benchmark": "operator_ask", "workers": args.workers,
                      "results": args.results, "operator": args.operator,
                      "handover": handover, "table": table, "wall_s": time.time() - started,
                      **code, "python": platform.python_version(),
                      "numpy": np.__version__, "scipy": scipy.__version__,
                      "machine": platform.node(), "argv": sys.argv[1:]}))


if __name__ == "__main__":
    main()
