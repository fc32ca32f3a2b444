"""Energy natural gradient descent (ENGD) for PINNs, and a training loop for Adam, L-BFGS or ENGD.

A PINN loss is a weighted sum of mean squared residuals, L(θ) = Σ_k w_k / n_k Σ_i r_k(θ, x_i)²
(PDE interior, initial condition, boundary). Stack the scaled residuals ρ = (√(w_k/n_k) r_k)
so that L = ‖ρ‖², and let J = ∂ρ/∂θ (one row per collocation point, one column per parameter).
The Gram matrix G = JᵀJ is the energy inner product of the tangent functions ∂u/∂θ_i seen
through the PDE operator and the boundary/initial operators (Müller & Zeinhofer, ICML 2023), and
ENGD steps

    θ ← θ − η (G + λI)⁻¹ Jᵀρ = θ − η (2G + 2λI)⁻¹ ∇L

(the Gauss–Newton matrix of L is 2G), i.e. a damped Gauss–Newton / Levenberg–Marquardt step:
with η = 1, λ = 0 (then G⁺, the pseudo-inverse) it minimises the linearised residual exactly,
so one step solves a linear least-squares problem. The solve is exact and takes the cheaper side:

- ``kernel`` (Woodbury), for fewer residuals N than parameters P: (G + λI)⁻¹Jᵀρ = Jᵀ(JJᵀ + λI)⁻¹ρ,
  an N × N system;
- ``gram``: the P × P system (G + λI) d = Jᵀρ;
- ``cg``: conjugate gradients on (G + λI) d = Jᵀρ with Jacobian–vector products only (J is
  never formed), for networks whose Jacobian would not fit in memory.

The dense systems are solved by Cholesky, falling back to a symmetric eigendecomposition with
the pseudo-inverse's cut-off when the matrix is singular to working precision (λ = 0 or tiny).
The step size comes from a line search on the logarithmic grid η ∈ {1, 1/2, …, 2⁻³⁰} (the
ENGD papers' choice; we walk down the grid from a little above the last step's η and stop at
the first local minimum of the loss, which is the grid's argmin when the loss is unimodal along
the step, and take no step if no η lowers the loss) or is fixed. ENGD wants float64: G is
ill-conditioned. (A Kronecker-factored approximation of G for larger networks is not
implemented; the CG solver is the memory-lean option.)

:func:`train` runs any of the three methods (``optimizer`` = "adam", "lbfgs", "engd") on a list
of :class:`ResidualTerm` until an iteration or wall-clock budget ends; the PINN objectives
(:mod:`~evo_engine.sciml.pinn`, :mod:`~evo_engine.sciml.poisson`) call it.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import jacrev, vjp, vmap

Params = dict[str, torch.Tensor]
Residual = Callable[[Params, torch.Tensor], torch.Tensor]

LINE_SEARCH_GRID: tuple[float, ...] = tuple(0.5**k for k in range(31))
"""Step sizes tried by the line search: 1, 1/2, …, 2⁻³⁰, as in the ENGD papers."""

OPTIMIZERS = ("adam", "lbfgs", "engd")
SOLVERS = ("auto", "kernel", "gram", "cg")

TRAINING_DEFAULTS: dict[str, Any] = {
    "optimizer": "adam",
    "lr": 1e-3,
    "lbfgs_lr": 1.0,
    "lbfgs_history": 50,
    "lbfgs_line_search": "strong_wolfe",
    "engd_damping": 1e-8,
    "engd_step": "line_search",
    "engd_lr": 0.5,
}
"""Settings of each method: ``lr`` is Adam's (PDEBench's name), the others are prefixed."""


@functools.cache
def load_autodiff() -> None:
    """Load torch's lazily imported autodiff machinery now, outside any timed training.

    The first ``torch.func`` reverse-mode call imports ``torch._dynamo`` (seconds) and the
    first forward-mode call loads decompositions with ``torch.jit.script``, which warns that it
    is deprecated (torch 2.13); that warning is silenced here, once.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*torch.jit.script.*", category=DeprecationWarning
        )
        x = torch.zeros(1)
        torch.func.jvp(torch.sin, (x,), (torch.ones(1),))
        jacrev(torch.sin)(x)


