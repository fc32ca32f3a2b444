"""Hyperparameter importance: permutation importance of a random forest, cross-validated.

The one importance measure ``analyze`` shows. Definition:

- A random forest (scikit-learn, 100 trees, leaves of at least 2) learns the fitness *rank*
  (0 = best, 1 = worst) of the complete evaluations from their parameters (log parameters in
  log space, a categorical as its choice index, an inactive conditional parameter as a value
  below its range). Ranks keep a few huge fitness values from dominating.
- The evaluations are split into ``FOLDS`` (5) folds. For each fold, a forest fitted on the
  other four predicts the held-out fold: the pooled held-out predictions give the
  **cross-validated R²**, how much of the rank variance the forest explains on evaluations
  it did not see.
- A parameter's drop is ``sklearn.inspection.permutation_importance`` on each held-out fold
  (scoring R², 5 shuffles): how much held-out R² the forest loses when that parameter's
  column is shuffled, averaged over the folds. Drops do not add up to anything (shuffling
  makes predictions worse than the mean, so one drop can exceed the R² and even 1; parameters
  that act together each lose the shared part), so the bars show each parameter's **share**
  of the summed drops (negative drops, which are noise, count as 0): shares add up to 100 %.
  The error bar is the standard deviation of the share over the 5 folds.

When the cross-validated R² is below ``MIN_R2`` (0.2) the forest explains (almost) nothing,
so no importance can be read from it: ``importance`` then says why and draws nothing, and
the same below ``MIN_EVALUATIONS`` complete evaluations (a 5-fold split needs 4 a fold).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evo_engine.store.reader import Run

FOLDS = 5
MIN_EVALUATIONS = 20
"""Complete evaluations needed: 5 folds of at least 4."""
MIN_R2 = 0.2
"""Cross-validated R² below which the forest is taken to explain nothing."""
N_TREES = 100
N_REPEATS = 5

DEFINITION = ("share of the summed permutation importances (drop in held-out R² of a random "
              "forest on fitness ranks when the parameter is shuffled, 5-fold cross-validation)")


@dataclass(frozen=True)
class Importance:
    """Per parameter: its share of the summed drops in held-out R² (mean over the folds)."""

    names: list[str]
    drops: np.ndarray
    """(folds, parameters): the drop in held-out R² per fold when the parameter is shuffled."""
    n: int
    """Complete evaluations the forests learnt from."""
    cv_r2: float
    """Cross-validated R² (pooled held-out predictions): how much of the rank variance the
    forest explains."""

    @property
    def shares(self) -> np.ndarray:
        """(folds, parameters): each fold's drops clipped at 0, as fractions of their sum."""
        d = np.clip(self.drops, 0.0, None)
        total = d.sum(axis=1, keepdims=True)
        return np.divide(d, total, out=np.zeros_like(d), where=total > 0)

    @property
    def mean(self) -> np.ndarray:
        """The share of each parameter (mean over folds); the bars of importance.png."""
        return self.shares.mean(axis=0)

    @property
    def std(self) -> np.ndarray:
        return self.shares.std(axis=0)


@dataclass(frozen=True)
class NoImportance:
    """Why no importance is given (too few evaluations, or a forest that explains nothing)."""

    reason: str
    cv_r2: float | None = None


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


def importance(run: Run, n_trees: int = N_TREES, n_repeats: int = N_REPEATS,
               seed: int = 0) -> Importance | NoImportance:
    """Permutation importance per parameter, or why there is none (see the module's text)."""
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.inspection import permutation_importance
    from sklearn.model_selection import KFold

    x, names = features(run)
    f = run.fitness[run.complete]
    n = f.size
    if not names:
        return NoImportance("the run has no parameters")
    if n < MIN_EVALUATIONS:
        return NoImportance(f"{n} complete evaluations, fewer than the {MIN_EVALUATIONS} a "
                            f"{FOLDS}-fold cross-validation needs")
    y = np.argsort(np.argsort(f, kind="stable")).astype(float) / max(n - 1, 1)
    folds = KFold(FOLDS, shuffle=True, random_state=seed).split(x)
    pred = np.zeros(n)
    drops = np.zeros((FOLDS, len(names)))
    for k, (train, test) in enumerate(folds):
        forest = RandomForestRegressor(n_estimators=n_trees, min_samples_leaf=2,
                                       random_state=seed + k, n_jobs=1)
        forest.fit(x[train], y[train])
        pred[test] = forest.predict(x[test])
        result = permutation_importance(forest, x[test], y[test], scoring="r2",
                                        n_repeats=n_repeats, random_state=seed + k, n_jobs=1)
        drops[k] = result.importances_mean
    cv_r2 = _r2(y, pred)
    if cv_r2 < MIN_R2:
        return NoImportance(
            f"a random forest explains none of the fitness ranks on held-out evaluations "
            f"(cross-validated R² {cv_r2:.2f}, below {MIN_R2}): no importance can be read "
            f"from it", cv_r2)
    return Importance(names, drops, n, cv_r2)


def ranking(run: Run) -> list[str] | None:
    """Parameter names, most important first, or None when there is no importance."""
    imp = importance(run)
    if isinstance(imp, NoImportance):
        return None
    return [imp.names[i] for i in np.argsort(-imp.mean, kind="stable")]


__all__ = ["DEFINITION", "FOLDS", "MIN_EVALUATIONS", "MIN_R2", "Importance", "NoImportance",
           "features", "importance", "ranking"]
