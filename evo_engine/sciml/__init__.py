"""SciML workloads: PDEBench-compatible 1D advection data, metrics and training objectives.

Modules, one idea each:

- :mod:`~evo_engine.sciml.initial_conditions`: PDEBench's random initial conditions;
- :mod:`~evo_engine.sciml.solvers`: the exact periodic shift and PDEBench's MUSCL FV scheme;
- :mod:`~evo_engine.sciml.advection`: generate and cache HDF5 files (also a command line);
- :mod:`~evo_engine.sciml.data`: read PDEBench-layout files lazily, with strides and splits;
- :mod:`~evo_engine.sciml.metrics`: PDEBench's RMSE, nRMSE, cRMSE, bRMSE, max and fRMSE;
- :mod:`~evo_engine.sciml.training`: U-Net / FNO objectives (``train_advection``);
- :mod:`~evo_engine.sciml.pinn`: the PINN objective (``train_pinn``);
- :mod:`~evo_engine.sciml.digits`: the CNN-on-digits objective (``train_digits``).

Every objective has a ``*_test_metrics`` twin that trains the same way and also scores the test
split, for a scenario's ``finalize``.
"""

from evo_engine.sciml.advection import AdvectionRecipe, ensure_dataset, write_advection
from evo_engine.sciml.data import DataFileError, read_advection
from evo_engine.sciml.metrics import MetricAccumulator, advection_fitness, advection_metrics

__all__ = [
    "AdvectionRecipe",
    "DataFileError",
    "MetricAccumulator",
    "advection_fitness",
    "advection_metrics",
    "ensure_dataset",
    "read_advection",
    "write_advection",
]
