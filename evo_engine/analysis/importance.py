"""Hyperparameter importance with uncertainty: permutation importance of a random forest.

A random forest (scikit-learn) learns fitness *ranks* from the parameters of the complete
evaluations (log parameters in log space, a categorical as its choice index, an inactive
conditional parameter as -1, a value no active one takes). A parameter's importance is how
much the forest's out-of-bag R² drops when that parameter's column is shuffled: the share of
the explained rank variance that needs it. Each of ``n_boot`` bootstrap resamples of the
evaluations fits its own forest and scores it on the rows it did not see, so the spread over
resamples is an honest uncertainty (a 90 % interval by default). Unlike a per-parameter
effect size, the forest sees interactions and is not fooled by one parameter's values
tracking another's (which is what a search concentrating on a region does).

Fewer than ``max(MIN_EVALUATIONS, 10 x parameters)`` complete evaluations draw a warning:
the intervals are then wide and the ranking not to be trusted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evo_engine.store.reader import Run

MIN_EVALUATIONS = 30


@dataclass(frozen=True)
class Importance:
    """Per parameter: the mean importance and its interval over bootstrap resamples."""

    names: list[str]
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    n: int
    """Complete evaluations the forest learnt from."""
    oob_r2: float
    """Out-of-bag R² of the forests (mean): how much of the rank variance they explain."""
    level: float

    @property
    def enough(self) -> bool:
        return self.n >= minimum_count(len(self.names))

    def warning(self) -> str | None:
        parts = []
        if not self.enough:
            parts.append(f"only {self.n} complete evaluations for {len(self.names)} parameters "
                         f"(fewer than {minimum_count(len(self.names))}): importances are rough")
        if self.oob_r2 < 0.1:
            parts.append(f"the forest predicts fitness ranks no better than their mean (R² "
                         f"{self.oob_r2:.2f}): no importance can be read from it")
        return "\n".join(parts) or None


def minimum_count(n_params: int) -> int:
    return max(MIN_EVALUATIONS, 10 * n_params)


def features(run: Run) -> tuple[np.ndarray, list[str]]:
    """The complete evaluations' parameters as a numeric matrix (rows) and the names."""
    from evo_engine.analysis.plots import param_values

    ok = run.complete
    names = [p for p in run.param_names if f"params/{p}" in run.evaluations]
    cols = []
    for name in names:
        v, _ = param_values(run, name)
        v = v[ok].astype(float)
        if run.is_log(name):
            with np.errstate(invalid="ignore", divide="ignore"):
                v = np.log10(v)
        finite = np.isfinite(v)
        sentinel = (np.nanmin(v) - 1.0 - (np.nanmax(v) - np.nanmin(v))) if finite.any() else -1.0
        cols.append(np.where(finite, v, sentinel))
    return (np.column_stack(cols) if cols else np.zeros((int(ok.sum()), 0))), names


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    ss = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float(((y - pred) ** 2).sum()) / ss if ss > 0 else 0.0


def importance(run: Run, n_boot: int = 20, n_trees: int = 100, level: float = 0.9,
               seed: int = 0) -> Importance | None:
    """Permutation importance per parameter with bootstrap intervals; None below 8 rows."""
    from sklearn.ensemble import RandomForestRegressor

    x, names = features(run)
    f = run.fitness[run.complete]
    n = f.size
    if n < 8 or not names:
        return None
    y = np.argsort(np.argsort(f, kind="stable")).astype(float) / max(n - 1, 1)
    rng = np.random.default_rng(seed)
    scores = np.zeros((n_boot, len(names)))
    r2s = []
    for b in range(n_boot):
        idx = rng.integers(0, n, n)
        oob = np.setdiff1d(np.arange(n), idx)
        if oob.size < 3:
            oob = np.arange(n)
        forest = RandomForestRegressor(n_estimators=n_trees, min_samples_leaf=2,
                                       random_state=int(rng.integers(2**31)), n_jobs=1)
        forest.fit(x[idx], y[idx])
        base = _r2(y[oob], forest.predict(x[oob]))
        r2s.append(base)
        for j in range(len(names)):
            shuffled = x[oob].copy()
            drops = []
            for _ in range(3):
                shuffled[:, j] = rng.permutation(x[oob, j])
                drops.append(base - _r2(y[oob], forest.predict(shuffled)))
            scores[b, j] = float(np.mean(drops))
    q = (1 - level) / 2
    return Importance(names, scores.mean(axis=0), np.quantile(scores, q, axis=0),
                      np.quantile(scores, 1 - q, axis=0), n, float(np.mean(r2s)), level)


__all__ = ["MIN_EVALUATIONS", "Importance", "features", "importance", "minimum_count"]
