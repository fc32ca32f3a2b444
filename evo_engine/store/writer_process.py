"""The recorder in a process of its own, so the coordinator's thread never waits on zarr.

A ``Recorder`` thread in the coordinator's process shares the GIL with the coordinator:
zarr's Python code (about 1 ms of CPU per column and commit, ~40 columns) and a snapshot's
JSON encoding kept the coordinator waiting for the GIL for 2 ms at its p99 per result
(``benchmarks/checkpoint.py --scale``). ``RecorderProcess`` has the same interface; its
side in the coordinator only pickles what is handed over (about 6 us per task or result,
4 ms for a state with 4,096 tasks in flight), on a sender thread every ``send_interval``
seconds, and writes the bytes to a pipe. A child process (``child_main``, started with the
coordinator's own ``sys.path``) runs an ordinary ``Recorder`` on the store with the items in
the order they were handed over, and reports each flush, snapshot and error back.

Lifetime. The child ignores SIGINT, SIGTERM, SIGUSR1 and SIGHUP: a Ctrl-C, SLURM's SIGTERM
or the SIGUSR1 mpiexec forwards reaches every process of the job, and the coordinator stops
gracefully and then tells the child to finish. When the coordinator dies (``kill -9``) the
child reads end of file, writes everything it had received (items handed over in the last
``send_interval`` and not yet sent die with the coordinator) and exits, leaving the run
marked as running (a crash, for ``--resume``). The child is handed the run directory's lock
(its open file), so no other job takes the run until the child has exited too; where the
directory cannot be locked, ``run.py`` writes from a thread instead, since nothing would
keep a resumed job from writing beside a surviving child.

Bounded memory: items wait in the coordinator's list until the sender takes them; when
``max_pending`` wait (the pipe is full because the child's disk is behind and the child's
own queue of ``max_pending`` is full), handing over blocks. At most about four times
``max_pending`` items are held: the coordinator's list, the frame being sent, the frame the
child is taking in and the child's queue.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from evo_engine.space import Space
from evo_engine.store.runstore import RunStore
from evo_engine.store.writer import MAX_PENDING, HandOver, Recorder, check_fsync
from evo_engine.util.signals import SIGNALS

_HEADER = struct.Struct("<Q")
SEND_INTERVAL = 0.05
"""Seconds between the sender's takes: items handed over reach the child at most this late."""
START_TIMEOUT = 120.0
"""Seconds the coordinator waits for its writer to start (imports on a slow shared file
system) before writing from a thread instead."""


def _write_bytes(out: IO[bytes], data: bytes) -> None:
    out.write(_HEADER.pack(len(data)))
    out.write(data)
    out.flush()


