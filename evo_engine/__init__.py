"""evo_engine: asynchronous, MPI-based evolutionary hyperparameter optimization."""

from evo_engine.optimizer import Candidate, Optimizer
from evo_engine.space import Categorical, Float, Int, Space, SpaceError

__version__ = "0.1.0"

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
