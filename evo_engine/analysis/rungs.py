"""Can a pruned run's ASHA rungs be trusted? Rank correlation of each rung with final fitness.

ASHA stops a training at a rung when its value there is not among the best ``1/eta``: that is
right only as far as the order at the rung is the order at the end. For the evaluations
that completed, both are known: each rung's value (recomputed from the curves log exactly
as the pruner recorded it: the report at or past the rung, smoothed over the last
``smooth`` reports when the run set that) and the final fitness. ``analyze`` prints their
Spearman rank correlation ρ per rung (``scipy.stats.spearmanr``), with n.

Two cautions, said with the numbers: (1) only evaluations that completed count, and those
survived every rung, so ρ is measured on a narrowed range and tends to be lower than over all
trainings (it says how well a rung orders the good ones, which is where pruning errs);
(2) with few complete evaluations ρ itself is noisy. A rung is called too low to trust when
ρ < ``TRUST_RHO`` (0.5, set a priori: a rung that orders the survivors no better than that
stops good trainings about as readily as bad ones), and nothing is judged below
``MIN_N`` (8) complete evaluations. What to do then: a later first rung (``grace_steps``),
rung values smoothed over more reports (``smooth``), or a smaller ``eta`` (docs/scenarios.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from evo_engine.search.pruning import ASHAConfig, smoothed_column
from evo_engine.store.reader import Run

TRUST_RHO = 0.5
MIN_N = 8


@dataclass
class RungCheck:
    step: int
    n: int
    rho: float
    """Spearman ρ between the rung's values and the final fitness (NaN when n < 3)."""
    p: float
    """Its two-sided p-value (scipy), NaN when n < 3."""

    @property
    def verdict(self) -> str:
        if self.n < MIN_N:
            return f"too few complete evaluations to judge (fewer than {MIN_N})"
        if not math.isfinite(self.rho) or self.rho < TRUST_RHO:
            return (f"too low to trust (< {TRUST_RHO}): this rung stops good trainings about as "
                    "readily as bad ones")
        return "ok"


def pruner_config(run: Run) -> ASHAConfig | None:
    """The run's ASHA settings, from its fingerprint description; None without a pruner."""
    desc = (run.attrs.get("fingerprint_description") or {}).get("pruner") or {}
    if desc.get("name") != "asha":
        return None
    try:
        return ASHAConfig(int(desc["eta"]), int(desc["min_steps"]), int(desc["max_steps"]),
                          int(desc.get("grace_steps", 0)), int(desc.get("smooth", 1)),
                          str(desc.get("smooth_by", "median")))
    except (KeyError, TypeError, ValueError):
        return None


def rung_checks(run: Run) -> tuple[ASHAConfig, list[RungCheck]] | None:
    """Per rung of a pruned run: ρ(rung value, final fitness) over its complete evaluations."""
    from scipy.stats import spearmanr

    cfg = pruner_config(run)
    if cfg is None or not len(run.curves.get("uid", ())):
        return None
    order = np.argsort(run.curves["uid"], kind="stable")  # each curve together, in order
    uid = np.asarray(run.curves["uid"])[order]
    step = np.asarray(run.curves["step"])[order]
    value = smoothed_column(uid, np.asarray(run.curves["value"], dtype=np.float64)[order],
                            cfg.smooth, cfg.smooth_by)
    done = run.complete
    final = dict(zip(run.evaluations["uid"][done].tolist(), run.fitness[done].tolist()))
    out = []
    for s in cfg.rungs:
        at = step >= s
        u, first = np.unique(uid[at], return_index=True)
        keep = np.isin(u, list(final))
        x = value[at][first][keep]
        y = np.array([final[k] for k in u[keep].tolist()])
        ok = np.isfinite(x)
        x, y = x[ok], y[ok]
        if len(x) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
            res = spearmanr(x, y)
            rho, p = float(res.statistic), float(res.pvalue)
        else:
            rho, p = math.nan, math.nan
        out.append(RungCheck(s, len(x), rho, p))
    return cfg, out


def format_rung_checks(run: Run) -> str | None:
    """The ``analyze`` paragraph on the run's rungs, or None when the run had no ASHA."""
    got = rung_checks(run)
    if got is None:
        return None
    cfg, checks = got
    how = ("the report there" if cfg.smooth == 1
           else f"the {cfg.smooth_by} of the last {cfg.smooth} reports")
    lines = [f"ASHA rungs against final fitness (Spearman rho over the evaluations that "
             f"completed; a rung's value is {how}; eta {cfg.eta}"
             + (f", grace {cfg.grace_steps}" if cfg.grace_steps else "") + "):"]
    for c in checks:
        rho = "n/a" if not math.isfinite(c.rho) else f"{c.rho:+.2f} (p {c.p:.2g})"
        lines.append(f"  step {c.step}: rho {rho}, n {c.n}: {c.verdict}")
    if any(c.verdict.startswith("too low") for c in checks):
        lines.append("  Pruning at a rung marked too low is close to a coin toss: consider "
                     "grace_steps past it, smooth over more reports, or no pruning "
                     "(docs/scenarios.md, Early stopping). Only survivors count here, so rho "
                     "is lower than over all trainings.")
    return "\n".join(lines)


def as_dict(run: Run) -> dict[str, Any] | None:
    """The same, for scripts: ``{"rungs": [{"step", "n", "rho", "p", "verdict"}]}``."""
    got = rung_checks(run)
    if got is None:
        return None
    return {"rungs": [{"step": c.step, "n": c.n, "rho": c.rho, "p": c.p, "verdict": c.verdict}
                      for c in got[1]]}