def _write_frame(out: IO[bytes], obj: Any) -> None:
    _write_bytes(out, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def _read_frame(inp: IO[bytes]) -> Any:
    """The next object, or None at end of file (a frame cut short counts as end of file)."""
    head = inp.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(head)
    data = inp.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


_BOOTSTRAP = ("import sys; sys.path[:] = sys.argv[3:]; "
              "from evo_engine.store.writer_process import child_main; "
              "sys.exit(child_main(int(sys.argv[1]), int(sys.argv[2])))")
"""The child's command line: the coordinator's ``sys.path`` (nothing is imported before it
is in place), then ``child_main``."""


def _import_path() -> list[str]:
    """This process's ``sys.path`` as absolute paths (``""`` is the current directory; a
    scenario may have put ``Path`` objects there, which Python accepts)."""
    return [os.path.abspath(os.fspath(entry)) for entry in sys.path
            if isinstance(entry, (str, os.PathLike))]


class RecorderProcess(HandOver):
    """``Recorder``'s interface, with the writing done by a child process (module docstring).

    ``store`` is the run's store as the coordinator created or opened it; from here on only
    the child writes it (run attributes go through ``set_attrs``)."""

    def __init__(self, store: RunStore, space: Space, flush_interval: float = 0.25,
                 on_snapshot: Callable[[str, int], None] | None = None,
                 fsync: str = "snapshots", max_pending: int = MAX_PENDING,
                 on_flush: Callable[[float, int, int], None] | None = None,
                 send_interval: float = SEND_INTERVAL, keep_fds: Sequence[int] = ()) -> None:
        check_fsync(fsync)
        self.on_snapshot = on_snapshot
        self.on_flush = on_flush
        self.max_pending = max_pending
        self.send_interval = send_interval
        self.blocked_seconds = 0.0
        """Time the coordinator spent waiting for the writer (back-pressure)."""
        self.snapshots_superseded = 0
        self.committed = store.evaluations.committed
        """Evaluation rows committed to the store, as of the child's latest report."""
        self._items: list[Any] = []
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._closing = False
        self._closed = False
        self._acks: set[int] = set()
        self._tokens = 0
        self._error: str | None = None
        self._gone = False
        data_r, data_w = os.pipe()
        back_r, back_w = os.pipe()
        try:
            # This process's import path, exactly: the child runs the very evo_engine (and
            # zarr) the coordinator runs, whatever the current directory holds.
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _BOOTSTRAP, str(data_r), str(back_w), *_import_path()],
                pass_fds=(data_r, back_w, *keep_fds), stdin=subprocess.DEVNULL)
        except BaseException as exc:
            for fd in (data_r, data_w, back_r, back_w):
                os.close(fd)
            if isinstance(exc, OSError):
                raise OSError(f"the store's writer process could not be started ({exc})") from exc
            raise
        os.close(data_r)
        os.close(back_w)
        self._out = os.fdopen(data_w, "wb")
        self._back = os.fdopen(back_r, "rb")
        self._sender = threading.Thread(target=self._send_loop, name="evo-recorder-send",
                                        daemon=True)
        self._reader = threading.Thread(target=self._read_loop, name="evo-recorder-back",
                                        daemon=True)
        try:
            self._handshake({
                "run_dir": str(store.path.parent), "space": space, "fsync": fsync,
                "flush_interval": flush_interval, "max_pending": max_pending,
            })
            self._reader.start()
            self._sender.start()
        except BaseException:
            # It did not start, or a stop signal came meanwhile: no child may outlive this
            # and write the store (the caller then owns it again), nor a thread of ours.
            with self._cond:
                self._closing = True
                self._error = self._error or "the store's writer process did not start"
            self._wake.set()
            self._proc.kill()
            self._proc.wait()
            for f in (self._out, self._back):
                # A child that exited before our start-up message leaves it buffered here:
                # close() flushes it again, and its broken pipe must not replace the reason.
                with contextlib.suppress(OSError):
                    f.close()
            raise

    def _handshake(self, config: dict[str, Any]) -> None:
        """Send the child its configuration and wait until it has opened the store: a child
        that cannot start (an interpreter that cannot import evo_engine, no memory) is found
        here, before anything is handed over, and ``start_recorder`` falls back to a thread."""
        answered, ready = True, None
        try:
            _write_frame(self._out, config)
            answered = bool(select.select([self._back], [], [], START_TIMEOUT)[0])
            ready = _read_frame(self._back) if answered else None
        except OSError:
            pass
        if ready is not None and ready[0] == "ready":
            return
        if not answered:
            why = f"no answer within {START_TIMEOUT:g} s"
        elif ready is not None and ready[0] == "error":
            why = ready[1]
        else:
            why = f"exit status {self._proc.wait()}"
        raise OSError(f"the store's writer process did not start ({why})")

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def queued(self) -> int:
        """Items handed over and not yet sent to the child."""
        return len(self._items)

    # -- handing over (coordinator thread) -------------------------------------------------

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"writing the run store failed: {self._error}")

    def put(self, item: Any, urgent: bool = False) -> None:
        self._raise_if_failed()
        if self._closed:
            raise RuntimeError("the recorder is closed")
        with self._cond:
            self._items.append(item)
            if len(self._items) >= self.max_pending:
                # Back-pressure: the child is behind; wait until the sender takes the list.
                t0 = time.perf_counter()
                self._wake.set()
                while len(self._items) >= self.max_pending and self._error is None:
                    self._cond.wait(0.1)
                self.blocked_seconds += time.perf_counter() - t0
        if urgent:
            self._wake.set()
        self._raise_if_failed()

    def flush(self) -> None:
        """Until everything handed over so far is written (snapshots included)."""
        with self._cond:
            self._tokens += 1
            token = self._tokens
        self.put(("flush", token), urgent=True)
        with self._cond:
            while token not in self._acks and self._error is None and not self._gone:
                self._cond.wait(0.1)
        self._raise_if_failed()

    def close(self) -> None:
        """Write everything handed over and end the child, leaving the run's status alone."""
        self._end(None)

    def finish(self, status: str, stop_reason: str, trim: bool = False, **attrs: Any) -> None:
        """Write everything handed over, mark the store (``RunStore.close``), end the child."""
        self._end((status, stop_reason, trim, attrs))

    def _end(self, how: tuple[str, str, bool, dict[str, Any]] | None) -> None:
        if self._closed:
            return
        try:
            if self._error is None:
                try:
                    self.put(("close", how), urgent=True)
                except RuntimeError:
                    pass  # failed meanwhile: still end the threads and reap the child
            with self._cond:
                self._closing = True
            self._wake.set()
            self._sender.join()
            self._reader.join()
            self._proc.wait()
        finally:
            self._closed = True
            for f in (self._out, self._back):
                try:
                    f.close()
                except OSError:
                    pass
        self._raise_if_failed()

    # -- the sender and reader threads -------------------------------------------------------

    def _send_loop(self) -> None:
        while True:
            self._wake.wait(self.send_interval)
            self._wake.clear()
            with self._cond:
                items, self._items = self._items, []
                closing = self._closing
                self._cond.notify_all()
            if items and self._error is None:
                try:
                    data = pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)
                except BaseException as exc:  # noqa: BLE001 - surfaced to the coordinator
                    # An item that cannot be pickled (a bug): fail the run loudly, and end
                    # the child's input so it writes what it had and exits.
                    self._fail(f"an item handed over cannot be sent to the writer "
                               f"({type(exc).__name__}: {exc})")
                    closing = True
                else:
                    try:
                        _write_bytes(self._out, data)
                    except (OSError, ValueError):
                        # The child is gone: its last words (an error) come first, then this.
                        self._reader.join(30.0)
                        self._child_gone()
            if closing and (not self._items or self._error is not None):
                try:
                    self._out.close()  # end of file for the child, whatever happened
                except OSError:
                    pass
                return

    def _fail(self, why: str) -> None:
        with self._cond:
            if self._error is None:
                self._error = why
            self._cond.notify_all()

    def _child_gone(self, expected: bool = False) -> None:
        """The child ended (end of file on its pipe, or a write to it failed)."""
        code = self._proc.wait()
        with self._cond:
            if not expected and self._error is None:
                self._error = f"the writer process exited unexpectedly (exit status {code})"
            self._gone = True
            self._cond.notify_all()

    def _call(self, callback: Callable[..., None] | None, name: str, *args: Any) -> None:
        """A report's callback; its failure fails the run (as with the thread recorder), and
        the reader goes on draining the child's reports so the child never blocks on them."""
        if callback is None:
            return
        try:
            callback(*args)
        except BaseException as exc:  # noqa: BLE001 - surfaced to the coordinator
            self._fail(f"{name} failed ({type(exc).__name__}: {exc})")

    def _read_loop(self) -> None:
        done = False
        while True:
            try:
                msg = _read_frame(self._back)
            except (OSError, ValueError, pickle.UnpicklingError, EOFError):
                msg = None
            if msg is None:
                self._child_gone(expected=done)
                return
            kind = msg[0]
            if kind == "flushed":
                _, seconds, rows, committed = msg
                self.committed = committed
                self._call(self.on_flush, "on_flush", seconds, rows, committed)
            elif kind == "snapshot":
                self._call(self.on_snapshot, "on_snapshot", msg[1], msg[2])
            elif kind in ("done", "closed"):
                _, token, superseded = msg
                with self._cond:
                    self.snapshots_superseded = superseded
                    if kind == "closed":
                        done = True
                    else:
                        self._acks.add(token)
                    self._cond.notify_all()
            elif kind == "error":
                with self._cond:
                    self._error = msg[1]
                    self._cond.notify_all()


