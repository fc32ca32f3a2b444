"""A 1D Fourier neural operator that maps the last ``initial_step`` frames to the next frame.

Follows PDEBench's ``FNO1d`` (the Li et al. design, not neuraloperator's): a linear lifting of
the input frames plus the grid coordinate to ``width`` channels, zero padding of 2 cells on the
right, ``n_layers`` Fourier layers (spectral convolution on the lowest ``modes`` modes plus a
pointwise convolution; activation after all but the last), cropping, and a ``width → 128 → 1``
projection. Spectral weights start as complex U[0, 1)·1/(width·width), FFTs use torch's default
("backward") normalisation (computed as truncated real transforms, see ``SpectralConv1d``). With modes 12, width 20 it has 23,937 parameters (complex counted once).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from evo_engine.sciml.models.activations import make_activation


class SpectralConv1d(nn.Module):
    """Multiplies the lowest ``modes`` Fourier coefficients by learned complex weights.

    Equivalent to rfft → complex multiply of the kept modes → zero the rest → irfft(n), but the
    truncated transforms are done as real matrix products with cached cos/sin bases: the padded
    length (258) has a large prime factor, which makes FFTs on CPU several times slower.
    """

    def __init__(self, in_channels: int, out_channels: int, modes: int) -> None:
        super().__init__()
        self.modes = modes
        scale = 1.0 / (in_channels * out_channels)
        self.weights = nn.Parameter(
            scale * torch.rand(in_channels, out_channels, modes, dtype=torch.cfloat)
        )
        self._bases: dict[tuple, tuple[torch.Tensor, ...]] = {}

    def _basis(self, n: int, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        key = (n, x.device, x.dtype)
        if key not in self._bases:
            modes = min(self.modes, n // 2 + 1)
            j = torch.arange(n, dtype=torch.float64)
            k = torch.arange(modes, dtype=torch.float64)
            angle = 2 * math.pi * torch.outer(j, k) / n  # [n, modes]
            cos, sin = torch.cos(angle), torch.sin(angle)
            # irfft counts every mode twice except the mean (and Nyquist); their imaginary parts
            # drop out because sin vanishes there.
            weight = torch.full((modes,), 2.0, dtype=torch.float64)
            weight[0] = 1.0
            if n % 2 == 0 and modes > n // 2:
                weight[n // 2] = 1.0
            inv_cos, inv_sin = (cos * weight / n).T, (sin * weight / n).T
            self._bases[key] = tuple(
                b.to(device=x.device, dtype=x.dtype).contiguous()
                for b in (cos, sin, inv_cos, inv_sin)
            )
        return self._bases[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply to ``x`` of shape ``[batch, in_channels, n]``."""
        cos, sin, inv_cos, inv_sin = self._basis(x.shape[-1], x)
        modes = cos.shape[1]
        w_re, w_im = self.weights.real[..., :modes], self.weights.imag[..., :modes]
        x_re, x_im = x @ cos, -(x @ sin)  # X_k = Σ_j x_j e^{−2πi jk/n}
        y_re = torch.einsum("bix,iox->box", x_re, w_re) - torch.einsum("bix,iox->box", x_im, w_im)
        y_im = torch.einsum("bix,iox->box", x_re, w_im) + torch.einsum("bix,iox->box", x_im, w_re)
        return y_re @ inv_cos - y_im @ inv_sin


class FNO1d(nn.Module):
    """FNO on ``[batch, initial_step·num_channels, nx]``; returns ``[batch, num_channels, nx]``.

    The grid coordinate is appended as an extra input channel; pass the data's x-coordinates as
    ``grid`` (shape ``[nx]``) or let it default to the cell centres of [0, 1].
    """

    def __init__(
        self,
        num_channels: int = 1,
        modes: int = 12,
        width: int = 20,
        initial_step: int = 10,
        n_layers: int = 4,
        activation: str = "gelu",
        padding: int = 2,
    ) -> None:
        super().__init__()
        if modes < 1 or width < 1 or n_layers < 1:
            raise ValueError(
                f"FNO1d needs modes, width, n_layers >= 1, got {modes}, {width}, {n_layers}"
            )
        self.padding = padding
        self.fc0 = nn.Linear(initial_step * num_channels + 1, width)
        self.spectral = nn.ModuleList(SpectralConv1d(width, width, modes) for _ in range(n_layers))
        self.pointwise = nn.ModuleList(nn.Conv1d(width, width, 1) for _ in range(n_layers))
        self.activation = make_activation(activation)
        self.fc1 = nn.Linear(width, 128)
        self.fc2 = nn.Linear(128, num_channels)

    def forward(self, x: torch.Tensor, grid: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the next frame from ``x`` of shape ``[batch, initial_step·channels, nx]``."""
        b, _, nx = x.shape
        if grid is None:
            grid = (torch.arange(nx, device=x.device, dtype=x.dtype) + 0.5) / nx
        h = torch.cat((x.transpose(1, 2), grid.reshape(1, nx, 1).expand(b, nx, 1)), dim=-1)
        h = self.fc0(h).transpose(1, 2)
        if self.padding:
            # PDEBench pads although the data are periodic; kept so the model matches its FNO.
            h = nn.functional.pad(h, [0, self.padding])
        last = len(self.spectral) - 1
        for i, (spectral, pointwise) in enumerate(zip(self.spectral, self.pointwise, strict=True)):
            h = spectral(h) + pointwise(h)
            if i < last:
                h = self.activation(h)
        if self.padding:
            h = h[..., : -self.padding]
        h = self.activation(self.fc1(h.transpose(1, 2)))
        return self.fc2(h).transpose(1, 2)