def jvp(func: Callable[..., Any], primals: tuple, tangents: tuple) -> tuple[Any, Any]:
    """``torch.func.jvp`` (forward mode): (func(primals), its derivative along tangents)."""
    load_autodiff()
    return torch.func.jvp(func, primals, tangents)


@dataclass(frozen=True)
class ResidualTerm:
    """One part of a PINN loss: ``weight`` · mean over ``points`` of (residual − target)².

    ``residual(params, points)`` maps a batch of points ``[n, d]`` to ``[n]`` residuals and must
    treat the points independently (no batch statistics): the Jacobian is taken point by point.
    ``targets`` (``[n]``, optional) are subtracted from it, e.g. initial values.
    """

    name: str
    residual: Residual
    points: torch.Tensor
    targets: torch.Tensor | None = None
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.points.ndim != 2 or len(self.points) == 0:
            raise ValueError(f"term {self.name!r}: points must be a non-empty [n, d] tensor")
        if self.targets is not None and self.targets.shape != (len(self.points),):
            raise ValueError(
                f"term {self.name!r}: targets must have shape [n] = [{len(self.points)}]"
            )
        if not self.weight > 0:
            raise ValueError(f"term {self.name!r}: weight must be positive, got {self.weight}")

    @property
    def scale(self) -> float:
        """√(weight / n): the factor that makes this term's squared residuals sum to its loss."""
        return math.sqrt(self.weight / len(self.points))

    def values(self, params: Params) -> torch.Tensor:
        """Scaled residuals at every point, ``[n]``."""
        r = self.residual(params, self.points)
        if self.targets is not None:
            r = r - self.targets
        return self.scale * r

    def jacobian(self, params: Params) -> torch.Tensor:
        """∂ values / ∂ params, ``[n, P]`` (parameters flattened in ``params`` order)."""

        def one(p: Params, x: torch.Tensor) -> torch.Tensor:
            return self.residual(p, x[None])[0]

        rows = vmap(jacrev(one), in_dims=(None, 0))(params, self.points)
        n = len(self.points)
        return self.scale * torch.cat([rows[k].reshape(n, -1) for k in params], dim=1)


_SQRT_2PI = math.sqrt(2 * math.pi)


