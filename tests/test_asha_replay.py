"""ASHA's rungs after a crash: values reported live by evaluations in flight after the last
snapshot (issue 30 item 8). The replay tells logged results with their curves, in log order;
the rung values it rebuilds must be the ones the live engine held, so pruning continues
exactly once the evaluations still in flight have re-reported. The same with a grace period
and rung values smoothed over the last reports (issue 25 item 6): the smoothed values in the
snapshot, the windows rebuilt from the curves."""

from __future__ import annotations

from pathlib import Path

import pytest

from evo_engine.search.engine import Engine, EngineConfig
from evo_engine.search.messages import EvalState, Result, Task
from evo_engine.search.pruning import ASHAConfig
from evo_engine.space import Float, Space
from evo_engine.store.replay import rebuild_engine
from evo_engine.store.runstore import RunStore
from evo_engine.store.writer import Recorder

SPACE = Space(x=Float(0.0, 1.0), y=Float(0.0, 1.0))
RULES = {
    "raw": ASHAConfig(eta=2, min_steps=1, max_steps=8),
    "grace+median": ASHAConfig(eta=2, min_steps=1, max_steps=8, grace_steps=2, smooth=3),
    "grace+mean": ASHAConfig(eta=2, min_steps=1, max_steps=8, grace_steps=2, smooth=2,
                             smooth_by="mean"),
}
STEPS = (1, 2, 3, 4, 5, 6, 7, 8)


def value(task: Task, step: int) -> float:
    # A decreasing curve with a spike on one epoch in three (where depends on the task).
    spike = 0.7 if (step + task.uid) % 3 == 0 else 0.0
    return float(task.genome[0] + task.genome[1]) * (1 + 1 / step) + spike


def rungs(engine: Engine) -> list[list[float]]:
    assert engine.pruner is not None
    return [list(r.sorted) for r in engine.pruner.rungs]


@pytest.mark.parametrize("rule", list(RULES))
def test_rungs_reported_by_evaluations_in_flight_after_the_snapshot_replay_exactly(
        tmp_path: Path, rule: str) -> None:
    CFG = EngineConfig(max_evals=40, population_size=4, seed=11, pruning=RULES[rule])
    store = RunStore.create(tmp_path, attrs={"max_evals": CFG.max_evals}, dim=SPACE.dim,
                            param_kinds={n: p.kind for n, p in SPACE.items()})
    rec = Recorder(store, SPACE, background=False)
    live = Engine(SPACE, CFG)
    reported: dict[int, list[tuple[int, float]]] = {}
    decisions: dict[tuple[int, int], bool] = {}

    def issue() -> Task:
        t = live.ask()
        assert t is not None
        rec.record_task(t)
        reported[t.uid] = []
        return t

    def report(t: Task, upto: int) -> None:
        """``t`` reports its steps up to ``upto`` live (the coordinator's decide_report)."""
        for step in STEPS:
            if step > upto or any(s == step for s, _ in reported[t.uid]):
                continue
            v = value(t, step)
            reported[t.uid].append((step, v))
            decisions[t.uid, step] = live.report(t.uid, step, v)

    def finish(t: Task) -> None:
        report(t, STEPS[-1])
        curve = tuple(reported[t.uid])
        _, ev = live.tell(Result(uid=t.uid, worker=0, fitness=curve[-1][1], curve=curve))
        assert ev is not None and ev.state is EvalState.COMPLETE
        rec.record(ev)

    # Eight evaluations finish before the snapshot; three are in flight at it, with reports.
    for _ in range(8):
        finish(issue())
    a, b, c = issue(), issue(), issue()
    report(a, 2)
    report(b, 1)
    rec.snapshot(live.get_state())
    # After the snapshot: a reports on and finishes, b finishes, c reports rung 1 and 2 and
    # is still in flight at the crash; a new task d reports rung 1 and finishes.
    report(a, 4)
    report(c, 2)
    finish(b)
    d = issue()
    report(d, 1)
    finish(a)
    finish(d)
    rec.close()  # everything flushed, no later snapshot: then kill -9
    held_live = rungs(live)

    warnings: list[str] = []
    resumed, _ = rebuild_engine(RunStore.open(tmp_path), SPACE, CFG, warnings.append)
    assert warnings == []
    assert [t.uid for t in resumed.pending] == [c.uid]
    # c restarts from step 0 and reports again; its old values are replaced, not added, and
    # each report gets the answer the live engine gives c restarted at the same point.
    resumed.ask()
    assert live.pruner is not None
    live.pruner.restart(c.uid)
    for step, v in reported[c.uid]:
        assert resumed.report(c.uid, step, v) == live.report(c.uid, step, v)
    assert rungs(resumed) == held_live
    # From here on both decide alike: a new evaluation's reports get the same answers.
    e_live, e_resumed = live.ask(), resumed.ask()
    assert e_live is not None and e_resumed is not None and e_live.uid == e_resumed.uid
    for step in STEPS:
        v = value(e_live, step)
        assert resumed.report(e_resumed.uid, step, v) == live.report(e_live.uid, step, v)
    assert rungs(resumed) == rungs(live)
    assert any(decisions.values())  # the rule did stop something on these curves
