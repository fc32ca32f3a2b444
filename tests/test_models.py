"""Models: PDEBench's parameter counts, shapes, one training step each, and bad arguments."""

from __future__ import annotations

import pytest
import torch

from evo_engine.sciml.models import ACTIVATIONS, CNN, PINN, FNO1d, UNet1d, make_activation
from evo_engine.sciml.models.fno import SpectralConv1d
from evo_engine.sciml.models.pinn import advection_residual, pinn_loss


@pytest.fixture(autouse=True)
def _small_torch() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def one_step(model: torch.nn.Module, loss: torch.Tensor) -> float:
    """Take one Adam step and return how much the parameters moved."""
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    opt.zero_grad()
    loss.backward()
    opt.step()
    moved = (
        float((p.detach() - b).abs().sum()) for p, b in zip(model.parameters(), before, strict=True)
    )
    return sum(moved)


def test_pdebench_default_sizes() -> None:
    # The counts PDEBench's configurations give (complex FNO weights counted once).
    assert n_params(UNet1d()) == 2_708_673
    assert n_params(FNO1d()) == 23_937
    assert n_params(PINN()) == 8_361


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_unet_shape_and_step(depth: int) -> None:
    model = UNet1d(in_channels=10, init_features=4, depth=depth, activation="gelu")
    x = torch.randn(3, 10, 32)
    y = model(x)
    assert y.shape == (3, 1, 32)
    assert one_step(model, (y - x[:, -1:]).pow(2).mean()) > 0


def test_unet_rejects_indivisible_grid() -> None:
    with pytest.raises(ValueError, match="divisible by 16"):
        UNet1d(init_features=2)(torch.randn(1, 10, 40))


def test_fno_shape_grid_and_step() -> None:
    model = FNO1d(modes=6, width=8, initial_step=10, n_layers=2)
    x = torch.randn(3, 10, 32)
    grid = torch.linspace(0, 1, 32)
    y = model(x, grid)
    assert y.shape == (3, 1, 32)
    assert not torch.allclose(y, model(x, grid + 0.5))  # the grid is a real input
    assert one_step(model, y.pow(2).mean()) > 0


@pytest.mark.parametrize(("n", "modes"), [(258, 12), (16, 40), (15, 8)])
def test_spectral_conv_matches_fft(n: int, modes: int) -> None:
    # The truncated real transforms must equal rfft → multiply kept modes → irfft(n).
    conv = SpectralConv1d(3, 4, modes)
    x = torch.randn(2, 3, n)
    kept = min(modes, n // 2 + 1)
    spectrum = torch.zeros(2, 4, n // 2 + 1, dtype=torch.cfloat)
    spectrum[..., :kept] = torch.einsum(
        "bix,iox->box", torch.fft.rfft(x)[..., :kept], conv.weights[..., :kept]
    )
    torch.testing.assert_close(conv(x), torch.fft.irfft(spectrum, n=n), atol=1e-5, rtol=1e-4)


def test_pinn_shape_residual_and_step() -> None:
    model = PINN(width=8, depth=2, activation="tanh")
    xt = torch.rand(20, 2)
    assert model(xt).shape == (20, 1)
    assert advection_residual(model, xt, beta=4.0).shape == (20, 1)
    loss = pinn_loss(model, 4.0, xt, torch.rand(5, 2), torch.rand(5, 1), torch.rand(7, 1))
    assert one_step(model, loss) > 0


def test_pinn_residual_of_a_travelling_wave_is_zero() -> None:
    class Wave(torch.nn.Module):
        def forward(self, xt: torch.Tensor) -> torch.Tensor:
            return torch.sin(2 * torch.pi * (xt[:, :1] - 4.0 * xt[:, 1:]))

    residual = advection_residual(Wave(), torch.rand(50, 2, dtype=torch.float64), beta=4.0)
    assert residual.abs().max() < 1e-10


@pytest.mark.parametrize("layers", [1, 2, 4])
def test_cnn_shape_and_step(layers: int) -> None:
    model = CNN(channels=4, layers=layers, activation="selu", dropout=0.2)
    logits = model(torch.rand(5, 1, 8, 8))
    assert logits.shape == (5, 10)
    loss = torch.nn.functional.cross_entropy(logits, torch.arange(5))
    assert one_step(model, loss) > 0


@pytest.mark.parametrize(
    "build",
    [
        lambda: UNet1d(depth=0),
        lambda: FNO1d(modes=0),
        lambda: PINN(depth=0),
        lambda: CNN(dropout=1.0),
        lambda: CNN(activation="swish"),
    ],
)
def test_bad_arguments_raise(build) -> None:
    with pytest.raises(ValueError):
        build()


def test_every_activation_builds() -> None:
    x = torch.linspace(-2, 2, 9)
    for name in ACTIVATIONS:
        assert make_activation(name)(x).shape == x.shape
