"""Run under ``mpiexec -n 3``: does rank 0 stay responsive while one worker does not receive?

Rank 0 drives ``MPITransport`` directly (no CLI, no store). Rank 1 ("late", worker 0) does
not look at its messages until a flag file appears, as a rank does while the scheduler has
it off the core or while a rendezvous waits on its progress; rank 2 ("quick", worker 1)
behaves like an ordinary worker and its evaluation sends one intermediate report.

Rank 0 hands rank 1 a batch whose message is far above any eager limit, then a small task to
rank 2, and must answer rank 2's report and take its result while rank 1 still holds back.
With a blocking send rank 0 waits inside ``submit_batch`` until rank 1 receives, which is
only after rank 1 gives up waiting for the flag (``LATE_GIVES_UP_S``). Rank 0 prints one
JSON line: how long the quick worker's round trip took, and whether everything came back.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from mpi4py import MPI

from evo_engine.search.messages import EvalState, Result, Task, frozen_genome
from evo_engine.transports.base import WorkerSpec
from evo_engine.transports.mpi import (
    TAG_BYE,
    TAG_REPORT,
    TAG_RESULT,
    TAG_STOP,
    MPITransport,
    result_message,
    task_from_message,
)

LATE_GIVES_UP_S = 20.0
PAYLOAD = 2 << 20  # bytes in the batch's parameters: 2 MiB, far above any eager limit
BATCH = 4


def task(uid: int, blob: str = "") -> Task:
    return Task(uid=uid, island=0, genome=frozen_genome([]), params={"blob": blob}, seed=uid)


def coordinator(flag: Path) -> None:
    transport = MPITransport(WorkerSpec(reports=True), drain_timeout=LATE_GIVES_UP_S + 10)
    reports: list[tuple[int, int, float]] = []

    def decide(uid: int, step: int, value: float) -> bool:
        reports.append((uid, step, value))
        return False

    transport.on_report = decide
    blob = "x" * (PAYLOAD // BATCH)
    t0 = time.perf_counter()
    transport.submit_batch(0, [task(10 + i, blob) for i in range(BATCH)])
    submitted = time.perf_counter() - t0
    transport.submit(1, task(1))
    got: list[Result] = []
    deadline = time.monotonic() + 2 * LATE_GIVES_UP_S
    while not any(r.uid == 1 for r in got) and time.monotonic() < deadline:
        got.extend(transport.poll(0.01))
    quick = time.perf_counter() - t0
    flag.touch()
    while len(got) < BATCH + 1 and time.monotonic() < deadline:
        got.extend(transport.poll(0.01))
    transport.close()
    print(json.dumps({"submit_batch_s": submitted, "quick_round_trip_s": quick,
                      "uids": sorted(r.uid for r in got), "reports": reports,
                      "sizes": sorted(r.metrics.get("size", 0) for r in got)}), flush=True)


def late_worker(comm: MPI.Comm, flag: Path) -> None:
    deadline = time.monotonic() + LATE_GIVES_UP_S
    while not flag.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    batch = _recv(comm)
    results = [Result(uid=t.uid, worker=0, fitness=0.0, state=EvalState.COMPLETE,
                      metrics={"size": len(t.params["blob"])}, batch=batch[0][0])
               for t in map(task_from_message, batch)]
    comm.send([result_message(r) for r in results], dest=0, tag=TAG_RESULT)
    _await_stop(comm)


def quick_worker(comm: MPI.Comm) -> None:
    t = task_from_message(_recv(comm))
    comm.send((t.uid, 1, 0.5), dest=0, tag=TAG_REPORT)
    _recv(comm)  # the decision
    comm.send(result_message(Result(uid=t.uid, worker=1, fitness=0.0,
                                    state=EvalState.COMPLETE)), dest=0, tag=TAG_RESULT)
    _await_stop(comm)


def _recv(comm: MPI.Comm, status: MPI.Status | None = None) -> object:
    """A receive that sleeps between probes (MPICH's blocking receive spins a core)."""
    while (msg := comm.improbe(0, MPI.ANY_TAG, status)) is None:
        time.sleep(0.001)
    return msg.recv()


def _await_stop(comm: MPI.Comm) -> None:
    status = MPI.Status()
    while True:
        _recv(comm, status)
        if status.Get_tag() == TAG_STOP:
            comm.send(comm.Get_rank(), dest=0, tag=TAG_BYE)
            return


def main() -> None:
    comm = MPI.COMM_WORLD
    flag = Path(sys.argv[1])
    {0: lambda: coordinator(flag), 1: lambda: late_worker(comm, flag),
     2: lambda: quick_worker(comm)}[comm.Get_rank()]()


if __name__ == "__main__":
    main()
