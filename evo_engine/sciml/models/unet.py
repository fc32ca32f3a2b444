"""A 1D U-Net that maps the last ``initial_step`` frames of a field to the next frame.

Follows PDEBench's ``UNet1d`` (itself adapted from mateuszbuda's brain-segmentation U-Net):
blocks of Conv1d(k=3, bias=False) → BatchNorm1d → activation, twice; an encoder of ``depth``
levels with f, 2f, 4f, ... channels and max pooling; a bottleneck of f·2^depth channels; a decoder
of transposed convolutions, skip concatenation and blocks; and a 1×1 convolution head. With the
defaults (10 input frames, f = 32, depth 4, tanh) it has the same 2,708,673 parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from evo_engine.sciml.models.activations import make_activation


def _block(c_in: int, c_out: int, activation: str) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm1d(c_out),
        make_activation(activation),
        nn.Conv1d(c_out, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm1d(c_out),
        make_activation(activation),
    )


class UNet1d(nn.Module):
    """U-Net on ``[batch, in_channels, nx]``; returns ``[batch, out_channels, nx]``.

    ``in_channels`` is the number of input frames times the number of field channels (10 for
    PDEBench's advection setup). ``nx`` must be divisible by ``2**depth``.
    """

    def __init__(
        self,
        in_channels: int = 10,
        out_channels: int = 1,
        init_features: int = 32,
        depth: int = 4,
        activation: str = "tanh",
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"UNet1d needs depth >= 1, got {depth}")
        if init_features < 1:
            raise ValueError(f"UNet1d needs init_features >= 1, got {init_features}")
        self.depth = depth
        widths = [init_features * 2**level for level in range(depth + 1)]
        self.encoders = nn.ModuleList()
        c_in = in_channels
        for w in widths[:-1]:
            self.encoders.append(_block(c_in, w, activation))
            c_in = w
        self.pool = nn.MaxPool1d(kernel_size=2, stride=2)
        self.bottleneck = _block(widths[-2], widths[-1], activation)
        self.upconvs = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in reversed(range(depth)):
            self.upconvs.append(
                nn.ConvTranspose1d(widths[level + 1], widths[level], kernel_size=2, stride=2)
            )
            self.decoders.append(_block(2 * widths[level], widths[level], activation))
        self.head = nn.Conv1d(widths[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predict the next frame(s) from ``x`` of shape ``[batch, in_channels, nx]``."""
        if x.shape[-1] % 2**self.depth:
            raise ValueError(
                f"UNet1d with depth {self.depth} needs nx divisible by {2**self.depth}, "
                f"got nx={x.shape[-1]}"
            )
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for upconv, decoder, skip in zip(self.upconvs, self.decoders, reversed(skips), strict=True):
            x = decoder(torch.cat((upconv(x), skip), dim=1))
        return self.head(x)