def start_recorder(store: RunStore, space: Space, warn: Callable[[str], None],
                   process: bool = True, **kwargs: Any) -> Recorder | RecorderProcess:
    """The run's recorder: a child process (the default), or a thread of this process when
    ``process`` is False or no child can be started (with a warning)."""
    if process:
        try:
            return RecorderProcess(store, space, **kwargs)
        except OSError as exc:
            warn(f"{exc}; the store is written by a thread of the coordinator instead (it "
                 "then shares the coordinator's CPU time at high result rates)")
    kwargs.pop("keep_fds", None)
    kwargs.pop("send_interval", None)
    return Recorder(store, space, **kwargs)


# -- the child ----------------------------------------------------------------------------------


def _dispatch(rec: Recorder, item: Any, send: Callable[[Any], None]) -> bool:
    """Hand one item to the recorder, or carry out one of the coordinator's requests (a
    tuple); True when it said to close."""
    if not isinstance(item, tuple):
        rec.put(item)
    elif item[0] == "flush":
        rec.flush()
        send(("done", item[1], rec.snapshots_superseded))
    elif item[0] == "close":
        if item[1] is None:
            rec.close()
        else:
            status, reason, trim, attrs = item[1]
            rec.finish(status, reason, trim=trim, **attrs)
        send(("closed", 0, rec.snapshots_superseded))
        return True
    else:
        raise TypeError(f"unknown request to the store's writer: {item!r}")
    return False