def _activation_derivatives(
    module: nn.Module, z: torch.Tensor, order: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """σ(z), σ'(z) and (order 2) σ''(z), elementwise.

    In closed form for the activations of :mod:`evo_engine.sciml.models.activations`, by forward-mode
    autodiff for any other module.
    """
    s2: torch.Tensor | None
    if isinstance(module, nn.Tanh):
        a = torch.tanh(z)
        s1 = 1 - a * a
        s2 = -2 * a * s1
    elif isinstance(module, nn.Sigmoid):
        a = torch.sigmoid(z)
        s1 = a * (1 - a)
        s2 = s1 * (1 - 2 * a)
    elif isinstance(module, nn.SiLU):
        sig = torch.sigmoid(z)
        a = z * sig
        s1 = sig * (1 + z * (1 - sig))
        s2 = sig * (1 - sig) * (2 + z * (1 - 2 * sig))
    elif isinstance(module, nn.GELU) and module.approximate == "none":
        cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
        pdf = torch.exp(-0.5 * z * z) / _SQRT_2PI
        a = z * cdf
        s1 = cdf + z * pdf
        s2 = pdf * (2 - z * z)
    elif isinstance(module, nn.Softplus) and module.beta == 1:
        a = module(z)
        s1 = torch.sigmoid(z)
        s2 = s1 * (1 - s1)
    elif isinstance(module, (nn.ReLU, nn.LeakyReLU)):
        slope = module.negative_slope if isinstance(module, nn.LeakyReLU) else 0.0
        a = module(z)
        s1 = torch.where(z > 0, torch.ones_like(z), torch.full_like(z, slope))
        s2 = torch.zeros_like(z)
    elif isinstance(module, (nn.ELU, nn.SELU)):
        alpha, scale = (
            (float(module.alpha), 1.0)
            if isinstance(module, nn.ELU)
            else (1.6732632423543772, 1.0507009873554805)  # SELU's fixed constants
        )
        a = module(z)
        negative = scale * alpha * torch.exp(torch.clamp(z, max=0.0))
        s1 = torch.where(z > 0, torch.full_like(z, scale), negative)
        s2 = torch.where(z > 0, torch.zeros_like(z), negative)
    else:
        ones = torch.ones_like(z)

        def first(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return jvp(module, (t,), (ones,))

        if order == 1:
            a, s1 = first(z)
            s2 = None
        else:
            (a, s1), (_, s2) = jvp(first, (z,), (ones,))
    return a, s1, s2


def _sequential(model: nn.Module) -> nn.Sequential:
    net = getattr(model, "net", None)
    if not isinstance(net, nn.Sequential) or not all(
        isinstance(layer, nn.Linear) or not any(True for _ in layer.parameters()) for layer in net
    ):
        raise ValueError(
            "need a model whose .net is an nn.Sequential of Linear layers and parameter-free "
            "activations (a PINN)"
        )
    return net


def mlp_value(model: nn.Module, params: Params, points: torch.Tensor) -> torch.Tensor:
    """u at ``points`` ``[n, d]`` with the given parameters, ``[n]``.

    The functional form of ``model(points)`` for a PINN-like MLP; several times cheaper than
    ``torch.func.functional_call`` for networks this small.
    """
    a = points
    for i, layer in enumerate(_sequential(model)):
        if isinstance(layer, nn.Linear):
            a = torch.nn.functional.linear(
                a, params[f"net.{i}.weight"], params.get(f"net.{i}.bias")
            )
        else:
            a = layer(a)
    return a.squeeze(-1)


def mlp_jet(
    model: nn.Module, params: Params, points: torch.Tensor, directions: torch.Tensor, order: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """u, its first and (``order`` 2) second derivatives along ``directions`` at ``points``.

    For a model whose ``net`` is a ``Sequential`` of ``Linear`` layers and elementwise
    activations (:class:`~evo_engine.sciml.models.PINN`). Returns ``[n]``, ``[n, k]`` and ``[n, k]``
    (``None`` for order 1) for ``k`` directions ``[k, d]``. Propagating the derivatives forward
    through the layers (Taylor mode) costs a few forward passes, several times less than nested
    forward-mode autodiff.
    """
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order}")
    net = _sequential(model)
    a = points
    da = directions.to(points).expand(len(points), *directions.shape)  # [n, k, d]
    d2a = None
    for i, layer in enumerate(net):
        if isinstance(layer, nn.Linear):
            weight = params[f"net.{i}.weight"]
            bias = params.get(f"net.{i}.bias")
            a = torch.nn.functional.linear(a, weight, bias)
            da = da @ weight.T
            d2a = None if d2a is None else d2a @ weight.T
            continue
        a, s1, s2 = _activation_derivatives(layer, a, order)
        s1 = s1.unsqueeze(1)
        if order == 2:
            assert s2 is not None  # computed for order 2
            curvature = s2.unsqueeze(1) * da * da
            d2a = curvature if d2a is None else curvature + s1 * d2a
        da = s1 * da
    return a.squeeze(-1), da.squeeze(-1), None if d2a is None else d2a.squeeze(-1)


def advection_terms(
    model: nn.Module,
    beta: float,
    collocation: torch.Tensor,
    initial_points: torch.Tensor,
    initial_values: torch.Tensor,
    boundary_times: torch.Tensor,
) -> list[ResidualTerm]:
    """The advection PINN's loss as residual terms (the same loss as ``pinn_loss``).

    PDE u_t + β u_x at ``collocation`` ``[n, 2]``; u − u0 at ``initial_points`` ``[m, 2]``
    (values ``[m]`` or ``[m, 1]``); u(0, t) − u(1, t) at ``boundary_times`` ``[k, 1]``; weight 1
    each, so the loss is the sum of the three mean squares.
    """
    direction = torch.tensor([[beta, 1.0]], dtype=collocation.dtype, device=collocation.device)

    def pde(params: Params, xt: torch.Tensor) -> torch.Tensor:
        return mlp_jet(model, params, xt, direction, order=1)[1][:, 0]

    def value(params: Params, xt: torch.Tensor) -> torch.Tensor:
        return mlp_value(model, params, xt)

    def periodic(params: Params, t: torch.Tensor) -> torch.Tensor:
        zeros, ones = torch.zeros_like(t), torch.ones_like(t)
        return value(params, torch.cat((zeros, t), 1)) - value(params, torch.cat((ones, t), 1))

    return [
        ResidualTerm("pde", pde, collocation),
        ResidualTerm("initial", value, initial_points, initial_values.reshape(-1)),
        ResidualTerm("boundary", periodic, boundary_times),
    ]


def parameters_of(model: nn.Module) -> Params:
    """The model's trainable parameters by name (the tensors themselves, not copies)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def residual_vector(terms: Sequence[ResidualTerm], params: Params) -> torch.Tensor:
    """ρ: every term's scaled residuals, concatenated; the loss is ‖ρ‖²."""
    return torch.cat([term.values(params) for term in terms])


def loss_of(terms: Sequence[ResidualTerm], params: Params) -> torch.Tensor:
    """L = Σ_k weight_k · mean (residual_k − target_k)²."""
    return residual_vector(terms, params).pow(2).sum()


def jacobian_matrix(terms: Sequence[ResidualTerm], params: Params) -> torch.Tensor:
    """J = ∂ρ/∂θ, ``[N, P]``, rows in the order of :func:`residual_vector`."""
    return torch.cat([term.jacobian(params) for term in terms])


def _flatten(params: Params) -> torch.Tensor:
    return torch.cat([p.reshape(-1) for p in params.values()])


def _unflattener(params: Params) -> Callable[[torch.Tensor], Params]:
    shapes = [(name, p.shape, p.numel()) for name, p in params.items()]

    def unflatten(flat: torch.Tensor) -> Params:
        out, start = {}, 0
        for name, shape, n in shapes:
            out[name] = flat[start : start + n].reshape(shape)
            start += n
        return out

    return unflatten


def solve_spd(matrix: torch.Tensor, rhs: torch.Tensor, damping: float) -> torch.Tensor:
    """(A + λI)⁻¹ b for symmetric positive semidefinite A; the pseudo-inverse if it is singular.

    Cholesky first; if it fails (λ = 0 or too small for the working precision), an
    eigendecomposition with eigenvalues below n · eps · max eigenvalue treated as zero.
    """
    n = matrix.shape[0]
    damped = matrix.clone()
    damped.diagonal().add_(damping)
    if damping > 0:
        factor, info = torch.linalg.cholesky_ex(damped)
        if int(info) == 0:
            return torch.cholesky_solve(rhs.unsqueeze(-1), factor).squeeze(-1)
    eigenvalues, vectors = torch.linalg.eigh(damped)
    cutoff = n * torch.finfo(matrix.dtype).eps * eigenvalues.abs().max()
    inverse = torch.where(eigenvalues > cutoff, 1.0 / eigenvalues, torch.zeros_like(eigenvalues))
    return vectors @ (inverse * (vectors.T @ rhs))


def damped_least_squares(
    jacobian: torch.Tensor, residual: torch.Tensor, damping: float, solver: str = "auto"
) -> torch.Tensor:
    """d = (JᵀJ + λI)⁻¹ Jᵀρ, the minimiser of ‖J d − ρ‖² + λ‖d‖² (minimum norm if λ = 0).

    ``solver`` "kernel" solves the N × N system Jᵀ(JJᵀ + λI)⁻¹ρ (Woodbury), "gram" the P × P
    one; "auto" takes the smaller.
    """
    n, p = jacobian.shape
    if solver == "auto":
        solver = "kernel" if n < p else "gram"
    if solver == "kernel":
        return jacobian.T @ solve_spd(jacobian @ jacobian.T, residual, damping)
    if solver == "gram":
        return solve_spd(jacobian.T @ jacobian, jacobian.T @ residual, damping)
    raise ValueError(f"dense solver must be 'auto', 'kernel' or 'gram', got {solver!r}")


def conjugate_gradients(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    rhs: torch.Tensor,
    iterations: int,
    tolerance: float = 1e-10,
) -> tuple[torch.Tensor, int]:
    """Solve A x = b for symmetric positive (semi)definite A given as ``matvec``; (x, steps).

    Stops when ‖b − Ax‖ ≤ tolerance · ‖b‖ or after ``iterations`` steps. From x₀ = 0 on a
    consistent semidefinite system it converges to the minimum-norm solution.
    """
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    d = r.clone()
    rr = r @ r
    stop = (tolerance * rhs.norm()) ** 2
    for step in range(1, iterations + 1):
        if rr <= stop:
            return x, step - 1
        ad = matvec(d)
        curvature = d @ ad
        if curvature <= 0:
            return x, step - 1
        alpha = rr / curvature
        x = x + alpha * d
        r = r - alpha * ad
        rr_new = r @ r
        d = r + (rr_new / rr) * d
        rr = rr_new
    return x, iterations


@dataclass(frozen=True)
class StepInfo:
    """What one ENGD step did: the loss before and after and the step size (0: no step)."""

    loss: float
    new_loss: float
    step_size: float
    cg_steps: int = 0


class ENGD:
    """Energy natural gradient descent on a model whose loss is ``terms`` (see the module doc).

    ``step_size`` is "line_search" (the grid :data:`LINE_SEARCH_GRID`, or ``grid``) or a fixed
    positive float. ``damping`` is λ ≥ 0. ``solver`` is one of :data:`SOLVERS`; "auto" is the
    dense solve on the smaller side. The model's parameters are updated in place.
    """

    def __init__(
        self,
        model: nn.Module,
        terms: Sequence[ResidualTerm],
        *,
        damping: float = 1e-8,
        step_size: str | float = "line_search",
        grid: Sequence[float] = LINE_SEARCH_GRID,
        solver: str = "auto",
        cg_iterations: int = 200,
        cg_tolerance: float = 1e-10,
    ) -> None:
        if not damping >= 0:
            raise ValueError(f"ENGD damping must be >= 0, got {damping}")
        if step_size != "line_search" and not (
            isinstance(step_size, (int, float)) and step_size > 0
        ):
            raise ValueError(
                f"step_size must be 'line_search' or a positive number, got {step_size!r}"
            )
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
        if solver == "cg" and cg_iterations < 1:
            raise ValueError("cg_iterations must be >= 1")
        self.model = model
        self.terms = list(terms)
        self.damping = float(damping)
        self.step_size = step_size
        self.grid = torch.tensor(sorted(grid, reverse=True), dtype=torch.float64)
        if len(self.grid) == 0 or not bool((self.grid > 0).all()):
            raise ValueError("the line-search grid needs at least one positive step size")
        self._last_index = 0
        self.solver = solver
        self.cg_iterations = cg_iterations
        self.cg_tolerance = cg_tolerance

    def direction(self, params: Params) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(d, ρ, CG steps): the natural-gradient direction (G + λI)⁻¹Jᵀρ at ``params``."""
        if self.solver != "cg":
            rho = residual_vector(self.terms, params)
            jac = jacobian_matrix(self.terms, params)
            return damped_least_squares(jac, rho, self.damping, self.solver), rho, 0
        unflatten = _unflattener(params)

        def rho_of(flat: torch.Tensor) -> torch.Tensor:
            return residual_vector(self.terms, unflatten(flat))

        flat = _flatten(params)
        rho, pullback = vjp(rho_of, flat)

        def matvec(v: torch.Tensor) -> torch.Tensor:
            jv = jvp(rho_of, (flat,), (v,))[1]
            return pullback(jv)[0] + self.damping * v

        (rhs,) = pullback(rho)
        d, steps = conjugate_gradients(matvec, rhs, self.cg_iterations, self.cg_tolerance)
        return d, rho, steps

    def _line_search(
        self,
        flat: torch.Tensor,
        d: torch.Tensor,
        loss: float,
        unflatten: Callable[[torch.Tensor], Params],
    ) -> tuple[float, float]:
        """(η, loss) at the first local minimum of the loss walking down the grid.

        The walk starts two grid points (a factor 4) above the last step's η (at the top the
        first time) and stops as soon as the loss rises again after falling below ``loss``:
        along a descent direction the loss is usually unimodal in η, so this finds the grid's
        argmin (the ENGD papers' rule) in a few forward passes instead of 31. If nothing below
        the start lowers the loss, the grid points above it are tried. (0, loss) if none does.
        """
        grid = self.grid.tolist()
        start = max(self._last_index - 2, 0)
        best, best_loss = -1, loss
        for index in range(start, len(grid)):
            trial = float(loss_of(self.terms, unflatten(flat - grid[index] * d)))
            if trial < best_loss:
                best, best_loss = index, trial
            elif best >= 0:
                break
        if best < 0:
            for index in range(start):
                trial = float(loss_of(self.terms, unflatten(flat - grid[index] * d)))
                if trial < best_loss:
                    best, best_loss = index, trial
        if best < 0:
            return 0.0, loss
        self._last_index = best
        return grid[best], best_loss

    @torch.no_grad()
    def step(self) -> StepInfo:
        """Take one step; returns the losses and the step size used."""
        params = {k: v.detach() for k, v in parameters_of(self.model).items()}
        d, rho, cg_steps = self.direction(params)
        loss = float(rho.pow(2).sum())
        flat = _flatten(params)
        unflatten = _unflattener(params)
        if self.step_size == "line_search":
            eta, new_loss = self._line_search(flat, d, loss, unflatten)
            if eta == 0.0:
                return StepInfo(loss, loss, 0.0, cg_steps)
        else:
            eta = float(self.step_size)
            new_loss = math.nan  # not evaluated: a fixed step costs no extra forward pass
        steps = unflatten(d)
        for name, p in parameters_of(self.model).items():
            p.sub_(eta * steps[name])
        return StepInfo(loss, new_loss, eta, cg_steps)


# -- the training loop shared by the PINN objectives ------------------------------------------


@dataclass(frozen=True)
class Budget:
    """When training ends: after ``iterations`` steps or ``seconds`` (if set) on ``clock``.

    ``clock`` "wall" is elapsed time; "cpu" is this process's CPU time, which on a machine
    shared with other jobs measures the work done rather than the waiting.
    """

    iterations: int
    seconds: float | None = None
    report_every: int = 500
    clock: str = "wall"

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.report_every < 1:
            raise ValueError("need iterations and report_every >= 1")
        if self.seconds is not None and not self.seconds > 0:
            raise ValueError(f"seconds must be positive, got {self.seconds}")
        if self.clock not in ("wall", "cpu"):
            raise ValueError(f"clock must be 'wall' or 'cpu', got {self.clock!r}")

    def timer(self) -> Callable[[], float]:
        """Seconds since this call, on the budget's clock."""
        now = time.perf_counter if self.clock == "wall" else time.process_time
        start = now()
        return lambda: now() - start


def check_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings with defaults filled in, or a ValueError naming what is wrong."""
    s = {**TRAINING_DEFAULTS, **settings}
    if s["optimizer"] not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {s['optimizer']!r}")
    if s["engd_step"] not in ("line_search", "fixed"):
        raise ValueError(f"engd_step must be 'line_search' or 'fixed', got {s['engd_step']!r}")
    if s["lbfgs_line_search"] not in ("strong_wolfe", "none"):
        raise ValueError(
            f"lbfgs_line_search must be 'strong_wolfe' or 'none', got {s['lbfgs_line_search']!r}"
        )
    return s


def _stepper(
    model: nn.Module, terms: Sequence[ResidualTerm], s: Mapping[str, Any], solver: str
) -> Callable[[], tuple[float, bool]]:
    """One iteration of the chosen method: returns (loss before the step, converged)."""
    params = list(parameters_of(model).values())
    if s["optimizer"] == "engd":
        engd = ENGD(
            model,
            terms,
            damping=float(s["engd_damping"]),
            step_size="line_search" if s["engd_step"] == "line_search" else float(s["engd_lr"]),
            solver=solver,
        )

        def engd_step() -> tuple[float, bool]:
            info = engd.step()
            return info.loss, info.step_size == 0.0

        return engd_step

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of(terms, parameters_of(model))
        loss.backward()
        return loss

    if s["optimizer"] == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(params, lr=float(s["lr"]))
    else:
        line_search = None if s["lbfgs_line_search"] == "none" else "strong_wolfe"
        # One quasi-Newton iteration per call, so the budget is checked between iterations;
        # the curvature history persists across calls. max_eval must be given: its default
        # (max_iter · 5/4 = 1) would leave the line search a single evaluation.
        optimizer = torch.optim.LBFGS(
            params,
            lr=float(s["lbfgs_lr"]),
            max_iter=1,
            max_eval=25,
            history_size=int(s["lbfgs_history"]),
            line_search_fn=line_search,
            tolerance_grad=0.0,
            tolerance_change=0.0,
        )

    def first_order_step() -> tuple[float, bool]:
        return float(optimizer.step(closure).detach()), False

    return first_order_step


def train(
    model: nn.Module,
    terms: Sequence[ResidualTerm],
    settings: Mapping[str, Any],
    budget: Budget,
    on_report: Callable[[int], bool] | None = None,
    solver: str = "auto",
) -> dict[str, float]:
    """Train ``model`` on the loss of ``terms`` with ``settings["optimizer"]`` within ``budget``.

    ``settings`` holds the method's hyperparameters (:data:`TRAINING_DEFAULTS` fills the gaps;
    the other methods' settings are ignored). ``on_report(iteration)`` is called every
    ``budget.report_every`` iterations and at the end; it returns True to stop early. Training
    also ends when the loss stops being finite or ENGD's line search finds no lower loss.
    Returns ``iterations``, ``train_loss`` (the last loss seen) and ``train_seconds``.
    """
    s = check_settings(settings)
    load_autodiff()
    step = _stepper(model, terms, s, solver)
    elapsed = budget.timer()
    iteration, loss = 0, math.nan
    while iteration < budget.iterations:
        loss, converged = step()
        iteration += 1
        out_of_time = budget.seconds is not None and elapsed() >= budget.seconds
        done = converged or out_of_time or not math.isfinite(loss)
        done = done or iteration == budget.iterations
        report = iteration % budget.report_every == 0 or done
        if report and on_report is not None and on_report(iteration):
            break
        if done:
            break
    with torch.no_grad():
        loss = float(loss_of(terms, parameters_of(model)))
    return {
        "iterations": float(iteration),
        "train_loss": loss,
        "train_seconds": elapsed(),
    }
