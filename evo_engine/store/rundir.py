"""The run directory: its lock, what it holds, and clearing it without a crash window.

A run directory is in one of these states (``inspect``):

* ``absent``    — does not exist;
* ``fresh``     — exists but holds no store: empty, or only leftovers of a start that was
                  stopped or killed before its store existed (``.lock``, ``log.jsonl``,
                  ``scratch/``, a half-made store under a temporary name);
* ``unstarted`` — holds a sound store with nothing recorded (no task, no evaluation): a run
                  stopped or killed before its first results were flushed;
* ``started``   — holds a sound store with recorded work: continue it with ``--resume``;
* ``damaged``   — holds a store that fails its checks (``evo_engine.store.runstore.StoreDamaged``).

A plain start takes ``absent``, ``fresh`` and ``unstarted`` as new; ``--resume`` continues
``started`` and starts ``fresh``/``unstarted`` from the beginning. Nothing here writes: the
caller decides, and clearing (``clear``) renames our files aside before deleting them, so a
kill mid-way never leaves a half-deleted store that would look damaged.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from evo_engine.errors import InputError

OURS = ("run.zarr", "log.jsonl", "scratch", ".lock", "dispatched.log")
GARBAGE_PREFIXES = (".run.zarr.creating-", ".trash-")
"""Names of what a killed job may leave half-made or half-deleted; always safe to delete."""
WRITER_GRACE = 30.0
"""Seconds a start waits for the store writer of a job whose coordinator was killed."""


class RunDirError(InputError):
    """The run directory cannot be used (in use, not writable, holds something else)."""


Kind = Literal["absent", "fresh", "unstarted", "started", "damaged"]


@dataclass
class RunDir:
    """What a run directory holds, found without writing to it."""

    path: Path
    kind: Kind
    foreign: list[str] = field(default_factory=list)
    """Entries that are not evo_engine's (kept by --force, refused otherwise)."""
    problem: str = ""
    """Why the store is unusable (kind "damaged")."""

    @property
    def store(self) -> Path:
        return self.path / "run.zarr"


def _is_ours(name: str) -> bool:
    return name in OURS or name.startswith(GARBAGE_PREFIXES)


def owned_by(run_dir: Path, path: Path) -> Path | None:
    """The entry of ``run_dir`` that ``path`` is or lies inside, when it is one of the run's
    own (``OURS``, or what a killed job left half-made); None for any other path.

    Paths are compared resolved, so a relative, ``..`` or symlinked spelling of the run's log
    is still the run's log."""
    try:
        inside = path.resolve().relative_to(run_dir.resolve())
    except ValueError:
        return None
    if not inside.parts or not _is_ours(inside.parts[0]):
        return None
    return run_dir / inside.parts[0]


def inspect(run_dir: Path) -> RunDir:
    """Classify ``run_dir`` (read-only: opens the store, if any, for reading)."""
    from evo_engine.store.runstore import RunStore, StoreError

    if not run_dir.exists():
        return RunDir(run_dir, "absent")
    if not run_dir.is_dir():
        raise RunDirError(f"run directory {run_dir} exists and is not a directory")
    try:
        names = sorted(p.name for p in run_dir.iterdir())
    except OSError as exc:
        raise RunDirError(f"run directory {run_dir} cannot be read ({exc.strerror})") from None
    foreign = [n for n in names if not _is_ours(n)]
    if "run.zarr" not in names:
        return RunDir(run_dir, "fresh", foreign)
    try:
        store = RunStore.open(run_dir, mode="r")
    except StoreError as exc:
        return RunDir(run_dir, "damaged", foreign, str(exc))
    if store.damage:
        from evo_engine.store.runstore import StoreDamaged

        return RunDir(run_dir, "damaged", foreign, str(StoreDamaged(store.path, store.damage)))
    recorded = store.evaluations.committed + (store.tasks.committed if store.tasks else 0)
    return RunDir(run_dir, "started" if recorded else "unstarted", foreign)


def clear(run_dir: Path, names: tuple[str, ...] = OURS) -> None:
    """Delete our entries ``names`` (and any garbage of killed jobs) from ``run_dir``.

    Each is first renamed to a ``.trash-*`` name (atomic), then deleted: a kill at any
    instant leaves either the whole entry or garbage the next start deletes.
    """
    for entry in sorted(run_dir.iterdir()):
        name = entry.name
        if name == ".lock" or not (name in names or name.startswith(GARBAGE_PREFIXES)):
            continue
        target = entry
        if not name.startswith(GARBAGE_PREFIXES):
            target = run_dir / f".trash-{os.getpid()}-{name}"
            entry.rename(target)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()


def check_writable(run_dir: Path) -> None:
    """Refuse (exit 2) a run directory, or a store in it, that this process cannot write."""
    where = [run_dir]
    store = run_dir / "run.zarr"
    if store.is_dir():
        where += [Path(d) for d, _, _ in os.walk(store)]
    for p in where:
        if not os.access(p, os.W_OK | os.X_OK):
            raise RunDirError(
                f"{p} is not writable by this user: the run cannot record anything there. "
                "Make it writable (chmod/chown), or copy the run directory to a writable place "
                "and use that as --run-dir"
            )
    log = run_dir / "log.jsonl"
    if log.exists() and not os.access(log, os.W_OK):
        raise RunDirError(f"{log} is not writable by this user; make it writable or remove it")


class _LockHeld(RunDirError):
    """Another process holds the run directory's lock."""


