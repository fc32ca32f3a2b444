"""ENGD: exact on linear least squares, its solvers agree, its Jacobians are right."""

from __future__ import annotations

import pytest
import torch
from fakes import FakeContext
from torch import nn

from evo_engine.sciml.engd import (
    ENGD,
    Budget,
    ResidualTerm,
    advection_terms,
    check_settings,
    jacobian_matrix,
    loss_of,
    mlp_jet,
    parameters_of,
    residual_vector,
    train,
)
from evo_engine.sciml.models import PINN
from evo_engine.sciml.models.activations import ACTIVATIONS
from evo_engine.sciml.models.pinn import pinn_loss
from evo_engine.sciml.pinn import PinnTask, train_pinn
from evo_engine.sciml.poisson import PoissonTask, collocation_points, poisson_terms, train_poisson

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


class LinearModel(nn.Module):
    """Parameters w; the residual A w − b is linear in them."""

    def __init__(self, p: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(p, dtype=F64))


def linear_terms(a: torch.Tensor, b: torch.Tensor, weights: tuple[float, float]) -> list:
    def residual(params: dict, rows: torch.Tensor) -> torch.Tensor:
        return rows @ params["w"]

    half = len(a) // 2
    return [
        ResidualTerm("first", residual, a[:half], b[:half], weights[0]),
        ResidualTerm("second", residual, a[half:], b[half:], weights[1]),
    ]


@pytest.mark.parametrize("n, p", [(30, 5), (6, 20)])
@pytest.mark.parametrize("step_size", [1.0, "line_search"])
def test_one_undamped_step_solves_linear_least_squares(n: int, p: int, step_size) -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, p, generator=gen, dtype=F64)
    b = torch.randn(n, generator=gen, dtype=F64)
    weights = (1.0, 3.0)
    model = LinearModel(p)
    w0 = model.w.detach().clone()
    terms = linear_terms(a, b, weights)
    ENGD(model, terms, damping=0.0, step_size=step_size).step()
    # The weighted least-squares minimiser nearest to w0 (Gauss–Newton from w0).
    scale = torch.cat([t.scale * torch.ones(len(t.points), dtype=F64) for t in terms])
    sa, sb = scale[:, None] * a, scale * b
    expected = w0 + torch.linalg.pinv(sa) @ (sb - sa @ w0)
    assert torch.allclose(model.w.detach(), expected, atol=1e-9)
    if n < p:  # underdetermined: the residual vanishes
        with torch.no_grad():
            assert float(loss_of(terms, parameters_of(model))) < 1e-20


def small_advection(activation: str = "tanh", width: int = 6) -> tuple[PINN, list[ResidualTerm]]:
    torch.manual_seed(0)
    model = PINN(width=width, depth=2, activation=activation).to(F64)
    gen = torch.Generator().manual_seed(1)
    collocation = torch.rand(20, 2, generator=gen, dtype=F64)
    x = torch.linspace(0, 1, 8, dtype=F64)
    initial = torch.stack((x, torch.zeros_like(x)), 1)
    times = torch.rand(5, 1, generator=gen, dtype=F64)
    terms = advection_terms(model, 0.7, collocation, initial, torch.sin(6 * x), times)
    return model, terms


def test_advection_terms_are_the_pinn_loss() -> None:
    model, terms = small_advection()
    pde, initial, boundary = terms
    expected = pinn_loss(
        model, 0.7, pde.points, initial.points, initial.targets[:, None], boundary.points
    )
    assert torch.allclose(loss_of(terms, parameters_of(model)), expected, rtol=1e-12)


@pytest.mark.parametrize("damping", [1e-2, 1e-5])
def test_solvers_agree_with_a_dense_solve(damping: float) -> None:
    model, terms = small_advection()
    params = {k: v.detach() for k, v in parameters_of(model).items()}
    jac, rho = jacobian_matrix(terms, params), residual_vector(terms, params)
    assert jac.shape[0] < jac.shape[1]  # 33 residuals, 67 parameters: the Woodbury case
    gram = jac.T @ jac + damping * torch.eye(jac.shape[1], dtype=F64)
    expected = torch.linalg.solve(gram, jac.T @ rho)
    tolerance = 1e-6 * expected.norm()
    for solver in ["auto", "kernel", "gram", "cg"]:
        engd = ENGD(model, terms, damping=damping, solver=solver, cg_iterations=2000)
        d, _, _ = engd.direction(params)
        assert (d - expected).norm() < tolerance, solver


