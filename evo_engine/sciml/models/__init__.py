"""Neural networks for the SciML workloads: PDEBench's U-Net and FNO, a PINN, and a small CNN."""

from evo_engine.sciml.models.activations import ACTIVATIONS, make_activation
from evo_engine.sciml.models.cnn import CNN
from evo_engine.sciml.models.fno import FNO1d
from evo_engine.sciml.models.pinn import PINN
from evo_engine.sciml.models.unet import UNet1d

__all__ = ["ACTIVATIONS", "CNN", "FNO1d", "PINN", "UNet1d", "make_activation"]
