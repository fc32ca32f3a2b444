"""Configurations evaluated more than once: their mean and spread, for ``analyze``.

A run never evaluates a configuration twice by accident (``evo_engine.search.dedupe``); with the
scenario's ``repeats`` switch it re-evaluates promising ones with fresh seeds, so seed luck can
be told apart from a good configuration. This groups the evaluation log by the decoded
parameters (the same identity the engine uses) and summarises every group of two or more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from evo_engine.search.estimate import make_estimate
from evo_engine.store.reader import Run, configuration_rows


@dataclass
class ConfigurationStats:
    """One configuration evaluated more than once."""

    uid: int
    """uid of its first evaluation."""
    params: dict[str, Any]
    evaluations: int
    """All its evaluations, failed and pruned ones included."""
    complete: int
    mean: float
    std: float
    """Sample standard deviation over the complete evaluations (NaN with fewer than two)."""
    best: float
    worst: float


def _scalar(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def repeated_configurations(run: Run) -> list[ConfigurationStats]:
    """Every configuration with two or more evaluations, best mean first (no complete one last)."""
    ev = run.evaluations
    complete, fitness = run.complete, run.fitness
    out = []
    for rows in configuration_rows(run).values():
        if len(rows) < 2:
            continue
        idx = np.asarray(rows)
        first = int(idx[np.argmin(ev["uid"][idx])])
        ok = fitness[idx][complete[idx]]
        # The engine's own summary of a configuration (search.estimate): one mean, one std.
        est = make_estimate("", int(ev["uid"][first]), ok.tolist()) if ok.size else None
        out.append(ConfigurationStats(
            uid=int(ev["uid"][first]),
            params={p: _scalar(ev[f"params/{p}"][first]) for p in run.param_names
                    if f"params/{p}" in ev},
            evaluations=len(rows),
            complete=int(ok.size),
            mean=est.mean if est else float("nan"),
            std=est.std if est else float("nan"),
            best=est.best_draw if est else float("nan"),
            worst=float(ok.max()) if ok.size else float("nan"),
        ))
    out.sort(key=lambda s: (not s.complete, s.mean if s.complete else 0.0, s.uid))
    return out


def format_repeats(run: Run, top: int = 10) -> str | None:
    """The ``analyze`` section on repeated configurations; None when there is none."""
    stats = repeated_configurations(run)
    if not stats:
        return None
    from evo_engine.analysis.summary import fmt_value
    from evo_engine.util import terminal

    distinct = len(configuration_rows(run))
    extra = sum(s.evaluations - 1 for s in stats)
    params = list(stats[0].params)
    header = ["uid", "evals", "mean", "std", "best", "worst", *params]
    rows = [[str(s.uid), f"{s.complete}/{s.evaluations}", fmt_value(s.mean), fmt_value(s.std),
             fmt_value(s.best), fmt_value(s.worst), *(fmt_value(s.params[p]) for p in params)]
            for s in stats[:top]]
    lines = [
        *terminal.wrap(
            f"repeated configurations: {len(stats)} of {distinct} distinct were evaluated more "
            f"than once ({extra} extra evaluations); fitness over their complete evaluations "
            f"(evals = complete/all), best mean first:", terminal.width()),
        *terminal.table(header, rows, keep=6, cols=terminal.width())[0],
    ]
    if len(stats) > top:
        lines.append(f"  ... and {len(stats) - top} more (--top N shows more)")
    return "\n".join(lines)


__all__ = ["ConfigurationStats", "format_repeats", "repeated_configurations"]
