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
