"""Activation functions by name, so search spaces can hold them as categorical strings."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
}

ACTIVATIONS: tuple[str, ...] = tuple(_ACTIVATIONS)
"""Names accepted by :func:`make_activation`."""


def make_activation(name: str) -> nn.Module:
    """Build a fresh activation module from its name (``"tanh"``, ``"gelu"``, ...)."""
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}"
        ) from None