def _process_runs(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (a zombie, killed but not yet reaped by its
    parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's: it exists
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


class RunLock:
    """An exclusive lock on a run directory, so two jobs never write one store.

    ``acquire`` creates the directory and ``.lock`` when needed and remembers doing so;
    ``release(tidy=True)`` removes what it created when nothing else was written, so a
    refused start leaves no trace.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / ".lock"
        self._fh: Any = None
        self._made_dirs: list[Path] = []
        self._made_lock = False
        self.unguarded: str | None = None
        """Why the directory could not be locked (the run goes on unguarded), or None."""
        self._claimed = False

    def fds(self) -> tuple[int, ...]:
        """The lock's open file (empty when not held), for a child process that must keep
        the run locked as long as it lives (the store's writer)."""
        return (self._fh.fileno(),) if self._fh is not None else ()

    @property
    def made_dir(self) -> bool:
        """Whether ``acquire`` created the run directory (it did not exist before)."""
        return self.run_dir in self._made_dirs

    def acquire(self, writer_grace: float = WRITER_GRACE) -> None:
        """Lock the run directory. Held by a job whose coordinator is gone (its pid, on this
        host, no longer runs), the lock is its store writer's, which writes what it was handed
        and exits (``evo_engine.store.writer_process``): wait for it up to ``writer_grace`` s."""
        end = time.monotonic() + writer_grace
        tries = 0
        while tries < 5:
            try:
                if self._acquire_once():
                    return
            except _LockHeld as exc:
                if not self._holder_gone():
                    raise
                if time.monotonic() >= end:
                    raise RunDirError(
                        f"run directory {self.run_dir} is still locked after "
                        f"{writer_grace:g} s; the lock names {self._holder_text()}, which has "
                        "ended: its store writer is still finishing (or another job has "
                        "just taken the directory); wait for it (or stop it) before starting "
                        "or resuming this run") from exc
                time.sleep(0.05)
                continue
            tries += 1
        raise RunDirError(f"run directory {self.run_dir}: its .lock keeps being replaced by "
                          "another process; is another job starting in it?")

    def _acquire_once(self) -> bool:
        import fcntl

        try:
            missing = [p for p in (self.run_dir, *self.run_dir.parents) if not p.exists()]
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._made_dirs = missing
            self._made_lock = not self.path.exists()
            fh = open(self.path, "a+")  # noqa: SIM115 - held for the whole run
        except OSError as exc:
            what = "is not writable" if self.run_dir.is_dir() else "cannot be created"
            raise RunDirError(
                f"run directory {self.run_dir} {what} ({exc.strerror or exc}): choose a "
                "writable --run-dir, or make this one writable (a run on a read-only copy can "
                "still be read with `python -m evo_engine analyze`)"
            ) from None
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            self._made_lock = False
            raise _LockHeld(
                f"run directory {self.run_dir} is in use by {holder}; wait for it to end "
                f"(or stop it) before starting or resuming this run"
            ) from None
        except OSError as exc:
            # File systems without flock (Lustre mounted without -o flock, some NFS): go on,
            # but say loudly that nothing stops a second job from writing this store.
            self.unguarded = (
                f"the run directory {self.run_dir} cannot be locked ({exc.strerror or exc}: "
                "its file system does not support flock), so nothing stops a second job "
                "from writing the same run store; make sure only one job uses it")
        try:
            same = os.fstat(fh.fileno()).st_ino == os.stat(self.path).st_ino
        except OSError:
            same = False
        if not same:  # a refused start removed the file we locked: lock the new one
            fh.close()
            return False
        self._fh = fh
        return True

    def _holder_text(self) -> str:
        try:
            return self.path.read_text().strip() or "another process"
        except OSError:
            return "another process"

    def _holder_gone(self) -> bool:
        """Whether the lock names a process of this host that has ended."""
        words = self._holder_text().split()
        if len(words) != 4 or words[0] != "pid" or words[2] != "on" or not words[1].isdigit():
            return False
        if words[3] != socket.gethostname():
            return False
        try:
            return not _process_runs(int(words[1]))
        except (OverflowError, ValueError):  # no such pid can exist: a damaged lock file
            return False

    def claim(self) -> None:
        """Write who holds the lock (once the run goes ahead: a refused start writes nothing)."""
        if self._fh is not None:
            self._claimed = self._name_holder(f"pid {os.getpid()} on {socket.gethostname()}")

    def _name_holder(self, text: str) -> bool:
        """Replace what the lock file says (``_holder_gone`` reads it); False if it failed."""
        try:
            self._fh.seek(0)
            self._fh.truncate()
            self._fh.write(text)
            self._fh.flush()
        except OSError:
            return False
        return True

    def release(self, tidy: bool = False) -> None:
        if self._fh is not None:
            if tidy and self._made_lock:
                with contextlib.suppress(OSError):
                    self.path.unlink()
            elif self._claimed:
                # A job that ended names nobody: the next start never takes this pid for a
                # coordinator whose store writer is still finishing.
                self._name_holder("")
            self._fh.close()
            self._fh = None
        if tidy:
            for d in self._made_dirs:  # deepest first
                with contextlib.suppress(OSError):
                    d.rmdir()  # only if empty


__all__ = ["GARBAGE_PREFIXES", "OURS", "RunDir", "RunDirError", "RunLock", "check_writable",
           "clear", "inspect", "owned_by"]
