"""Early stopping by asynchronous successive halving (ASHA): which evaluations go on training.

Pure logic, like the engine that owns it: no I/O, no clocks. An objective reports
``ctx.report(step, value)`` (``step`` = training done so far, e.g. epochs completed; ``value``
= e.g. that epoch's validation fitness, lower is better); the coordinator asks
``ASHA.decide(uid, step, value)`` and the worker stops training when it answers True.

Rungs sit at ``min_steps · eta**k`` steps, below ``max_steps`` (the length of a complete
evaluation, where nothing is left to decide). The first report of an evaluation at or past a
rung records its value there; the evaluation goes on only if that value is among the best
``n // eta`` of the ``n`` values recorded at the rung so far, its own included — ASHA's
promotion rule, applied at once instead of waiting for a full rung. While ``n < eta`` that
top set is empty, so the evaluation goes on only if it is the best so far (as optuna's
``SuccessiveHalvingPruner`` does). A report that jumps past several rungs is recorded at
each of them; a non-finite value always stops.

Validation curves are noisy (a cpu advection training went 0.19 → 0.33 → 0.61 → 0.24 on
consecutive epochs), and the raw rule stops a training on one bad epoch. Two settings guard
against that (both off by default, so a run without them decides exactly as before):

* ``grace_steps`` G: no rung below step G, so nothing is stopped before it has trained G
  steps (the ladder keeps its ``min_steps · eta**k`` positions; only those ≥ G are rungs).
  A non-finite report still stops at once.
* ``smooth`` k: the value recorded at a rung is the median (``smooth_by="median"``), the
  mean (``"mean"``) or the minimum (``"min"``) of the evaluation's last k reports (the report at or past the rung and
  the k − 1 before it, fewer at the start of a curve), not that one report. The median of 3
  ignores one bad epoch (0.33, 0.61, 0.24 → 0.33), where the mean takes a third of the spike
  (0.39); the minimum ignores it too (0.24) and, on a falling curve, is the latest report,
  where the median and the mean lag behind. With k = 1 it is the report itself, bit for bit.

The smoothing window is an evaluation's progress, like the next rung it waits for: an
evaluation that restarts reports from step 0 with an empty window, and ``finish`` and
``rebuild`` compute it again from the reported curve with the same function (``smoothed``),
so a replayed rung value is the live one bit for bit.

Rung values of evaluations in flight are kept per uid, so recording one twice (re-run from
step 0 after a restart, or its curve recorded again when it finishes) replaces its value
instead of counting it again; once an evaluation finishes only its values remain, counted
per rung (``_Rung``). A snapshot therefore holds the values of evaluations in flight only, O(in
flight × rungs) however long the run; ``--resume`` rebuilds the finished ones from the
store's curves log (``rebuild``).

Memory: a rung keeps each distinct value with its count, exactly, up to ``EXACT_VALUES``
(50,000) values; past that, it counts values in bins of ``2**-BIN_BITS`` (0.1 %) relative
width instead (the first rung holds a value of every evaluation: a million values, ~40 MB,
kept for the whole run). The promotion rule only ever asks where the ``n // eta``-th value
lies, so a rung keeps a pointer to it, moved one step per value recorded: O(log bins) a
report. Decisions are the exact ones while a rung holds at most ``EXACT_VALUES`` values; past
it, a value in the same bin as the cut is promoted (within 0.1 % of it). The switch depends
on the count of values alone and bins are a function of the value, so a rung's content is a
function of the values it holds, whatever their order: a resume rebuilds the same one.
Reference: Li et al., "A System for Massively Parallel Hyperparameter Tuning",
MLSys 2020.
"""

from __future__ import annotations

import math
import struct
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sortedcontainers import SortedDict

EXACT_VALUES = 50_000
"""Values a rung keeps exactly; past that, counted in bins (decisions within 0.1 % of the cut
may differ from the exact rule's: such a value is promoted)."""
BIN_BITS = 10
"""Mantissa bits a bin keeps: bins 2**-10 (0.1 %) of a value wide, at most 2**(12 + BIN_BITS)
of them, in practice ~1,000 per factor of 2 the values span."""
_SHIFT = 52 - BIN_BITS
_MAGNITUDE = (1 << 63) - 1


