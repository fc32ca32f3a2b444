"""evo_engine: asynchronous, MPI-based evolutionary hyperparameter optimization."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Names are imported on first use, so `python -m evo_engine` can install its signal handlers
# before numpy, zarr and torch are loaded (see evo_engine.job.startup).
_LAZY = {
    "Candidate": "evo_engine.optimizer",
    "Optimizer": "evo_engine.optimizer",
    "Categorical": "evo_engine.space",
    "Float": "evo_engine.space",
    "Int": "evo_engine.space",
    "Space": "evo_engine.space",
    "SpaceError": "evo_engine.space",
}

if TYPE_CHECKING:
    from evo_engine.optimizer import Candidate, Optimizer
    from evo_engine.space import Categorical, Float, Int, Space, SpaceError


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'evo_engine' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "Candidate",
    "Categorical",
    "Float",
    "Int",
    "Optimizer",
    "Space",
    "SpaceError",
    "__version__",
]
