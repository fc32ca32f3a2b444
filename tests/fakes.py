"""Stand-ins shared by the SciML tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class FakeContext:
    """The attributes an objective may use, recording what it reports."""

    seed: int = 0
    device: str = "cpu"
    cache: dict = field(default_factory=dict)
    scratch_dir: Path = Path(".")
    reports: list = field(default_factory=list)
    stop_after: int | None = None

    def report(self, step: int, value: float) -> None:
        self.reports.append((step, value))

    def should_stop(self) -> bool:
        return self.stop_after is not None and len(self.reports) >= self.stop_after


def tiny_advection_task(epochs: int = 2, **changes):
    """An advection task small enough to train in a second: 30 trajectories at 32 × 14."""
    from evo_engine.sciml.advection import AdvectionRecipe
    from evo_engine.sciml.training import PDEBENCH_DEFAULTS, AdvectionTask

    defaults = {**PDEBENCH_DEFAULTS, "init_features": 4, "unet_depth": 2, "batch_size": 8,
                "width": 8, "modes": 4}
    fields = dict(recipe=AdvectionRecipe(samples=30, nx=32, nt=14), nx=32, nt=14, epochs=epochs,
                  unroll_step=2, eval_batch_size=4, defaults=defaults)
    return AdvectionTask(**{**fields, **changes})
