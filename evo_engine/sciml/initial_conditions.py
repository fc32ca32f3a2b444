"""PDEBench's random initial conditions for 1D advection, as analytic functions of x.

The recipe (PDEBench ``init_multi`` with ``k_tot=4, num_choise_k=2``), reimplemented in numpy:

1. pick two mode indices from {1..4} per sample; a mode picked twice has its wavenumber doubled;
2. wavenumber of mode n is 2π·n·count_n / L' with L' = x_centre[-1] − x_centre[0] (1023/1024 on
   PDEBench's grid, so the IC is very slightly non-periodic), and 0 for modes not picked;
3. u0 = Σ_n amp_n·sin(k_n·x + phase_n), amp ~ U[0, 1), phase ~ U[0, 2π); the unpicked modes
   (k = 0) add a constant offset amp_n·sin(phase_n);
4. with probability 0.1, u0 ← |u0|; then u0 ← ±u0 with probability ½ each;
5. with probability 0.1, u0 is multiplied by the window ½(tanh((x − xL)/0.01) − tanh((x − xR)/0.01)).

PDEBench draws the window flag, xL and xR from one JAX key, which couples them: a windowed IC
always has xL = 0.1 + 0.35·U with U < 0.1 (so xL ∈ [0.1, 0.135)) and xR = xL + 0.45. That
coupling is reproduced by default (``jax_window=True``); ``jax_window=False`` draws
xL ~ U(0.1, 0.45), xR ~ U(0.55, 0.9) independently, as the recipe reads. The distribution
matches PDEBench's; the individual samples do not (they would need JAX's threefry generator).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WINDOW_WIDTH = 0.01
"""Transition width of the tanh window (PDEBench's ``trns``)."""


def cell_centres(nx: int, x_left: float = 0.0, x_right: float = 1.0) -> np.ndarray:
    """Return the ``nx`` cell centres of a uniform grid on [x_left, x_right] (float64)."""
    dx = (x_right - x_left) / nx
    return x_left + (np.arange(nx) + 0.5) * dx


@dataclass(frozen=True)
class InitialConditions:
    """A batch of sampled initial conditions; call it on x to evaluate u0 (``[samples, len(x)]``)."""

    wavenumber: np.ndarray  # [samples, modes], 0 for modes not picked
    amplitude: np.ndarray  # [samples, modes]
    phase: np.ndarray  # [samples, modes]
    absolute: np.ndarray  # [samples] bool: take |u0|
    sign: np.ndarray  # [samples] ±1
    windowed: np.ndarray  # [samples] bool: apply the tanh window
    window_left: np.ndarray  # [samples]
    window_right: np.ndarray  # [samples]

    def __len__(self) -> int:
        return len(self.sign)

    def __getitem__(self, index: slice | np.ndarray) -> InitialConditions:
        """Select a subset of samples (a slice or an index array)."""
        return InitialConditions(
            *(np.asarray(getattr(self, f))[index] for f in self.__dataclass_fields__)
        )

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Evaluate every sample at the points ``x`` (any shape): ``[samples, *x.shape]``, float64."""
        xs = np.asarray(x, dtype=np.float64)[np.newaxis]
        extra = (1,) * (xs.ndim - 1)
        u = np.zeros((len(self), *xs.shape[1:]))
        for n in range(self.wavenumber.shape[1]):
            k = self.wavenumber[:, n].reshape(-1, *extra)
            a = self.amplitude[:, n].reshape(-1, *extra)
            p = self.phase[:, n].reshape(-1, *extra)
            u += a * np.sin(k * xs + p)
        u = np.where(self.absolute.reshape(-1, *extra), np.abs(u), u)
        u *= self.sign.reshape(-1, *extra)
        left = self.window_left.reshape(-1, *extra)
        right = self.window_right.reshape(-1, *extra)
        mask = 0.5 * (np.tanh((xs - left) / WINDOW_WIDTH) - np.tanh((xs - right) / WINDOW_WIDTH))
        return np.where(self.windowed.reshape(-1, *extra), u * mask, u)


def sample_initial_conditions(
    samples: int,
    nx: int = 1024,
    *,
    seed: int = 2022,
    modes: int = 4,
    picks: int = 2,
    p_absolute: float = 0.1,
    p_window: float = 0.1,
    jax_window: bool = True,
) -> InitialConditions:
    """Draw ``samples`` initial conditions by PDEBench's recipe for a grid of ``nx`` cells on [0, 1].

    ``nx`` only enters through L' (the distance between the first and last cell centres), which
    PDEBench uses as the period of the sines.
    """
    if samples < 1:
        raise ValueError(f"need at least one sample, got {samples}")
    if nx < 2:
        raise ValueError(f"need nx >= 2, got {nx}")
    rng = np.random.default_rng(seed)
    xc = cell_centres(nx)
    period = xc[-1] - xc[0]
    picked = rng.integers(0, modes, size=(samples, picks))
    counts = np.zeros((samples, modes))
    for j in range(picks):
        counts[np.arange(samples), picked[:, j]] += 1
    wavenumber = 2 * np.pi * np.arange(1, modes + 1) * counts / period
    amplitude = rng.random((samples, modes))
    phase = 2 * np.pi * rng.random((samples, modes))
    absolute = rng.random(samples) < p_absolute
    sign = rng.choice(np.array([1.0, -1.0]), size=samples)
    u = rng.random(samples)
    windowed = u < p_window
    if jax_window:
        left, right = 0.1 + 0.35 * u, 0.55 + 0.35 * u
    else:
        left, right = rng.uniform(0.1, 0.45, samples), rng.uniform(0.55, 0.9, samples)
    return InitialConditions(wavenumber, amplitude, phase, absolute, sign, windowed, left, right)
