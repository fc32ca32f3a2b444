"""The incumbent as an estimate: one configuration's mean over its evaluations, and the noise.

Where one evaluation's result moves with its seed, the best single result is the luckiest
draw, not the best configuration. Everything that says "best" (the engine's ``best``, the
live line, the end-of-run summary, ``finalize``'s choice, ``Optimizer.best``, ``analyze``'s
top table, ``--warm-start RUN_DIR:N``) ranks configurations with the functions here, so the
engine and the analysis of its store cannot disagree:

- ``summarize_groups``: per configuration (``config_key``), the complete evaluations'
  count, mean, sample std and best single draw;
- ``pooled_noise``: the objective's noise, the pooled within-configuration std over every
  configuration evaluated more than once (None when nothing was evaluated twice);
- ``rank_estimates``: configurations by their *pessimistic estimate*, the mean plus
  ``PESSIMISM`` standard errors (noise / sqrt(n)), once repeats measured a noise above 0;
  by mean otherwise (nothing repeated, or repeats that came out identical: a deterministic
  objective, the plain minimum as always). Ties: the earlier first uid. ``incumbent`` is the
  first. A configuration seen once pays the most for its uncertainty, one that stood a race
  the least, so one lucky draw ousts a mean over three only when it leads by more than the
  difference of their standard errors; and a configuration whose race the budget cut short
  still competes on what it has (a count gate kept it out, issue 24).
- ``decisive``: a lead so large at the measured noise (``DECISIVE`` standard errors) that
  no race could overturn it: the race module starts none for it.

Pure functions of plain values: no engine, no store.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

DECISIVE = 3.0
"""Standard errors by which a lead is decisive: set a priori (the 3-sigma convention), not
tuned on any landscape."""

PESSIMISM = 1.0
"""Standard errors added to a mean to rank it: chosen on the tuning landscapes with noise
(docs/noise.md: 0.5, 1 and 1.5 scored alike there; 1 is the one-standard-error bound)."""


@dataclass(frozen=True)
class Estimate:
    """One configuration's complete evaluations, summarised."""

    key: str
    uid: int
    """uid of its first evaluation (the configuration's name in the log)."""
    n: int
    mean: float
    std: float
    """Sample std over its evaluations (NaN with one)."""
    best_draw: float
    """Its luckiest single evaluation."""
    sum_sq: float
    """Sum of squared deviations from the mean (for the pooled noise)."""


def summarize_groups(rows: Iterable[tuple[str, int, float]]) -> dict[str, Estimate]:
    """Group complete evaluations ``(config_key, uid, fitness)`` by configuration."""
    values: dict[str, list[float]] = {}
    first: dict[str, int] = {}
    for key, uid, fitness in rows:
        values.setdefault(key, []).append(float(fitness))
        first[key] = min(first.get(key, uid), uid)
    return {k: make_estimate(k, first[k], v) for k, v in values.items()}


def make_estimate(key: str, uid: int, values: list[float]) -> Estimate:
    """The estimate of one configuration from its complete fitness values (at least one)."""
    n = len(values)
    mean = math.fsum(values) / n
    ss = math.fsum((v - mean) ** 2 for v in values)
    std = math.sqrt(ss / (n - 1)) if n > 1 else float("nan")
    return Estimate(key, uid, n, mean, std, min(values), ss)


def pooled_noise(estimates: Iterable[Estimate]) -> tuple[float, int] | None:
    """(pooled within-configuration std, its degrees of freedom), or None without repeats."""
    parts, dof = [], 0
    for e in estimates:
        if e.n > 1:
            parts.append(e.sum_sq)
            dof += e.n - 1
    return noise_from(parts, dof)


def noise_from(sums_sq: Iterable[float], dof: int) -> tuple[float, int] | None:
    """``pooled_noise`` from its parts: the configurations' sums of squares (summed exactly,
    so in any order the same float) and their degrees of freedom."""
    if dof == 0:
        return None
    return math.sqrt(math.fsum(sums_sq) / dof), dof


def decisive(mean: float, n: int, reference: float, noise: float) -> bool:
    """Whether a mean over ``n`` draws beats ``reference`` beyond doubt at this ``noise``."""
    return mean + DECISIVE * noise / math.sqrt(n) < reference


def pessimistic(e: Estimate, noise: float) -> float:
    """The mean plus ``PESSIMISM`` standard errors at this noise: what ranks ``e``."""
    return e.mean + PESSIMISM * noise / math.sqrt(e.n)