def finite_difference_jacobian(terms: list, params: dict, h: float = 1e-6) -> torch.Tensor:
    names = list(params)
    flat = torch.cat([params[k].reshape(-1) for k in names])
    columns = []
    for i in range(len(flat)):
        shifted = []
        for sign in (1.0, -1.0):
            f = flat.clone()
            f[i] += sign * h
            parts, start = {}, 0
            for k in names:
                n = params[k].numel()
                parts[k] = f[start : start + n].reshape(params[k].shape)
                start += n
            shifted.append(residual_vector(terms, parts))
        columns.append((shifted[0] - shifted[1]) / (2 * h))
    return torch.stack(columns, 1)


@pytest.mark.parametrize("problem", ["advection", "poisson"])
def test_jacobian_matches_finite_differences(problem: str) -> None:
    if problem == "advection":
        model, terms = small_advection(activation="silu", width=4)
    else:
        torch.manual_seed(0)
        model = PINN(width=5, depth=2).to(F64)
        terms = poisson_terms(model, *collocation_points(PoissonTask(interior=4, boundary=3), F64))
    params = {k: v.detach() for k, v in parameters_of(model).items()}
    fd = finite_difference_jacobian(terms, params)
    assert torch.allclose(jacobian_matrix(terms, params), fd, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_jet_matches_autograd(activation: str) -> None:
    torch.manual_seed(0)
    model = PINN(width=7, depth=3, activation=activation).to(F64)
    points = torch.randn(30, 2, dtype=F64, requires_grad=True)
    value, first, second = mlp_jet(model, parameters_of(model), points, torch.eye(2, dtype=F64), 2)
    u = model(points).squeeze(-1)
    (grad,) = torch.autograd.grad(u.sum(), points, create_graph=True)
    hess = [
        torch.autograd.grad(grad[:, i].sum(), points, retain_graph=True)[0][:, i] for i in (0, 1)
    ]
    assert torch.allclose(value, u)
    assert torch.allclose(first, grad, atol=1e-12)
    assert second is not None and torch.allclose(second, torch.stack(hess, 1), atol=1e-12)


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs", "engd"])
def test_every_method_lowers_the_loss_within_its_budget(optimizer: str) -> None:
    torch.manual_seed(0)
    model = PINN(width=8, depth=1).to(F64)
    terms = poisson_terms(model, *collocation_points(PoissonTask(interior=6, boundary=5), F64))
    with torch.no_grad():
        before = float(loss_of(terms, parameters_of(model)))
    reports: list[int] = []
    stats = train(
        model,
        terms,
        {"optimizer": optimizer, "lr": 1e-2},
        Budget(iterations=6, report_every=4),
        lambda it: reports.append(it) is not None,
    )
    assert stats["iterations"] == 6 and reports == [4, 6]
    assert stats["train_loss"] < before
    # A time budget ends training after the first iteration that overruns it.
    stats = train(model, terms, {"optimizer": optimizer}, Budget(100, seconds=1e-9))
    assert stats["iterations"] == 1


def test_settings_are_checked() -> None:
    assert check_settings({})["optimizer"] == "adam"
    with pytest.raises(ValueError, match="optimizer"):
        check_settings({"optimizer": "sgd"})
    with pytest.raises(ValueError, match="engd_step"):
        check_settings({"engd_step": "armijo"})
    with pytest.raises(ValueError, match="damping"):
        ENGD(PINN(width=2, depth=1), [], damping=-1.0)


@pytest.mark.parametrize("optimizer", ["lbfgs", "engd"])
def test_pinn_objective_trains_with_each_method(optimizer: str) -> None:
    task = PinnTask(
        beta=1.0, nx=16, nt=5, iterations=4, report_every=2, num_domain=32, num_boundary=8
    )
    ctx = FakeContext()
    params = {"width": 6, "depth": 2, "optimizer": optimizer, "engd_damping": 1e-6}
    out = train_pinn(params, ctx, task)
    assert out["fitness"] == out["val_rel_l2"] > 0 and out["val_iterations"] <= 4
    assert {"val_nrmse", "val_crmse", "val_brmse"} <= set(out)
    assert [step for step, _ in ctx.reports][:2] == [2, 4] or out["val_iterations"] < 4


def test_poisson_objective() -> None:
    task = PoissonTask(interior=6, boundary=5, evaluation=11, iterations=3, report_every=3)
    ctx = FakeContext()
    out = train_poisson({"optimizer": "engd", "width": 6}, ctx, task)
    assert out["fitness"] == out["rel_l2"] > 0 and out["n_params"] == 6 * 4 + 1
    assert [step for step, _ in ctx.reports] == [3]
