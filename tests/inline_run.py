"""A whole run in the test process: real coordinator, inline transport, recorder and store.

Used by the resume and pruning tests to stop a run after a given number of results (as a
walltime signal would) and to continue it from what the store holds.
"""

from __future__ import annotations

from pathlib import Path

from evo_engine.job.coordinator import Coordinator, StopRequest
from evo_engine.search.engine import Engine
from evo_engine.store.runstore import RunStore
from evo_engine.store.writer import Recorder
from evo_engine.transports.base import WorkerSpec
from evo_engine.transports.inline import InlineTransport


def drive_inline(scenario, run_dir: Path, engine: Engine, stop_after: int | None,
                 last_snapshot: bool = True) -> str:
    """Run ``engine`` on ``scenario``'s objective until done, or abort after ``stop_after`` results.

    Snapshots every ``checkpoint_every`` results and (unless ``last_snapshot`` is False, as
    after a crash) at the stop; returns the coordinator's stop reason.
    """
    store = RunStore.open(run_dir) if (run_dir / "run.zarr").exists() else RunStore.create(
        run_dir, attrs={"max_evals": scenario.max_evals},
        param_kinds={n: p.kind for n, p in scenario.space.items()}, dim=scenario.space.dim)
    rec = Recorder(store, scenario.space, background=False)
    transport = InlineTransport(WorkerSpec(objective=scenario.objective,
                                           scratch_root=str(run_dir / "scratch")))
    transport.start()
    told = 0

    def on_eval(ev):
        nonlocal told
        told += 1
        rec.record(ev)
        if told % scenario.checkpoint_every == 0:
            rec.snapshot(engine.get_state())

    def stop_check():
        return StopRequest("signal:SIGTERM", abort=True) if stop_after and told >= stop_after else None

    reason = Coordinator(engine, transport, on_evaluation=on_eval, on_task=rec.record_task,
                         stop_check=stop_check).run()
    if last_snapshot:
        rec.snapshot(engine.get_state())
    rec.close()
    return reason