def value_bin(value: float) -> int:
    """An integer that orders as ``value`` does, equal for values within one bin."""
    bits = struct.unpack("<q", struct.pack("<d", value + 0.0))[0]
    ordered = bits if bits >= 0 else -(bits & _MAGNITUDE)
    return ordered >> _SHIFT

SMOOTHING = ("median", "mean", "min")


@dataclass(frozen=True)
class ASHAConfig:
    """The rung ladder: ``min_steps · eta**k`` for every k with a rung below ``max_steps``."""

    eta: int = 3
    min_steps: int = 1
    max_steps: int = 81
    grace_steps: int = 0
    """No rung below this step: nothing is stopped before it (0 = off)."""
    smooth: int = 1
    """Rung values reduce the last ``smooth`` reports (1 = the report itself)."""
    smooth_by: str = "median"
    """How: "median" (one bad epoch does not move it), "mean", or "min" (the best of the
    window: a bad epoch is ignored and a falling curve is not held back by older reports)."""

    def __post_init__(self) -> None:
        if self.eta < 2:
            raise ValueError(f"eta must be >= 2, got {self.eta}")
        if self.min_steps < 1:
            raise ValueError(f"min_steps must be >= 1, got {self.min_steps}")
        if self.max_steps <= self.min_steps:
            raise ValueError(
                f"max_steps ({self.max_steps}) must exceed min_steps ({self.min_steps})"
            )
        if self.smooth < 1:
            raise ValueError(f"smooth must be >= 1 report, got {self.smooth}")
        if self.smooth_by not in SMOOTHING:
            raise ValueError(f"smooth_by must be one of {SMOOTHING}, got {self.smooth_by!r}")
        if self.grace_steps < 0:
            raise ValueError(f"grace_steps must be >= 0, got {self.grace_steps}")
        if not self.rungs:
            raise ValueError(
                f"grace_steps ({self.grace_steps}) leaves no rung below max_steps "
                f"({self.max_steps}) on the ladder {self.min_steps}·{self.eta}^k: nothing "
                "would ever be stopped"
            )

    @property
    def rungs(self) -> list[int]:
        out, step = [], self.min_steps
        while step < self.max_steps:
            if step >= self.grace_steps:
                out.append(step)
            step *= self.eta
        return out

    def describe(self) -> dict[str, Any]:
        # The new settings only when on, so runs without them keep their fingerprint.
        return {"name": "asha", "eta": self.eta, "min_steps": self.min_steps,
                "max_steps": self.max_steps,
                **({"grace_steps": self.grace_steps} if self.grace_steps else {}),
                **({"smooth": self.smooth, "smooth_by": self.smooth_by}
                   if self.smooth != 1 else {})}


