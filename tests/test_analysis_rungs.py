"""``analyze`` on a pruned run: Spearman ρ between each ASHA rung and final fitness (issue 25
item 6), rung values recomputed as the pruner recorded them (raw or smoothed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evo_engine.analysis.rungs import format_rung_checks, rung_checks
from evo_engine.search.messages import EvalState
from evo_engine.store.reader import Run


def _run(**pruner: object) -> Run:
    # Ten complete evaluations, final fitness f = 0.1 .. 1.0, and one pruned at step 1.
    # Reports: step 1 = 1 - f (the reverse order), step 2 = 1.5 f - 0.5, step 3 = f, step 4 = f plus
    # a spike of 3 on every odd one.
    f = np.round(np.arange(1, 11) / 10, 2)
    uid, step, value = [], [], []
    for i, fi in enumerate(f):
        for s, v in [(1, 1 - fi), (2, 1.5 * fi - 0.5), (3, fi), (4, fi + 3 * (i % 2))]:
            uid.append(i), step.append(s), value.append(v)
    uid.append(10), step.append(1), value.append(0.05)
    desc = {"name": "asha", "eta": 2, "min_steps": 1, "max_steps": 8, **pruner}
    return Run(path=Path("."), attrs={"fingerprint_description": {"pruner": desc}},
               evaluations={"uid": np.arange(11),
                            "state": np.array([int(EvalState.COMPLETE)] * 10
                                              + [int(EvalState.PRUNED)], dtype=np.int8),
                            "fitness": np.append(f, np.nan)},
               curves={"uid": np.array(uid), "step": np.array(step), "value": np.array(value)})


def test_rung_correlation_with_final_fitness_over_the_complete_evaluations() -> None:
    got = rung_checks(_run())
    assert got is not None
    _, checks = got
    assert [(c.step, c.n) for c in checks] == [(1, 10), (2, 10), (4, 10)]  # the pruned one out
    # By hand: ranks of step 4 are 1-5 for the even ones and 6-10 for the odd ones; against the
    # final ranks sum(d²) = 60, so ρ = 1 - 6·60/(10·99) = 0.6364.
    assert [c.rho for c in checks] == pytest.approx([-1.0, 1.0, 1 - 360 / 990])
    assert checks[0].verdict.startswith("too low") and checks[2].verdict == "ok"
    text = format_rung_checks(_run())
    assert text is not None
    assert "step 1: rho -1.00" in text and "too low to trust" in text and "n 10" in text
    assert "the report there" in text


def test_rung_values_are_smoothed_as_the_run_smoothed_them() -> None:
    # Median of the last 3 reports: step 4's spike is ignored (f, f, f+3 → f): ρ = 1.
    got = rung_checks(_run(smooth=3, smooth_by="median", grace_steps=2))
    assert got is not None
    cfg, checks = got
    assert cfg.rungs == [2, 4]
    assert [c.rho for c in checks] == pytest.approx([1.0, 1.0])
    text = format_rung_checks(_run(smooth=3, smooth_by="median", grace_steps=2))
    assert text is not None and "median of the last 3 reports" in text
    assert "too low" not in text


def test_runs_without_asha_or_with_too_few_complete_evaluations() -> None:
    run = _run()
    run.attrs = {"fingerprint_description": {}}
    assert format_rung_checks(run) is None
    few = _run()
    few.evaluations["state"][3:10] = int(EvalState.PRUNED)
    _, checks = rung_checks(few)  # type: ignore[misc]
    assert checks[0].n == 3 and checks[0].verdict.startswith("too few")
