"""A small convolutional classifier for little images such as scikit-learn's 8×8 digits."""

from __future__ import annotations

import torch
from torch import nn

from evo_engine.sciml.models.activations import make_activation


class CNN(nn.Module):
    """Conv classifier: ``layers`` blocks of 3×3 conv → activation (+ pooling), dropout, linear.

    Channels double every block from ``channels`` (capped at 8× to keep deep nets small); a 2×2
    max pool follows each of the first blocks while the image is at least 4 pixels wide, so an
    8×8 input is pooled at most twice.
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 10,
        channels: int = 16,
        layers: int = 2,
        activation: str = "relu",
        dropout: float = 0.0,
        image_size: int = 8,
    ) -> None:
        super().__init__()
        if layers < 1 or channels < 1:
            raise ValueError(f"CNN needs layers, channels >= 1, got {layers}, {channels}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"CNN needs 0 <= dropout < 1, got {dropout}")
        blocks: list[nn.Module] = []
        c_in, size = in_channels, image_size
        for i in range(layers):
            c_out = channels * 2 ** min(i, 3)
            blocks += [
                nn.Conv2d(c_in, c_out, kernel_size=3, padding=1),
                make_activation(activation),
            ]
            if size >= 4:
                blocks.append(nn.MaxPool2d(2))
                size //= 2
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(c_in * size * size, n_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits ``[batch, n_classes]`` for images ``[batch, in_channels, h, w]``."""
        return self.head(self.features(x))