class _Rung:
    """The values recorded at one rung, counted, and where the promotion cut lies; by uid while
    in flight.

    ``counts`` maps a key to how many values have it: the value itself while the rung holds
    at most ``limit`` values, its ``value_bin`` after (for good: ``n`` never falls). ``cut`` is
    the key of the ``k``-th smallest value (k = max(n // eta, 1)) and ``below`` how many
    values have a smaller key; recording or removing one value moves them a step at most.
    """

    def __init__(self, eta: int, limit: int | None = None) -> None:
        self.eta = eta
        self.limit = EXACT_VALUES if limit is None else limit
        self.by_uid: dict[int, float] = {}
        """Values of evaluations still in flight (a re-record replaces them)."""
        self.counts: SortedDict = SortedDict()
        self.n = 0
        self.binned = False
        self.cut: Any = None
        self.below = 0

    def _key(self, value: float) -> Any:
        return value_bin(value) if self.binned else value

    @property
    def sorted(self) -> list[float]:
        """The values, smallest first (exact ones; bins as their keys once binned)."""
        return [k for k, c in self.counts.items() for _ in range(c)]

    def record(self, uid: int, value: float) -> None:
        old = self.by_uid.get(uid)
        if old is not None:
            if old == value:  # the same report again: ``finish`` re-records a live curve
                return
            self._remove(self._key(old))
        self.by_uid[uid] = value
        self.add(value)

    def add(self, value: float) -> None:
        """Count ``value`` (a finished evaluation's, from ``rebuild``, or a live one's)."""
        key = self._key(value)
        self.counts[key] = self.counts.get(key, 0) + 1
        self.n += 1
        if self.cut is not None and key < self.cut:
            self.below += 1
        if not self.binned and self.n > self.limit:
            self._bin_all()
        self._move_cut()

    def _remove(self, key: Any) -> None:
        left = self.counts[key] - 1
        self.n -= 1
        if left:
            self.counts[key] = left
        else:
            del self.counts[key]
        if key < self.cut:
            self.below -= 1
        elif key == self.cut and not left:  # the cut's key is gone: its neighbour holds it
            i = self.counts.bisect_left(key)
            if i < len(self.counts):
                self.cut = self.counts.peekitem(i)[0]
            elif self.counts:
                self.cut = self.counts.peekitem(i - 1)[0]
                self.below -= self.counts[self.cut]
            else:
                self.cut, self.below = None, 0
        self._move_cut()

    def _bin_all(self) -> None:
        binned: SortedDict = SortedDict()
        for value, count in self.counts.items():
            key = value_bin(value)
            binned[key] = binned.get(key, 0) + count
        self.counts, self.binned = binned, True
        self.cut, self.below = None, 0

    def _move_cut(self) -> None:
        counts = self.counts
        if not counts:
            self.cut, self.below = None, 0
            return
        if self.cut is None:
            self.cut, self.below = counts.peekitem(0)[0], 0
        k = max(self.n // self.eta, 1)
        while self.below >= k:
            self.cut = counts.peekitem(counts.bisect_left(self.cut) - 1)[0]
            self.below -= counts[self.cut]
        while self.below + counts[self.cut] < k:
            self.below += counts[self.cut]
            self.cut = counts.peekitem(counts.bisect_right(self.cut))[0]

    def settle(self, uid: int) -> None:
        """Evaluation ``uid`` finished: its value stays, but is never replaced again."""
        self.by_uid.pop(uid, None)

    def promotes(self, value: float) -> bool:
        """``value`` (already recorded) is in the top ``max(n // eta, 1)`` of this rung (once
        binned: at most in the bin of the ``n // eta``-th value)."""
        return math.isfinite(value) and self._key(value) <= self.cut


class ASHA:
    """Asynchronous successive halving over the evaluations of one run (see the module doc)."""

    def __init__(self, config: ASHAConfig) -> None:
        self.config = config
        self.steps = config.rungs
        self.rungs = [_Rung(config.eta) for _ in self.steps]
        self._next: dict[int, int] = {}
        """Per evaluation in flight: the index of the next rung it has not reached yet."""
        self._window: dict[int, deque[float]] = {}
        """Per evaluation in flight: its last ``smooth`` reports (non-finite as inf)."""

    def _record(self, uid: int, step: int, value: float, start: int,
                window: deque[float]) -> tuple[bool, int]:
        """Push ``value`` into ``window``; record the window's mean at every rung from
        ``start`` up to ``step``; (stop?, next rung)."""
        window.append(float(value) if math.isfinite(value) else math.inf)
        value = smoothed(window, self.config.smooth_by)
        stop, k = False, start
        while k < len(self.steps) and self.steps[k] <= step:
            self.rungs[k].record(uid, value)
            stop = stop or not self.rungs[k].promotes(value)
            k += 1
        return stop, k

    def decide(self, uid: int, step: int, value: float) -> bool:
        """True when evaluation ``uid``, reporting ``value`` after ``step`` steps, should stop."""
        window = self._window.get(uid)
        if window is None:
            window = self._window[uid] = deque(maxlen=self.config.smooth)
        stop, self._next[uid] = self._record(uid, step, value, self._next.get(uid, 0), window)
        return stop or not math.isfinite(value)

    def finish(self, uid: int, curve: Iterable[tuple[int, float]] = ()) -> None:
        """Evaluation ``uid`` ended: record its reported ``curve`` (again) and forget its progress.

        Recording the curve is a no-op for an evaluation whose reports were decided live; it
        restores the rung values of evaluations replayed from the store on ``--resume``.
        """
        k, window = 0, deque(maxlen=self.config.smooth)
        for step, value in curve:
            _, k = self._record(uid, int(step), float(value), k, window)
        self._next.pop(uid, None)
        self._window.pop(uid, None)
        for rung in self.rungs:
            rung.settle(uid)

    def restart(self, uid: int) -> None:
        """Evaluation ``uid`` is issued again and will report from step 0."""
        self._next.pop(uid, None)
        self._window.pop(uid, None)

    def counts(self) -> list[tuple[int, int]]:
        """(rung step, values recorded there) for every rung."""
        return [(s, r.n) for s, r in zip(self.steps, self.rungs)]

    def get_state(self) -> dict[str, Any]:
        """The rung values of evaluations in flight, JSON-serialisable (non-finite as None).

        Finished evaluations' values are not here (they would make every snapshot grow with
        the run): ``rebuild`` restores them from the curves log. A restored engine issues
        the evaluations in flight again; they report from step 0, replacing these values
        (and starting their smoothing windows afresh, so the windows are not saved). The
        config (rung ladder, grace period, smoothing) is, and must match on restore.
        """
        return {
            "config": self.config.describe(),
            "in_flight": [[[u, v if math.isfinite(v) else None] for u, v in r.by_uid.items()]
                          for r in self.rungs],
        }

    def set_state(self, state: dict[str, Any]) -> None:
        if state["config"] != self.config.describe():
            raise ValueError(
                f"pruner state for {state['config']} cannot restore {self.config.describe()}"
            )
        self.rungs = [_Rung(self.config.eta) for _ in self.steps]
        # Snapshots before this version held every value ("rungs"): nothing to rebuild then.
        self.needs_rebuild = "in_flight" in state
        for rung, pairs in zip(self.rungs, state.get("in_flight", state.get("rungs", []))):
            for uid, value in pairs:
                rung.record(int(uid), math.inf if value is None else float(value))
            if not self.needs_rebuild:
                rung.by_uid.clear()
        self._next.clear()
        self._window.clear()

    needs_rebuild = False
    """Set by ``set_state``: the finished evaluations' values must come from ``rebuild``."""

    def rebuild(self, uid: np.ndarray, step: np.ndarray, value: np.ndarray) -> None:
        """Add the rung values of finished evaluations from their reports (the curves log:
        one row per report, each evaluation's rows together and in order), as ``finish``
        would have recorded them: at each rung the mean of the ``smooth`` reports up to the
        first report at or past it."""
        uid, step = np.asarray(uid), np.asarray(step)
        value = smoothed_column(uid, np.asarray(value, dtype=np.float64), self.config.smooth,
                                self.config.smooth_by)
        for s, rung in zip(self.steps, self.rungs):
            at = step >= s
            _, first = np.unique(uid[at], return_index=True)
            for v in value[at][first].tolist():
                rung.add(v)
        self.needs_rebuild = False



def smoothed(window: Iterable[float], how: str = "median") -> float:
    """A window of reports reduced as the pruner records it at a rung: their median (the
    middle value, or the mean of the two middle ones), their mean (a left-to-right sum over
    the count) or their minimum. Every rung value, live, re-recorded or rebuilt, comes from here."""
    values = list(window)
    if how == "mean":
        return sum(values) / len(values)
    if how == "min":
        return min(values)
    values.sort()
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def smoothed_column(uid: np.ndarray, value: np.ndarray, k: int, how: str = "median") -> np.ndarray:
    """``smoothed`` of each row's last ``k`` reports of the same uid (itself included), for a
    curves log whose rows of one evaluation are together and in order; non-finite as inf."""
    value = np.where(np.isfinite(value), value, np.inf)
    if k == 1:
        return value
    out = np.empty_like(value)
    window: deque[float] = deque(maxlen=k)
    last = None
    for i, (u, v) in enumerate(zip(uid.tolist(), value.tolist())):
        if u != last:
            window.clear()
            last = u
        window.append(v)
        out[i] = smoothed(window, how)
    return out
