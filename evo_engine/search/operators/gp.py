"""The surrogate's Gaussian process: sklearn's model ``c · Matern52(ℓ) + noise``, in numpy.

One model, two jobs, both on the coordinator's critical path (every ask of a model island):

* ``GP``: the fit at fixed hyperparameters (one Cholesky), the kriging believer's extension
  by observations in flight (a block update of that Cholesky, not a second factorisation),
  and the prediction of candidates (one kernel matrix and one triangular solve).
* ``fit_theta``: the hyperparameters by maximum marginal likelihood (L-BFGS-B, warm-started),
  with the likelihood's gradient in closed form: O(n² · features) per evaluation, where
  sklearn's ``GaussianProcessRegressor`` builds an n × n × features tensor and pays its
  kernel objects' overhead (36 ms a refit on 100 points in 10 dimensions against ~10 ms).

The parametrisation is sklearn's: ``theta`` = log of (c, ℓ_1..ℓ_F, noise), targets
normalised by their mean and standard deviation (``normalize_y``), 1e-10 added to the
diagonal. ``tests/test_gp.py`` checks predictions, likelihood and gradient against sklearn.
Everything here is deterministic (no random restarts), which exact replay needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

JITTER = 1e-10
"""Added to the kernel's diagonal, as sklearn's ``alpha`` default."""
MAXITER = 50
"""L-BFGS-B iterations of a refit (it starts from the last fit's hyperparameters)."""


def scaled_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The Matern-5/2's ``r``: √5 · the distances between the rows of ``a`` and ``b``,
    already divided by ℓ (through the Gram matrix, clipped at 0)."""
    d2 = a @ b.T
    d2 *= -2.0
    d2 += (a * a).sum(1)[:, None]
    d2 += (b * b).sum(1)[None, :]
    np.maximum(d2, 0.0, out=d2)
    d2 *= 5.0
    return np.sqrt(d2, out=d2)


def matern52(a: np.ndarray, b: np.ndarray, amp: float) -> np.ndarray:
    """``amp · Matern52`` between the rows of ``a`` and ``b``, already divided by ℓ."""
    r = scaled_distance(a, b)
    e = np.exp(-r)
    # (1 + r + r²/3) · e^(-r) · amp, in place on r
    poly = r * (1.0 / 3.0)
    poly += 1.0
    poly *= r
    poly += 1.0
    poly *= e
    poly *= amp
    return poly


def _cholesky(K: np.ndarray) -> np.ndarray:
    from scipy.linalg import cholesky

    return cholesky(K, lower=True, check_finite=False)


def _solve(L: np.ndarray, B: np.ndarray, trans: str = "N") -> np.ndarray:
    from scipy.linalg import solve_triangular

    return solve_triangular(L, B, trans=trans, lower=True, check_finite=False)


class GP:
    """GP regression at fixed hyperparameters (``params`` = exp(theta): c, ℓ_1..ℓ_F, noise).

    Holds the Cholesky factor ``L`` of the training kernel and ``w = L⁻¹ z`` (z the
    normalised targets). The mean at C is ``k(C, F) L⁻ᵀ w``, cheap; the variance,
    ``c + noise − |v|²`` with ``v = L⁻¹ k(F, C)``, costs a triangular solve with a column a
    candidate, so ``sd_bound`` bounds it cheaply and ``sd_at`` is paid where the bound says it
    matters (``best_candidate``).
    """

    def __init__(
        self,
        params: np.ndarray,
        F: np.ndarray,
        z: np.ndarray,
        scale: tuple[float, float] | None = None,
    ) -> None:
        self.params = params
        self.amp, self.ls, self.noise = float(params[0]), params[1:-1], float(params[-1])
        self.mean, self.std = scale or (float(z.mean()), float(z.std()) or 1.0)
        self.A = F / self.ls
        K = matern52(self.A, self.A, self.amp)
        K.flat[:: K.shape[0] + 1] += self.noise + JITTER
        self.L = _cholesky(K)
        self.w = _solve(self.L, (z - self.mean) / self.std)
        self._alpha: np.ndarray | None = None

    @property
    def alpha(self) -> np.ndarray:
        """``K⁻¹ z = L⁻ᵀ w``: the mean at C is ``k(C, F) · alpha``."""
        if self._alpha is None:
            self._alpha = _solve(self.L, self.w, trans="T")
        return self._alpha

    def cross(self, C: np.ndarray) -> np.ndarray:
        """``k(C, F)``, the kernel between candidates and training points (len(C) × n)."""
        return matern52(C / self.ls, self.A, self.amp)

    def mean_at(self, Kc: np.ndarray) -> np.ndarray:
        """Posterior means at the candidates whose ``cross`` rows are ``Kc``."""
        return (Kc @ self.alpha) * self.std + self.mean

    def sd_at(self, Kc: np.ndarray) -> np.ndarray:
        """Posterior standard deviations (the noise included) at the candidates whose
        ``cross`` rows are ``Kc``: one triangular solve, O(n² · len(Kc))."""
        v = _solve(self.L, Kc.T)
        var = np.maximum(self.amp + self.noise - np.einsum("ij,ij->j", v, v), 1e-12)
        return np.sqrt(var) * self.std

    def sd_bound(self, Kc: np.ndarray) -> np.ndarray:
        """An upper bound of ``sd_at`` in O(n) a candidate: the variance given the one most
        correlated training point alone (more observations never raise a GP's variance),
        ``c + noise − max_j k(x, x_j)² / (c + noise)``. Widened against the rounding of
        ``sd_at``'s ``c + noise − |v|²``, whose error grows with n and with c / noise (up to
        1e8 within the fit's bounds): by 1e-12 · n · (c + noise) in the variance."""
        return self.sd_bound_of(np.square(Kc).max(axis=1, initial=0.0), self.L.shape[0])

    def sd_bound_of(self, max_sq: np.ndarray, n: int) -> np.ndarray:
        """``sd_bound`` from each candidate's largest squared ``cross`` entry, for a model of
        ``n`` observations (``best_candidates`` keeps both up to date as it believes its
        picks, without recomputing them)."""
        prior = self.amp + self.noise
        var = prior - max_sq / (prior + JITTER)
        var += 1e-12 * n * prior
        return np.sqrt(np.maximum(var, 1e-12)) * self.std * (1.0 + 1e-9)

    def predict(self, C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation (the noise included) at the rows of C."""
        Kc = self.cross(C)
        return self.mean_at(Kc), self.sd_at(Kc)

    def believing(self, Fp: np.ndarray) -> GP:
        """The kriging believer: the model with ``Fp`` observed at its own posterior mean.

        Such observations leave the mean where it was and shrink the variance near them.
        The Cholesky factor grows by a block, ``[[L, 0], [Bᵀ, L₂]]`` with ``B = L⁻¹ k(F, Fp)``
        and ``L₂ L₂ᵀ = k(Fp, Fp) + noise − BᵀB``, and ``w`` by zeros (each believed value
        minus its own prediction)."""
        Ap = Fp / self.ls
        B = _solve(self.L, matern52(self.A, Ap, self.amp))
        S = matern52(Ap, Ap, self.amp)
        S -= B.T @ B
        S.flat[:: S.shape[0] + 1] += self.noise + JITTER
        n, p = self.L.shape[0], Ap.shape[0]
        L = np.zeros((n + p, n + p))
        L[:n, :n] = self.L
        L[n:, :n] = B.T
        L[n:, n:] = _cholesky(S)
        out = GP.__new__(GP)
        out.params, out.amp, out.ls, out.noise = self.params, self.amp, self.ls, self.noise
        out.mean, out.std = self.mean, self.std
        out.A, out.L = np.vstack([self.A, Ap]), L
        out.w = np.concatenate([self.w, np.zeros(p)])
        out._alpha = None
        return out


CHUNK = 16
"""Candidates whose exact standard deviation ``best_candidate`` computes at a time."""


def best_candidate(
    gp: GP, C: np.ndarray, best: float, eligible: np.ndarray, score: Callable[..., np.ndarray]
) -> tuple[int, float] | None:
    """Index and score of the eligible row of C with the highest ``score(mean, sd, best)``
    (expected improvement: increasing in sd), lowest index among equals; None if none is
    eligible. ``best_candidates`` with a batch of one."""
    found = best_candidates(gp, C, best, eligible, score, 1)
    return found[0] if found else None


def best_candidates(
    gp: GP, C: np.ndarray, best: float, eligible: np.ndarray, score: Callable[..., np.ndarray],
    q: int,
) -> list[tuple[int, float]]:
    """Up to ``q`` eligible rows of C, as (index, score), picked one after another: each the
    highest ``score(mean, sd, best)`` (expected improvement: increasing in sd; lowest index
    among equals) under the model that believes the picks before it (the kriging believer:
    the mean stays, the variance shrinks next to them), so a batch spreads out as ``q`` asks
    in a row would, each seeing the ones before in flight. A row equal to a pick is not
    picked again. Fewer than ``q`` only when no eligible row is left (or the believed picks
    leave no positive variance to factor, where ``GP.believing`` would fail).

    Exact, without the exact sd of most candidates: they are visited by decreasing score at
    ``sd_bound``, and the search stops once that bound cannot beat the best found (measured
    at 4,096 workers: a median of 8 of 384 candidates needed their exact sd). A pick after
    the first costs a ``cross`` column and O(n) per visited candidate: the believed picks are
    rows of the Cholesky factor ``[[L, 0], [Bᵀ, L₂]]`` (as ``GP.believing``), and each
    candidate's ``v = L⁻¹ k(F, x)`` is kept and extended by one entry per pick, not solved
    again."""
    picker = _Picker(gp, C, best, score, q)
    eligible = eligible.copy()
    picks: list[tuple[int, float]] = []
    while len(picks) < q:
        found = picker.pick(eligible)
        if found is None:
            break
        picks.append(found)
        eligible &= (C[found[0]] != C).any(axis=1)
        if len(picks) < q and not picker.believe(found[0]):
            break
    return picks


class _Picker:
    """``best_candidates``' state: the candidates' means (fixed), ``v`` vectors computed so
    far (``V``, room for ``q - 1`` believed picks; row i valid in its first
    ``n0 + stage[i]`` entries), the believed picks' kernel columns and factor rows."""

    def __init__(self, gp: GP, C: np.ndarray, best: float,
                 score: Callable[..., np.ndarray], q: int) -> None:
        self.gp, self.best, self.score = gp, best, score
        self.Cs = C / gp.ls
        self.Kc = matern52(self.Cs, gp.A, gp.amp)
        self.mu = gp.mean_at(self.Kc)  # believed points leave the mean where it was
        self.max_sq = np.square(self.Kc).max(axis=1, initial=0.0)
        self.n0 = gp.L.shape[0]
        self.V = np.empty((C.shape[0], self.n0 + q - 1))
        self.stage = np.full(C.shape[0], -1)  # -1: v not computed
        self.cols: list[np.ndarray] = []  # k(C, p_k) of each believed pick
        self.rows: list[tuple[np.ndarray, float]] = []  # (v of p_k, its L₂ diagonal)

    def pick(self, eligible: np.ndarray) -> tuple[int, float] | None:
        """The eligible candidates by decreasing bound, exact sds a ``CHUNK`` at a time,
        until the bound cannot beat the best found."""
        bound = self.score(self.mu, self.gp.sd_bound_of(self.max_sq, self.n0 + len(self.cols)),
                           self.best)
        order = np.argsort(-bound, kind="stable")
        order = order[eligible[order]]
        pick, top = -1, -math.inf
        for start in range(0, order.size, CHUNK):
            rows = order[start : start + CHUNK]
            if bound[rows[0]] < top * (1.0 - 1e-9):  # (EI ≥ 0) a bound an ulp low still visits
                break
            exact = self.score(self.mu[rows], np.sqrt(self._var(rows)) * self.gp.std, self.best)
            for i, v in zip(rows.tolist(), exact.tolist(), strict=True):
                if v > top or (v == top and i < pick):
                    pick, top = i, v
        return None if pick < 0 else (pick, top)

    def _var(self, rows: np.ndarray) -> np.ndarray:
        """Posterior variances (the noise included, before ``std`` scaling) of the candidates
        ``rows`` under the model believing every pick so far, as ``GP.sd_at`` computes them."""
        gp, n0, k = self.gp, self.n0, len(self.cols)
        new = rows[self.stage[rows] < 0]
        if new.size:
            self.V[new, :n0] = _solve(gp.L, self.Kc[new].T).T
            self.stage[new] = 0
        for j in range(k):  # extend by the picks each row has not seen: one entry each
            behind = rows[self.stage[rows] == j]
            if behind.size:
                b, d = self.rows[j]
                self.V[behind, n0 + j] = (self.cols[j][behind]
                                          - self.V[behind, : n0 + j] @ b) / d
                self.stage[behind] = j + 1
        v = self.V[rows, : n0 + k]
        return np.maximum(gp.amp + gp.noise - np.einsum("ij,ij->i", v, v), 1e-12)

    def believe(self, i: int) -> bool:
        """Add candidate ``i`` (already visited by ``pick``, so its ``v`` is current) to the
        believed observations; False if its factor row's diagonal is not positive."""
        gp, n0, k = self.gp, self.n0, len(self.cols)
        b = self.V[i, : n0 + k].copy()
        d2 = gp.amp + gp.noise + JITTER - float(b @ b)
        if not d2 > 0.0:
            return False
        column = matern52(self.Cs, self.Cs[i : i + 1], gp.amp)[:, 0]
        self.cols.append(column)
        self.rows.append((b, math.sqrt(d2)))
        np.maximum(self.max_sq, np.square(column), out=self.max_sq)
        return True


def neg_log_marginal_likelihood(
    theta: np.ndarray, F: np.ndarray, y: np.ndarray
) -> tuple[float, np.ndarray]:
    """−log p(y | F, theta) and its gradient in theta, for already normalised targets y.

    The gradient is ½ tr((ααᵀ − K⁻¹) ∂K/∂θ) as sklearn computes it, with the length scales'
    terms contracted without the n × n × F tensor: for ``G = (ααᵀ − K⁻¹) ∘ c·5/3·(1+r)e^(−r)``
    and ``a = F/ℓ``, ``½ Σ_ij G_ij (a_id − a_jd)² = Σ_i (Σ_j G_ij) a_id² − Σ_i a_id (G a)_id``.
    A kernel that is not positive definite gives (inf, 0), sklearn's (−inf, 0)."""
    p = np.exp(theta)
    amp, ls, noise = float(p[0]), p[1:-1], float(p[-1])
    a = F / ls
    n = F.shape[0]
    r = scaled_distance(a, a)
    e = np.exp(-r)
    M = (1.0 + r + r * r / 3.0) * e  # the Matern, amplitude 1
    K = amp * M
    K.flat[:: n + 1] += noise + JITTER
    try:
        L = _cholesky(K)
    except np.linalg.LinAlgError:
        return math.inf, np.zeros_like(theta)
    from scipy.linalg import cho_solve

    alpha = cho_solve((L, True), y, check_finite=False)
    nll = 0.5 * float(y @ alpha) + float(np.log(np.diag(L)).sum()) + 0.5 * n * math.log(2 * math.pi)
    inner = np.outer(alpha, alpha)
    inner -= cho_solve((L, True), np.eye(n), check_finite=False)
    grad = np.empty_like(theta)
    grad[0] = 0.5 * float((inner * M).sum()) * amp
    grad[-1] = 0.5 * float(np.trace(inner)) * noise
    G = inner * (amp * 5.0 / 3.0) * (1.0 + r) * e
    grad[1:-1] = G.sum(1) @ (a * a) - np.einsum("id,id->d", a, G @ a)
    return nll, -grad


def fit_theta(
    theta0: np.ndarray, bounds: np.ndarray, F: np.ndarray, z: np.ndarray
) -> np.ndarray:
    """Hyperparameters maximising the marginal likelihood of ``z`` (normalised as
    ``normalize_y`` does) at F, by L-BFGS-B from ``theta0`` within ``bounds`` (log space)."""
    from scipy.optimize import minimize

    std = float(z.std()) or 1.0
    y = (z - float(z.mean())) / std
    res = minimize(
        neg_log_marginal_likelihood,
        np.asarray(theta0, dtype=np.float64),
        args=(F, y),
        method="L-BFGS-B",
        jac=True,
        bounds=bounds,
        options={"maxiter": MAXITER},
    )
    return np.asarray(res.x, dtype=np.float64)


__all__ = [
    "GP", "best_candidate", "best_candidates", "fit_theta", "matern52",
    "neg_log_marginal_likelihood",
]