def rank_key(e: Estimate, sigma: float) -> tuple[float, float, int]:
    """What orders configurations at the pooled noise ``sigma`` (0 when unmeasured)."""
    return pessimistic(e, sigma), e.mean, e.uid


def rank_estimates(estimates: Iterable[Estimate]) -> list[Estimate]:
    """Configurations best first (see the module docstring)."""
    es = list(estimates)
    noise = pooled_noise(es)
    sigma = 0.0 if noise is None else noise[0]
    return sorted(es, key=lambda e: rank_key(e, sigma))


def incumbent(estimates: Iterable[Estimate]) -> Estimate | None:
    """The configuration with the best pessimistic estimate, or None."""
    ranked = rank_estimates(estimates)
    return ranked[0] if ranked else None


def luckiest(estimates: Iterable[Estimate]) -> Estimate | None:
    """The configuration holding the best single draw (shown as such, never as "best")."""
    return min(estimates, key=lambda e: (e.best_draw, e.uid), default=None)


def describe_best(e: Estimate, island: int | None = None) -> str:
    """"best fitness ..." for people: the estimate with its count and spread."""
    where = f"uid {e.uid}" + ("" if island is None else f", island {island}")
    if e.n == 1:
        return f"best fitness {e.mean:.6g} ({where})"
    return (f"best fitness {e.mean:.6g} +- {e.std:.2g} (estimated: mean +- std of {e.n} "
            f"evaluations; {where})")


def describe_luckiest(best: Estimate, lucky: Estimate) -> str | None:
    """The luckiest single draw, labelled as such; None when it is the incumbent's only one."""
    if lucky.key == best.key and best.n == 1:
        return None
    if lucky.key == best.key:
        return f"luckiest single draw: {lucky.best_draw:.6g} (the same configuration)"
    return (f"luckiest single draw: {lucky.best_draw:.6g} (configuration of uid {lucky.uid}, "
            f"mean {lucky.mean:.6g} over {lucky.n}): not the best estimate")


UNMEASURED = "seed noise not measured (no configuration evaluated twice): the best is one draw"
"""What ``resolution_note`` says when nothing was repeated."""


def unmeasured_note(settings: Mapping[str, Any]) -> str | None:
    """What the end of a run and ``analyze`` say when nothing was repeated, for a run of these
    search settings (``EngineConfig.describe()``, as the store keeps them): nothing where races
    cannot run (PBT, synchronous, several objectives: not one noisy fitness); ``UNMEASURED``
    where races or repeats were on; with the advice to race where they could run but were
    off."""
    if settings.get("pbt") or settings.get("sync") or settings.get("objectives"):
        return None
    if settings.get("intensify") or settings.get("repeats"):
        return UNMEASURED
    return UNMEASURED + "; if the objective is noisy, set intensify=3 (docs/noise.md)"


def resolution_note(estimates: Iterable[Estimate], top: int = 10) -> str | None:
    """One sentence: the seed noise beside the spread of the ``top`` best means (all
    configurations, by mean: the ones a user would read as the leaders), or, when nothing
    was evaluated twice, that the noise is unmeasured (None for a single configuration)."""
    es = sorted(estimates, key=lambda e: e.mean)
    noise = pooled_noise(es)
    if noise is None:
        # Nothing repeated: on a noisy objective the best is then the luckiest of many single
        # draws (on real tables it named a configuration 2-4x worse than the best one the
        # search had evaluated: docs/noise.md), and nothing in the run can tell.
        return UNMEASURED if len(es) >= 2 else None
    sigma, dof = noise
    head = es[:top]
    spread = head[-1].mean - head[0].mean
    if sigma == 0.0:
        return (f"seed noise = 0 ({dof} repeat degrees of freedom): the objective looks "
                f"deterministic")
    verdict = ("rankings among them are not resolved" if spread < 2 * sigma
               else "the noise is small beside that spread")
    return (f"seed noise ~ {sigma:.3g} ({dof} dof); the top {len(head)} differ by "
            f"{spread:.3g}: {verdict}")


__all__ = ["DECISIVE", "PESSIMISM", "UNMEASURED", "Estimate", "decisive", "describe_best",
           "describe_luckiest", "incumbent", "luckiest", "make_estimate", "noise_from",
           "pessimistic", "pooled_noise", "rank_key", "rank_estimates", "resolution_note", "summarize_groups",
           "unmeasured_note"]
