"""Time limits: ``--max-time`` and the SLURM job's end, turned into stop requests.

An evaluation is started only if, judged by the durations observed so far, it can finish
before the limit less a safety margin (time to write the last snapshot and exit). At the
margin itself, whatever is still running is abandoned to the next job (``--resume``).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from collections import deque
from collections.abc import Mapping
from datetime import datetime

import numpy as np

from evo_engine.errors import InputError
from evo_engine.job.coordinator import StopRequest

MARGIN_ENV = "EVO_ENGINE_WALLTIME_MARGIN"
DEFAULT_MARGIN = 120.0


def slurm_end_time(env: Mapping[str, str] = os.environ) -> float | None:
    """The SLURM job's end as a Unix time, or None outside SLURM (or if it cannot be read)."""
    if "SLURM_JOB_END_TIME" in env:
        try:
            return float(env["SLURM_JOB_END_TIME"])
        except ValueError:
            return None
    job = env.get("SLURM_JOB_ID")
    if not job or shutil.which("squeue") is None:
        return None
    try:
        out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%e"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        return datetime.fromisoformat(out).timestamp()
    except (subprocess.SubprocessError, OSError, ValueError):
        return None


def walltime_margin(env: Mapping[str, str] = os.environ) -> float:
    """Seconds before the SLURM job's end at which the run stops (``EVO_ENGINE_WALLTIME_MARGIN``).

    Checked when a run starts, before its directory is touched: NaN or a negative margin
    would let SLURM kill the job at its end instead of the clean exit 3.
    """
    text = env.get(MARGIN_ENV)
    if text is None:
        return DEFAULT_MARGIN
    try:
        margin = float(text)
    except ValueError:
        margin = math.nan
    if not 0.0 <= margin < math.inf:
        raise InputError(f"{MARGIN_ENV}={text!r}: expected a number of seconds >= 0 (how long "
                         f"before the SLURM job's end the run stops; default {DEFAULT_MARGIN:g})")
    return margin


WINDOW = 1000
"""Durations the guess at the next one is taken from: the most recent ones."""
REFRESH = 32
"""Results between two recomputations of that guess (the loop checks it every turn)."""


class Deadline:
    """Decides when to stop issuing work so a job ends cleanly before ``end``."""

    def __init__(self, end: float | None, margin: float, reason: str) -> None:
        self.end = end
        self.margin = margin
        self.reason = reason
        self._durations: deque[float] = deque(maxlen=WINDOW)
        self._expected: float | None = 0.0
        self._since = 0

    @classmethod
    def for_run(cls, start: float, max_time: float | None,
                env: Mapping[str, str] = os.environ) -> Deadline:
        """The nearer of ``start + max_time`` and the SLURM end time (with its margin)."""
        candidates: list[tuple[float, float, str]] = []
        if max_time is not None:
            candidates.append((start + max_time, min(5.0, 0.05 * max_time), "max_time"))
        slurm = slurm_end_time(env)
        if slurm is not None:
            margin = walltime_margin(env)
            candidates.append((slurm, margin, "walltime"))
        if not candidates:
            return cls(None, 0.0, "")
        end, margin, reason = min(candidates, key=lambda c: c[0] - c[1])
        return cls(end, margin, reason)

    def observe(self, seconds: float) -> None:
        self._durations.append(seconds)
        self._since += 1
        # The first results move the guess most; later it is refreshed every REFRESH results.
        if self._since >= REFRESH or len(self._durations) <= REFRESH:
            self._expected = None

    def expected_duration(self) -> float:
        """A cautious guess at the next evaluation's length: the 90th percentile of the last
        WINDOW durations, recomputed at most every REFRESH results (cheap to call each turn)."""
        if self._expected is None:
            self._expected = float(np.quantile(np.fromiter(self._durations, float), 0.9))
            self._since = 0
        return self._expected

    def check(self, now: float) -> StopRequest | None:
        if self.end is None:
            return None
        limit = self.end - self.margin
        if now >= limit:
            return StopRequest(self.reason, abort=True)
        if now + self.expected_duration() > limit:
            return StopRequest(self.reason, abort=False)
        return None
