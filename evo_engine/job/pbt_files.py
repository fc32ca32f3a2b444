"""Deleting population-based training checkpoints that no future interval can load.

The engine (``search/pbt.py``) says which checkpoints no member holds any more, with the number
of results it had been told then. A file goes only once a snapshot covers that many results:
before, a crash could bring back the interval that loads it (replay re-creates the engine
only from what the store holds). Deletion runs on the recorder's thread, as snapshots land,
never on the coordinator's loop.

Disk bound: one checkpoint per member (the one it holds) and the best interval's, plus one
being written per interval in flight, plus those released since the last snapshot (at most
three per result: the one a finished interval replaces, the former best, and the one an
exploit lets go), so at most ``2 · islands · population_size + 1 + 3 · checkpoint_every``
files, whatever the run's length. A crash can leave released
files behind; the next job deletes every file no member holds before it starts (``sweep``).
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

from evo_engine.context import CHECKPOINTS, checkpoint_file
from evo_engine.search.engine import Engine

_NAME = re.compile(r"uid-(\d+)\.pt")


class CheckpointSweeper:
    """Collects released checkpoints on the coordinator's loop; deletes them as snapshots land."""

    def __init__(self, engine: Engine, scratch_root: Path) -> None:
        self.engine = engine
        self.scratch_root = scratch_root
        self._pending: list[tuple[int, int]] = []
        self._lock = threading.Lock()
        self.deleted = 0

    def collect(self) -> None:
        """Take what the engine released (the coordinator's thread, after a result)."""
        if self.engine.pbt is None:
            return
        released = self.engine.pbt.drain_released()
        if released:
            with self._lock:
                self._pending.extend(released)

    def durable(self, results: int) -> None:
        """A snapshot covering ``results`` results is on disk: delete what they released."""
        with self._lock:
            now = [uid for uid, told in self._pending if told <= results]
            self._pending = [(u, t) for u, t in self._pending if t > results]
        for uid in now:
            checkpoint_file(self.scratch_root, uid).unlink(missing_ok=True)
            self.deleted += 1

    def sweep(self) -> int:
        """Delete every checkpoint file no member holds (at the start of a resumed job)."""
        if self.engine.pbt is None:
            return 0
        folder = self.scratch_root / CHECKPOINTS
        if not folder.is_dir():
            return 0
        live = self.engine.pbt.live()
        self.engine.pbt.drain_released()  # replay's releases: covered by this sweep
        n = 0
        for path in folder.iterdir():
            m = _NAME.fullmatch(path.name)
            interrupted = m is None and path.name.endswith(".tmp")  # a save a kill cut short
            if interrupted or (m is not None and int(m.group(1)) not in live):
                path.unlink(missing_ok=True)
                n += 1
        return n
