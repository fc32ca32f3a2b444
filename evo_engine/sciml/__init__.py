"""SciML workloads: PDEBench-compatible 1D advection data, metrics and training objectives.

Modules, one idea each:

- :mod:`~evo_engine.sciml.initial_conditions`: PDEBench's random initial conditions;
- :mod:`~evo_engine.sciml.solvers`: the exact periodic shift and PDEBench's MUSCL FV scheme;
- :mod:`~evo_engine.sciml.advection`: generate and cache HDF5 files (also a command line);
- :mod:`~evo_engine.sciml.data`: read PDEBench-layout files lazily, with strides and splits;
- :mod:`~evo_engine.sciml.metrics`: PDEBench's RMSE, nRMSE, cRMSE, bRMSE, max and fRMSE;
- :mod:`~evo_engine.sciml.training`: U-Net / FNO objectives (``train_advection``);
- :mod:`~evo_engine.sciml.pinn`: the PINN objective (``train_pinn``), Adam / L-BFGS / ENGD;
- :mod:`~evo_engine.sciml.engd`: energy natural gradient descent for PINNs;
- :mod:`~evo_engine.sciml.poisson`: a 2D Poisson PINN with a known solution (benchmarks);
- :mod:`~evo_engine.sciml.digits`: the CNN-on-digits objective (``train_digits``).

Every objective has a ``*_test_metrics`` twin that trains the same way and also scores the test
split, for a scenario's ``finalize``.
"""

from __future__ import annotations

import importlib
from typing import Any

# Exported names, imported lazily: `python -m evo_engine.sciml.advection` must not find its own
# module already imported by the package (runpy warns), and torch loads only when needed.
_EXPORTS = {
    "AdvectionRecipe": "advection",
    "ensure_dataset": "advection",
    "write_advection": "advection",
    "DataFileError": "data",
    "read_advection": "data",
    "MetricAccumulator": "metrics",
    "advection_fitness": "metrics",
    "advection_metrics": "metrics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
