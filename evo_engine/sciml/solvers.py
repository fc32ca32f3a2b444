"""Solvers for u_t + β u_x = 0 on a periodic unit interval: the exact shift and PDEBench's FV scheme.

``exact_solution`` evaluates the analytic initial condition at (x − βt) mod 1: exact, fast, the
default for generated data. ``finite_volume_solution`` is PDEBench's scheme, vectorised over
samples in torch so it also runs on a GPU: cell averages with two periodic ghost cells per side,
MUSCL reconstruction with the monotonized-central limiter (α = 2), the upwind (Rusanov) flux,
midpoint predictor–corrector time stepping and dt = CFL·dx/|β| with CFL 0.4, clipped to land on
every save time. It is second order for smooth data and costs about 2·|β|·T/(CFL·dx) flux
evaluations per sample (≈ 41,000 for PDEBench's β = 4, nx = 1024).

``pdebench_finite_volume_solution`` is the same scheme as PDEBench's JAX generator runs it: the
time steps of its float32 clock (``t += dt`` in float32; at nx 1024 the state stored as t = 2 has
been integrated to t = 2 + 3.4e-4), its order of operations, XLA's fused update and flushed
denormals. With ``flux_factor=1`` it is the generator before PDEBench's commit ac1ed78
(2023-08-24, issue #46), which made the 2022 files of the NeurIPS numbers: the upwind flux lacks
its factor ½, so the data advect at 2β with an effective CFL of 0.8; with ``flux_factor=0.5`` it
is the fixed generator.
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


def _flux_divergence(
    u: torch.Tensor, beta: float, second_order: bool, scale: float = 0.5
) -> torch.Tensor:
    """Return F_{j+½} − F_{j−½} for every cell of the periodic field ``u`` ``[samples, nx]``.

    ``scale`` is the upwind flux's factor: ½ is the flux; 1 is PDEBench's pre-fix typo.
    """
    padded = torch.cat((u[:, -2:], u, u[:, :2]), dim=1)
    centre = padded[:, 1:-1]  # cells −1 .. nx, the ones that touch an interface of a real cell
    slope = _mc_slope(padded) if second_order else torch.zeros_like(centre)
    face_left = centre - 0.5 * slope
    face_right = centre + 0.5 * slope
    # Interface between cell j (its right face) and cell j+1 (its left face).
    u_minus, u_plus = face_right[:, :-1], face_left[:, 1:]
    flux = scale * (beta * u_minus + beta * u_plus - abs(beta) * (u_plus - u_minus))
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


PDEBENCH_SHOW_STEPS = 100
"""Steps PDEBench's generator takes between two checks of its save clock (``show_steps``)."""


