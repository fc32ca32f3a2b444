"""Several objectives: Pareto ranking, crowding, hypervolume, constraints, scalarisations.

Everything here minimises: an objective the scenario maximises is negated on the way in
(``Objectives.minimised``). Constraints follow Deb's constrained domination: a feasible point
beats every infeasible one, two infeasible points compare by their total violation, and two
feasible ones by Pareto dominance. The island's replacement is steady-state SMS-EMOA/NSGA-II:
the pool (population plus the newcomer) is ordered by (front, then the member's share of its
front: exclusive hypervolume with two objectives, crowding distance otherwise) and the last
one leaves. The population is kept in that order, best first, so every operator that selects
by position (GA tournaments, the ES's better half, the surrogate's elite) selects by Pareto
rank without knowing it. All functions are pure: same input, same output, same order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

VIOLATION = "constraint_violation"
"""The metric every evaluation of a constrained scenario carries: the total amount by which
its constraints are violated; 0 = feasible. Stored as ``metrics/constraint_violation``."""

SENSES = ("min", "max")
OPS = ("<=", ">=")
RHO = 0.05
"""Augmented Tchebycheff's linear term (Knowles' ParEGO uses 0.05)."""


@dataclass(frozen=True)
class Objectives:
    """Which named values an evaluation is judged on (and which way), and which must hold."""

    names: tuple[str, ...]
    senses: tuple[str, ...]
    constraints: tuple[tuple[str, str, float], ...] = ()

    def __post_init__(self) -> None:
        if not self.names or len(self.names) != len(self.senses):
            raise ValueError("objectives need at least one (name, 'min'|'max') pair")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"objective names repeat: {list(self.names)}")
        if any(s not in SENSES for s in self.senses):
            raise ValueError(f"an objective's sense is 'min' or 'max', got {list(self.senses)}")
        for name, op, bound in self.constraints:
            if op not in OPS or not math.isfinite(bound):
                raise ValueError(f"constraint {name!r}: ({op!r}, {bound!r}) is not "
                                 "('<=' or '>=', a finite number)")

    @property
    def m(self) -> int:
        return len(self.names)

    def raw(self, named: Mapping[str, float]) -> tuple[float, ...]:
        """The objective values as the objective returned them, in scenario order."""
        out = []
        for n in self.names:
            v = named.get(n)
            if v is None:
                raise ValueError(f"objective value {n!r} missing from the result "
                                 f"(it returned {sorted(named)})")
            if not math.isfinite(float(v)):
                raise ValueError(f"objective value {n!r} is not finite: {v!r}")
            out.append(float(v))
        return tuple(out)

    def minimised(self, raw: Sequence[float]) -> tuple[float, ...]:
        return tuple(-v if s == "max" else v for v, s in zip(raw, self.senses))

    def violation(self, named: Mapping[str, float]) -> float:
        """Total violation of the constraints (0 = feasible); a missing value is an error."""
        total = 0.0
        for name, op, bound in self.constraints:
            v = named.get(name)
            if v is None or not math.isfinite(float(v)):
                raise ValueError(f"constraint value {name!r} missing or not finite "
                                 f"(got {v!r})")
            gap = float(v) - bound if op == "<=" else bound - float(v)
            total += max(0.0, gap)
        return total

    def describe(self) -> dict[str, Any]:
        return {"objectives": [[n, s] for n, s in zip(self.names, self.senses)],
                "constraints": [[n, op, b] for n, op, b in self.constraints]}


def parse_objectives(objectives: Sequence[Any], constraints: Mapping[str, Any]) -> Objectives | None:
    """``[("loss", "min"), "seconds"]`` and ``{"gpu_mem_gb": ("<=", 40)}`` as Objectives, or
    None when there are no objectives; a ValueError names what is malformed.

    ``objectives`` is a list (or tuple) of names and (name, "min"|"max") pairs, even for one
    objective: a bare string would be read character by character ("val" as v, a, l), and a
    bare pair as two objectives ("loss" and "min"), so both are refused, as is "min" or "max"
    as an objective's name. The Scenario and the Optimizer both parse here.
    """
    if isinstance(objectives, (str, bytes)):
        raise ValueError(f"objectives: {objectives!r} is one string, not a list of names; pass "
                         f"[{objectives!r}] or [({objectives!r}, 'min')] (a list of names or of "
                         "(name, 'min'|'max') pairs)")
    if not isinstance(objectives, (list, tuple)):
        raise ValueError(f"objectives: {objectives!r} is not a list of names or of (name, "
                         "'min'|'max') pairs, e.g. [('val_nrmse', 'min')]")
    if not objectives:
        if constraints:
            raise ValueError("constraints need objectives: name the values to optimise, "
                             "e.g. objectives=[('val_nrmse', 'min')]")
        return None
    names, senses = [], []
    for item in objectives:
        if isinstance(item, str):
            item = (item, "min")
        if (not isinstance(item, (tuple, list)) or len(item) != 2
                or not isinstance(item[0], str) or item[1] not in SENSES):
            raise ValueError(f"objectives: {item!r} is not a name or a (name, 'min'|'max') pair")
        if item[0] in SENSES:
            bare_pair = (len(objectives) == 2 and isinstance(objectives[0], str)
                         and objectives[0] not in SENSES and objectives[1] == item[0])
            pair = (objectives[0] if bare_pair else "val_nrmse", item[0])
            raise ValueError(f"objectives: {item[0]!r} is a sense, not an objective name; one "
                             f"objective with its sense is a pair inside a list: [{pair!r}]")
        names.append(item[0])
        senses.append(item[1])
    if not isinstance(constraints, Mapping):
        raise ValueError(f"constraints: {constraints!r} is not a dict of name: ('<=' or '>=', "
                         "bound), e.g. {'gpu_mem_gb': ('<=', 40)}")
    cons = []
    for name, rule in constraints.items():
        ok = (isinstance(rule, (tuple, list)) and len(rule) == 2 and rule[0] in OPS
              and isinstance(rule[1], (int, float)) and not isinstance(rule[1], bool))
        if not ok or not math.isfinite(float(rule[1])):
            raise ValueError(f"constraints: {name!r}: {rule!r} is not ('<=' or '>=', a finite "
                             "number)")
        cons.append((str(name), str(rule[0]), float(rule[1])))
    return Objectives(tuple(names), tuple(senses), tuple(cons))


# -- ranking ---------------------------------------------------------------------------------


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(a <= b) and np.any(a < b))


def nondominated_ranks(F: np.ndarray, violation: np.ndarray | None = None) -> np.ndarray:
    """Front index of each row of ``F`` (0 = non-dominated), under constrained domination.

    Feasible points get fronts 0..k by Pareto dominance; infeasible ones come after all of
    them, one front per distinct violation (smaller first).
    """
    F = np.asarray(F, dtype=np.float64).reshape(len(F), -1)
    n = F.shape[0]
    ranks = np.zeros(n, dtype=np.int64)
    if n == 0:
        return ranks
    cv = np.zeros(n) if violation is None else np.asarray(violation, dtype=np.float64)
    feas = np.flatnonzero(cv <= 0)
    if feas.size:
        G = F[feas]
        le = np.all(G[:, None, :] <= G[None, :, :], axis=2)
        lt = np.any(G[:, None, :] < G[None, :, :], axis=2)
        dom = le & lt  # dom[i, j]: i dominates j
        count = dom.sum(axis=0)
        left = np.ones(feas.size, dtype=bool)
        front = 0
        while left.any():
            now = left & (count == 0)
            ranks[feas[now]] = front
            left &= ~now
            count = count - dom[now].sum(axis=0)
            front += 1
        top = front
    else:
        top = 0
    infeas = np.flatnonzero(cv > 0)
    if infeas.size:
        _, inv = np.unique(cv[infeas], return_inverse=True)
        ranks[infeas] = top + inv
    return ranks


def crowding_distance(F: np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance of each row of one front (extremes = inf)."""
    F = np.asarray(F, dtype=np.float64).reshape(len(F), -1)
    n, m = F.shape
    d = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for k in range(m):
        order = np.argsort(F[:, k], kind="stable")
        span = F[order[-1], k] - F[order[0], k]
        d[order[0]] = d[order[-1]] = np.inf
        if span > 0:
            d[order[1:-1]] += (F[order[2:], k] - F[order[:-2], k]) / span
    return d