def _describe(exc: BaseException) -> str:
    # The Recorder wraps its writer's error; say the cause once.
    cause = exc.__cause__ if isinstance(exc, RuntimeError) and exc.__cause__ else exc
    return f"{type(cause).__name__}: {cause}"


def child_main(data_fd: int, back_fd: int) -> int:
    # The coordinator's stop signals (a launcher or scheduler sends them to every process of
    # the job: mpiexec forwards SIGUSR1 to the whole process group) and a closed terminal.
    for name in (*SIGNALS, "SIGHUP"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    inp = os.fdopen(data_fd, "rb")
    out = os.fdopen(back_fd, "wb")
    send_lock = threading.Lock()

    def send(msg: Any) -> None:
        with send_lock:
            try:
                _write_frame(out, msg)
            except OSError:
                pass  # the coordinator is gone: the rows still get written

    config = _read_frame(inp)
    if config is None:
        return 0
    try:
        store = RunStore.open(Path(config["run_dir"]), mode="r+", check=False)
        rec = Recorder(store, config["space"], flush_interval=config["flush_interval"],
                       fsync=config["fsync"], max_pending=config["max_pending"],
                       on_snapshot=lambda name, n: send(("snapshot", name, n)),
                       on_flush=lambda s, rows, n: send(("flushed", s, rows, n)))
    except BaseException as exc:  # noqa: BLE001 - reported to the coordinator
        traceback.print_exc()  # the coordinator's stderr: the whole story
        send(("error", _describe(exc)))
        return 1
    send(("ready",))
    try:
        while True:
            items = _read_frame(inp)
            if items is None:  # the coordinator died: keep what it handed over
                rec.close()
                return 0
            for item in items:
                if _dispatch(rec, item, send):
                    return 0
    except BaseException as exc:  # noqa: BLE001 - reported to the coordinator
        traceback.print_exc()
        send(("error", _describe(exc)))
        return 1

