"""A write-ahead journal of the tasks handed to workers, so a crash can be blamed on them.

The store's task log is written by the store's writer (a child process, or a thread where
that cannot start) every ~0.25 s. An objective that
kills its worker at once (and, under ``mpiexec``, the whole job: MPICH kills every rank)
can take the job down before its task was ever logged; ``--resume`` would then re-issue
the very same task (exact replay: same uid, parameters and seed) and crash again forever.
The coordinator therefore appends ``"<job> d <uid> <digest>"`` to ``RUN_DIR/dispatched.log``
before a task goes to a worker (the digest is a CRC-32 of its genome, so the resume can tell
whether the task the engine re-creates with that uid is the same configuration), and
``"<job> f <uid>"`` when its result is in, each with one unbuffered ``os.write`` (about
3 µs with the digest). The page cache keeps what was written when the process is killed
(SIGKILL included); a node crash or power loss may lose it (there is no fsync), and then
that crash simply goes uncounted. The file grows by ~30 bytes per evaluation and job. ``store.replay.rebuild_engine`` reads the crashed job's lines:
every uid dispatched and not finished counts one crash (``store.replay._poison``).

A new job truncates the file: only the latest job's lines are ever needed, since the
resume that counted a crash ran before the job that truncates it. Each line carries its
job number, so lines of an earlier job that was counted already are never counted twice.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from evo_engine.search.keys import genome_digest

NAME = "dispatched.log"


def journal_path(run_dir: Path) -> Path:
    return Path(run_dir) / NAME


class Journal:
    """The running job's journal (truncated on opening); ``close`` when the job ends."""

    def __init__(self, run_dir: Path, job: int) -> None:
        self.path = journal_path(run_dir)
        self.job = job
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                                       | os.O_APPEND, 0o644)

    def dispatched(self, uid: int, genome: np.ndarray) -> None:
        """Before the task ``uid`` is sent: a crash from now on may be its doing."""
        if self._fd is not None:
            os.write(self._fd, b"%d d %d %s\n" % (self.job, uid,
                                                  genome_digest(genome).encode()))

    def finished(self, uid: int) -> None:
        """The result of ``uid`` is in (recorded or about to be): it is cleared of a crash."""
        if self._fd is not None:
            os.write(self._fd, b"%d f %d\n" % (self.job, uid))

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)


def unfinished(run_dir: Path, job: int) -> dict[int, str] | None:
    """uid → genome digest of the tasks job ``job`` handed out and never got results of.

    None when the journal holds no line of that job (no file: a run from before the
    journal, or a job that handed out nothing). Lines of other jobs and a torn last line
    (a kill mid-write) are ignored.
    """
    try:
        data = journal_path(run_dir).read_bytes()
    except FileNotFoundError:
        return None
    out: dict[int, str] = {}
    seen = False
    for line in data.split(b"\n")[:-1]:  # the part after the last newline may be torn
        parts = line.split()
        if len(parts) not in (3, 4) or not parts[0].isdigit() or not parts[2].isdigit():
            continue
        if int(parts[0]) != job:
            continue
        seen = True
        if parts[1] == b"d" and len(parts) == 4:
            out[int(parts[2])] = parts[3].decode("ascii", "replace")
        elif parts[1] == b"f":
            out.pop(int(parts[2]), None)
    return out if seen else None


def has_entries(run_dir: Path) -> bool:
    """Whether a job handed out any task (a store that recorded nothing may still have)."""
    try:
        return journal_path(run_dir).stat().st_size > 0
    except OSError:
        return False


__all__ = ["NAME", "Journal", "has_entries", "journal_path", "unfinished"]