def hv_contributions_2d(F: np.ndarray) -> np.ndarray:
    """Exclusive hypervolume of each point of a 2-objective non-dominated set (extremes = inf)."""
    F = np.asarray(F, dtype=np.float64).reshape(len(F), 2)
    n = F.shape[0]
    if n <= 2:
        return np.full(n, np.inf)
    order = np.lexsort((F[:, 1], F[:, 0]))
    s = F[order]
    c = np.empty(n)
    c[0] = c[-1] = np.inf
    c[1:-1] = (s[2:, 0] - s[1:-1, 0]) * (s[:-2, 1] - s[1:-1, 1])
    out = np.empty(n)
    out[order] = c
    return out


def pareto_order(F: np.ndarray, violation: np.ndarray | None = None) -> np.ndarray:
    """Indices of the rows of ``F`` best first: by front, then by their share of the front.

    The share is the exclusive hypervolume with two objectives and the crowding distance
    otherwise (larger first); infeasible fronts are ordered by violation alone. Ties keep
    the input order, so the order is a pure function of the input.
    """
    F = np.asarray(F, dtype=np.float64).reshape(len(F), -1)
    n = F.shape[0]
    ranks = nondominated_ranks(F, violation)
    share = np.zeros(n)
    cv = np.zeros(n) if violation is None else np.asarray(violation, dtype=np.float64)
    for r in np.unique(ranks):
        idx = np.flatnonzero(ranks == r)
        if cv[idx[0]] > 0:
            continue
        G = F[idx]
        _, uniq = np.unique(G, axis=0, return_index=True)
        if F.shape[1] == 2 and uniq.size == idx.size:
            share[idx] = hv_contributions_2d(G)
        else:
            share[idx] = crowding_distance(G)
    return np.lexsort((np.arange(n), -share, ranks))