def pdebench_schedule(
    beta: float,
    dx: float,
    dt_save: float,
    final_time: float,
    frames: int,
    *,
    cfl: float = 0.4,
    clock: type = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Replay the clock of PDEBench's generator: the time steps it takes and when it saves.

    Returns ``(steps, saved_after)``: the dt of every update it performed, and for each stored
    frame the number of updates done before it was stored. The clock is the same for every
    sample, so it is replayed once, as PDEBench computed it: dt = CFL·dx/(|β| + 1e-8), clipped to
    the next save time and to the final time, steps of dt ≤ 1e-8 skipped but still added to t,
    t and the save time advanced in ``clock`` arithmetic (float32 in PDEBench: JAX without x64),
    the save time checked every 100 steps, the last frame being the state at the end.
    ``clock=np.float64`` gives the same loop without float32 drift (for comparison only).
    """
    f = clock
    dt_cfl = f(f(dx) / (f(abs(beta)) + f(1e-8))) * f(cfl)
    t = tsave = f(0.0)
    end, save_step, tiny = f(final_time), f(dt_save), f(1e-8)
    steps: list[float] = []
    saved_after = np.full(frames, -1, dtype=np.int64)
    saved = 0
    while t < end:
        if t >= tsave:
            if saved < frames:
                saved_after[saved] = len(steps)
            tsave = f(tsave + save_step)
            saved += 1
        for _ in range(PDEBENCH_SHOW_STEPS):
            dt = min(dt_cfl, f(end - t), f(tsave - t))
            if dt > tiny:
                steps.append(float(dt))
            t = f(t + dt)
    saved_after[-1] = len(steps)  # PDEBench stores the final state in the last frame
    if np.any(saved_after < 0):
        raise ValueError(
            f"PDEBench's clock stores fewer than {frames} frames with dt_save {dt_save} "
            f"and final time {final_time}"
        )
    return np.asarray(steps, dtype=np.float64), saved_after


def _fused_update(u: torch.Tensor, coefficient: float, divergence: torch.Tensor) -> torch.Tensor:
    """u − c·div rounded once, as XLA computes it (a fused multiply-add) in PDEBench's JAX code.

    In float32 the product of two float32 numbers is exact in float64, so the float64 difference
    rounded to float32 is the fused result; without it every step differs from PDEBench's by up
    to one rounding, which the scheme at effective CFL 0.8 amplifies to ~1e-3 by t = 2.
    """
    if u.dtype != torch.float32:
        return u - coefficient * divergence
    return (u.double() - coefficient * divergence.double()).float()


@torch.no_grad()
def pdebench_finite_volume_solution(
    u0: torch.Tensor | np.ndarray,
    beta: float,
    *,
    final_time: float,
    frames: int,
    flux_factor: float,
    dx: float | None = None,
    cfl: float = 0.4,
    clock: type = np.float32,
) -> torch.Tensor:
    """The frames PDEBench's JAX generator makes from ``u0`` ``[samples, nx]``.

    ``flux_factor`` is the upwind flux's factor: 1 for the pre-fix generator (the 2022 files),
    0.5 for the fixed one. ``frames`` are stored from t = 0 to ``final_time`` every
    final_time/(frames − 1) by PDEBench's float32 clock (:func:`pdebench_schedule`). The
    arithmetic follows PDEBench's order (coefficient dt·(1/dx) first, then the flux difference,
    the update fused as XLA does), so in float32 the result agrees with PDEBench's JAX code on
    the CPU bit for bit in almost every cell (``docs/pdebench.md`` has the measured difference).
    Returns ``[samples, frames, nx]`` on ``u0``'s device and in its dtype.
    """
    u = torch.as_tensor(u0)
    if u.ndim != 2:
        raise ValueError(f"u0 must be [samples, nx], got shape {tuple(u.shape)}")
    if frames < 2:
        raise ValueError(f"need frames >= 2, got {frames}")
    if dx is None:
        dx = 1.0 / u.shape[1]
    if flux_factor not in (0.5, 1.0):
        raise ValueError(f"flux_factor is 1 (pre-fix) or 0.5 (fixed), got {flux_factor}")
    steps, saved_after = pdebench_schedule(
        beta, dx, final_time / (frames - 1), final_time, frames, cfl=cfl, clock=clock
    )
    f = clock
    dx_inv = f(1.0 / dx)
    out = torch.empty((u.shape[0], frames, u.shape[1]), dtype=u.dtype, device=u.device)
    # XLA on the CPU flushes float32 denormals to zero: where a window makes u ~1e-20, the
    # limiter's product of two slopes underflows and its sign is 0 there, not ±1. Torch's
    # default is torch's (False); it is set back when the solve ends.
    flush = u.device.type == "cpu" and torch.set_flush_denormal(True)
    try:
        done = 0
        for frame, target in enumerate(saved_after):
            for dt in steps[done:target]:
                half = float(f(f(dt) * f(0.5)) * dx_inv)
                full = float(f(dt) * dx_inv)
                u_half = _fused_update(u, half, _flux_divergence(u, beta, True, scale=flux_factor))
                u = _fused_update(u, full, _flux_divergence(u_half, beta, True, scale=flux_factor))
            done = target
            out[:, frame] = u
    finally:
        if flush:
            torch.set_flush_denormal(False)
    return out
