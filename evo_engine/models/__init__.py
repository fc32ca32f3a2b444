"""Neural networks for the SciML workloads: PDEBench's U-Net and FNO, a PINN, and a small CNN."""

from evo_engine.models.activations import ACTIVATIONS, make_activation
from evo_engine.models.cnn import CNN
from evo_engine.models.fno import FNO1d
from evo_engine.models.pinn import PINN
from evo_engine.models.unet import UNet1d

__all__ = ["ACTIVATIONS", "CNN", "FNO1d", "PINN", "UNet1d", "make_activation"]