# -- hypervolume -----------------------------------------------------------------------------


def hypervolume(F: np.ndarray, ref: Sequence[float]) -> float:
    """Volume dominated by the rows of ``F`` and bounded by ``ref`` (2 or 3 objectives)."""
    F = np.asarray(F, dtype=np.float64).reshape(len(F), -1)
    ref = np.asarray(ref, dtype=np.float64)
    if F.shape[0] == 0:
        return 0.0
    F = F[np.all(ref > F, axis=1)]
    if F.shape[0] == 0:
        return 0.0
    if F.shape[1] == 1:
        return float(ref[0] - F[:, 0].min())
    if F.shape[1] == 2:
        return _hv2(F, ref)
    if F.shape[1] == 3:
        order = np.argsort(F[:, 2], kind="stable")
        F = F[order]
        total = 0.0
        for i in range(F.shape[0]):
            top = F[i + 1, 2] if i + 1 < F.shape[0] else ref[2]
            if top > F[i, 2]:
                total += _hv2(F[: i + 1, :2], ref[:2]) * (top - F[i, 2])
        return float(total)
    raise ValueError(f"hypervolume is computed for 1 to 3 objectives, not {F.shape[1]}")


def _hv2(F: np.ndarray, ref: np.ndarray) -> float:
    s = F[np.lexsort((F[:, 1], F[:, 0]))]
    total, best1 = 0.0, ref[1]
    for x, y in s:
        if y < best1:
            total += (ref[0] - x) * (best1 - y)
            best1 = y
    return float(total)


# -- scalarisations and picks ----------------------------------------------------------------


def normalise(F: np.ndarray) -> np.ndarray:
    """Each column mapped to [0, 1] by its min and max (a constant column becomes 0)."""
    F = np.asarray(F, dtype=np.float64).reshape(len(F), -1)
    lo, hi = F.min(axis=0), F.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    return (F - lo) / span


def tchebycheff(F: np.ndarray, weights: np.ndarray, rho: float = RHO) -> np.ndarray:
    """Augmented Tchebycheff scalarisation of normalised rows: max_k w_k f_k + rho Σ w_k f_k."""
    wf = np.asarray(F, dtype=np.float64) * np.asarray(weights, dtype=np.float64)
    return wf.max(axis=1) + rho * wf.sum(axis=1)


def parego_scalars(F: np.ndarray, violation: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ParEGO's training values: Tchebycheff over the feasible rows (normalised by them); an
    infeasible row scores worse than every feasible one, more so the larger its violation."""
    F = np.asarray(F, dtype=np.float64).reshape(len(F), -1)
    cv = np.asarray(violation, dtype=np.float64)
    out = np.empty(F.shape[0])
    feas = cv <= 0
    if feas.any():
        lo, hi = F[feas].min(axis=0), F[feas].max(axis=0)
        span = np.where(hi > lo, hi - lo, 1.0)
        s = tchebycheff((F - lo) / span, weights)
        out[feas] = s[feas]
        worst = float(s[feas].max())
    else:
        worst = 0.0
    if (~feas).any():
        v = cv[~feas]
        out[~feas] = worst + 1.0 + v / max(float(v.max()), 1e-300)
    return out


def knee(F: np.ndarray) -> int:
    """The knee of a front: the member nearest the ideal point once each objective is mapped
    to [0, 1] over the front (Euclidean distance; ties to the lowest index)."""
    Z = normalise(F)
    return int(np.argmin(np.sqrt((Z**2).sum(axis=1))))


def front_mask(F: np.ndarray, violation: np.ndarray | None = None) -> np.ndarray:
    """True for the rows on the first (feasible, non-dominated) front."""
    F = np.asarray(F, dtype=np.float64).reshape(len(F), -1)
    if F.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    ranks = nondominated_ranks(F, violation)
    cv = np.zeros(F.shape[0]) if violation is None else np.asarray(violation, dtype=np.float64)
    return (ranks == 0) & (cv <= 0)


def front_members(members: Sequence[Any]) -> list[Any]:
    """The feasible non-dominated ones among ``members`` (objects with ``uid``, ``values``,
    ``violation``; one per uid), knee first, then in Pareto order."""
    uniq = list({m.uid: m for m in members if m.values}.values())
    if not uniq:
        return []
    F = np.array([m.values for m in uniq])
    cv = np.array([m.violation for m in uniq])
    keep = front_mask(F, cv)
    order = [int(i) for i in pareto_order(F, cv) if keep[i]]
    k = order[knee(F[order])]
    return [uniq[k]] + [uniq[i] for i in order if i != k]


__all__ = ["OPS", "RHO", "SENSES", "VIOLATION", "Objectives", "crowding_distance", "dominates",
           "front_mask", "front_members", "hv_contributions_2d", "hypervolume", "knee", "nondominated_ranks",
           "normalise", "parego_scalars", "parse_objectives", "pareto_order", "tchebycheff"]
