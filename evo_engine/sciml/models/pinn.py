"""A physics-informed MLP u(x, t) for 1D advection, with its residual and constraint losses.

Follows PDEBench's PINN setup (DeepXDE ``FNN([2] + [40]*6 + [1], "tanh", "Glorot normal")``):
the loss is the equal-weight sum of the mean squared PDE residual u_t + β u_x, the
initial-condition misfit and the periodic-boundary misfit u(0, t) − u(1, t).
"""

from __future__ import annotations

import torch
from torch import nn

from evo_engine.sciml.models.activations import make_activation


class PINN(nn.Module):
    """MLP from ``[n, 2]`` points (x, t) to ``[n, 1]`` values of u; ``depth`` hidden layers."""

    def __init__(
        self,
        in_features: int = 2,
        out_features: int = 1,
        width: int = 40,
        depth: int = 6,
        activation: str = "tanh",
    ) -> None:
        super().__init__()
        if width < 1 or depth < 1:
            raise ValueError(f"PINN needs width, depth >= 1, got {width}, {depth}")
        layers: list[nn.Module] = []
        n_in = in_features
        for _ in range(depth):
            layers += [nn.Linear(n_in, width), make_activation(activation)]
            n_in = width
        layers.append(nn.Linear(n_in, out_features))
        self.net = nn.Sequential(*layers)
        for module in self.net:
            if isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, xt: torch.Tensor) -> torch.Tensor:
        """Evaluate u at points ``xt`` of shape ``[n, 2]`` (columns x, t)."""
        return self.net(xt)


def advection_residual(model: nn.Module, xt: torch.Tensor, beta: float) -> torch.Tensor:
    """Return u_t + β u_x at the collocation points ``xt`` (shape ``[n, 2]``), shape ``[n, 1]``."""
    xt = xt.detach().requires_grad_(True)
    u = model(xt)
    (grad,) = torch.autograd.grad(u, xt, torch.ones_like(u), create_graph=True)
    return grad[:, 1:2] + beta * grad[:, 0:1]


def pinn_loss(
    model: nn.Module,
    beta: float,
    collocation: torch.Tensor,
    initial_points: torch.Tensor,
    initial_values: torch.Tensor,
    boundary_times: torch.Tensor,
) -> torch.Tensor:
    """Equal-weight sum of the PDE, initial-condition and periodic-boundary mean squared errors.

    ``collocation`` is ``[n, 2]`` interior points, ``initial_points`` ``[m, 2]`` points at t = 0
    with values ``initial_values`` ``[m, 1]``, ``boundary_times`` ``[k, 1]`` times at which
    u(0, t) must equal u(1, t).
    """
    residual = advection_residual(model, collocation, beta)
    ic = model(initial_points) - initial_values
    zeros, ones = torch.zeros_like(boundary_times), torch.ones_like(boundary_times)
    bc = model(torch.cat((zeros, boundary_times), 1)) - model(torch.cat((ones, boundary_times), 1))
    return residual.pow(2).mean() + ic.pow(2).mean() + bc.pow(2).mean()
