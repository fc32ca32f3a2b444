"""Solvers for u_t + β u_x = 0 on a periodic unit interval: the exact shift and PDEBench's FV scheme.

``exact_solution`` evaluates the analytic initial condition at (x − βt) mod 1: exact, fast, the
default for generated data. ``finite_volume_solution`` is PDEBench's scheme, vectorised over
samples in torch so it also runs on a GPU: cell averages with two periodic ghost cells per side,
MUSCL reconstruction with the monotonized-central limiter (α = 2), the upwind (Rusanov) flux,
midpoint predictor–corrector time stepping and dt = CFL·dx/|β| with CFL 0.4, clipped to land on
every save time. It is second order for smooth data and costs about 2·|β|·T/(CFL·dx) flux
evaluations per sample (≈ 41,000 for PDEBench's β = 4, nx = 1024).
"""

from __future__ import annotations

import numpy as np
import torch

from evo_engine.sciml.initial_conditions import InitialConditions


def exact_solution(
    initial: InitialConditions, x: np.ndarray, t: np.ndarray, beta: float
) -> np.ndarray:
    """Return u(x, t) = u0((x − βt) mod 1) for every sample: ``[samples, len(t), len(x)]``, float64."""
    x = np.asarray(x, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    return initial(np.mod(x[np.newaxis, :] - beta * t[:, np.newaxis], 1.0))


def _mc_slope(u: torch.Tensor) -> torch.Tensor:
    """Monotonized-central limited slope of the interior cells of a ghost-padded array."""
    left = u[:, 1:-1] - u[:, :-2]
    right = u[:, 2:] - u[:, 1:-1]
    centre = 0.5 * (u[:, 2:] - u[:, :-2])
    same_sign = 0.5 * (1.0 + torch.sign(left * right))
    return (
        torch.sign(centre)
        * same_sign
        * torch.minimum(2.0 * torch.minimum(left.abs(), right.abs()), centre.abs())
    )


def _flux_divergence(u: torch.Tensor, beta: float, second_order: bool) -> torch.Tensor:
    """Return F_{j+½} − F_{j−½} for every cell of the periodic field ``u`` ``[samples, nx]``."""
    padded = torch.cat((u[:, -2:], u, u[:, :2]), dim=1)
    centre = padded[:, 1:-1]  # cells −1 .. nx, the ones that touch an interface of a real cell
    slope = _mc_slope(padded) if second_order else torch.zeros_like(centre)
    face_left = centre - 0.5 * slope
    face_right = centre + 0.5 * slope
    # Interface between cell j (its right face) and cell j+1 (its left face).
    u_minus, u_plus = face_right[:, :-1], face_left[:, 1:]
    flux = 0.5 * (beta * u_minus + beta * u_plus - abs(beta) * (u_plus - u_minus))
    return flux[:, 1:] - flux[:, :-1]


@torch.no_grad()
def finite_volume_solution(
    u0: torch.Tensor | np.ndarray,
    beta: float,
    save_times: np.ndarray,
    *,
    dx: float | None = None,
    cfl: float = 0.4,
    second_order: bool = True,
) -> torch.Tensor:
    """Advance the cell averages ``u0`` ``[samples, nx]`` and return the frames at ``save_times``.

    ``save_times`` must start at 0 and increase; the result is ``[samples, len(save_times), nx]``
    on ``u0``'s device and in its dtype (float32 like PDEBench, or float64 for convergence
    studies). ``dx`` defaults to 1/nx.
    """
    u = torch.as_tensor(u0)
    if u.ndim != 2:
        raise ValueError(f"u0 must be [samples, nx], got shape {tuple(u.shape)}")
    times = np.asarray(save_times, dtype=np.float64)
    if times.ndim != 1 or times.size == 0 or times[0] != 0.0 or np.any(np.diff(times) <= 0):
        raise ValueError("save_times must be increasing and start at 0")
    if dx is None:
        dx = 1.0 / u.shape[1]
    dt_max = cfl * dx / (abs(beta) + 1e-8)
    frames = [u.clone()]
    t = 0.0
    for t_save in times[1:]:
        while t_save - t > 1e-12:
            dt = min(dt_max, t_save - t)
            half = u - (0.5 * dt / dx) * _flux_divergence(u, beta, second_order)
            u = u - (dt / dx) * _flux_divergence(half, beta, second_order)
            t += dt
        t = float(t_save)  # no drift of the clock across thousands of steps
        frames.append(u.clone())
    return torch.stack(frames, dim=1)
