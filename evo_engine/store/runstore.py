"""The zarr run store: an append-only evaluation log that plain ``zarr.open`` can read.

Layout of ``RUN_DIR/run.zarr`` (see the README for a reader's guide)::

    attrs           format_version, scenario, fingerprint, fingerprint_description,
                    evo_engine_version, status, stop_reason, param_names, metric_names, ...
    evaluations/    one array per column, rows 0..committed-1 valid:
                    uid, island, state, fitness, worker, t_start, t_end, seed, operator,
                    error, accepted, parents (n, 2), genome (n, d), params/<name>,
                    metrics/<name>; group attr ``committed``
    migrations/     uid, origin, destination, accepted, at_eval; group attr ``committed``
    tasks/          every task as it was issued (uid, island, seed, operator, parents,
                    genome, info as JSON, told_before = results recorded when it was
                    issued): what was in flight at a crash is issued again from here with
                    the same parameters and seed, and replay re-asks in uid order
    curves/         intermediate reports (``ctx.report``) of finished evaluations, complete,
                    failed and pruned alike: uid, step, value; ``committed``. Created with
                    the first report, so a run without reports has none
    snapshots/      engine state as compressed JSON, one uint8 array per snapshot with its
                    sha256 and the table positions it matches; attrs ``latest`` and
                    ``previous`` name the newest two complete ones (the pointer is written
                    last, so a kill mid-snapshot leaves the previous one in charge)

Appending writes the new rows' chunks first and then advances the table's ``committed``
attribute (one small metadata file that zarr's local store replaces atomically). A reader
trusts only rows below ``committed``; rows past it are garbage that the next append
overwrites. Arrays are allocated in whole chunks ahead of ``committed`` and trimmed to it
when the run finishes, so ``arr[:committed]`` is always the log.

The store checks itself when it is opened (``RunStore.open``): every table has its
``committed`` marker, every column holds at least the committed rows, every chunk that holds
committed rows is there and decodes, and every committed row has a uid. Tables written by this
version are *dense* (group attr ``dense``): every append writes every column, empty chunks
included, so a missing chunk file is damage rather than "all fill values". A writer refuses a
damaged store (``StoreDamaged``, exit 2) before writing anything; a reader (``analyze``) gets the
rows up to the first damaged one and ``RunStore.damage`` saying what is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import threading
import time
import zlib
from collections.abc import Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from evo_engine.errors import InputError
from evo_engine.search.messages import EvalState
from evo_engine.store.schema import (
    CHUNK,
    CURVE_COLUMNS,
    MIGRATION_COLUMNS,
    STR,
    Schema,
    evaluation_columns,
    expected,
    task_columns,
)

FORMAT_VERSION = 1
CHECK_CHUNKS = 64
"""Chunks a store check reads at once (bounds its memory for long runs)."""


class StoreError(InputError):
    """The run directory holds no usable run store (or one this version cannot read)."""


class StoreDamaged(StoreError):
    """The store fails its own checks: it is refused for writing, and nothing in it is changed."""

    def __init__(self, path: Path, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        run_dir = path.parent
        super().__init__(
            f"the run store {path} is damaged: " + "; ".join(self.problems) + ". Nothing in it "
            f"was changed. `python -m evo_engine analyze {run_dir}` shows the intact part; "
            "restore the run directory from a copy to continue the run, or start over with "
            "--force (without --resume), which deletes it"
        )


_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _run_together(writes: Sequence[Coroutine[Any, Any, Any]]) -> None:
    """Run zarr writes concurrently (``Array.async_array`` is zarr's public way to batch
    requests) on one event loop in a thread of its own. A writer that contends for the GIL
    with a busy coordinator then pays one round of thread hand-offs per append, not one per
    column: measured 2.2x faster appends than column by column (200 vs 445 ms
    median for 23 columns with a busy thread beside it, on a loaded 2-core machine)."""
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="evo-store-io", daemon=True).start()

    async def together() -> None:
        await asyncio.gather(*writes)

    asyncio.run_coroutine_threadsafe(together(), _loop).result()


def fsync_files(paths: Sequence[Path]) -> None:
    """Flush ``paths`` and their directories to stable storage (zarr writes a chunk as a new
    file renamed into place, so the directory entry must reach the disk too). A path that
    no longer exists (replaced meanwhile by a newer write, synced later) is skipped."""
    dirs: set[Path] = set()
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        dirs.add(path.parent)
    for d in sorted(dirs):
        with contextlib.suppress(FileNotFoundError, OSError):
            fd = os.open(d, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


PIECE = 256
"""List elements encoded by one ``json.dumps`` call in ``json_in_pieces``."""


def json_in_pieces(obj: Any) -> str:
    """``json.dumps(obj, separators=(",", ":"))``, the same text, in pieces of at most
    ``PIECE`` list elements. One ``json.dumps`` call holds the GIL until it is done (about
    0.3 s for a 1.4 MB engine state), stalling the coordinator and the row writer meanwhile;
    between pieces other threads get their turn."""
    if isinstance(obj, dict) and all(isinstance(k, str) for k in obj):
        return "{" + ",".join(json.dumps(k) + ":" + json_in_pieces(v) for k, v in obj.items()) + "}"
    if isinstance(obj, (list, tuple)) and len(obj) > 1:
        if len(obj) <= PIECE and not any(isinstance(v, (dict, list, tuple)) for v in obj):
            return json.dumps(obj, separators=(",", ":"))
        step = PIECE if len(obj) > PIECE else 1
        return "[" + ",".join(json_in_pieces(obj[i]) if step == 1 else
                              json.dumps(obj[i:i + step], separators=(",", ":"))[1:-1]
                              for i in range(0, len(obj), step)) + "]"
    return json.dumps(obj, separators=(",", ":"))


class SnapshotCorrupt(RuntimeError):
    """A snapshot is truncated or altered; resume falls back to the previous one."""


class Table:
    """A group of equally long column arrays with an atomic ``committed`` row counter.

    ``problems`` lists what the checks on opening found wrong (empty for a sound table) and
    ``readable`` is how many rows from the start can be read in every column.
    """

    def __init__(self, group: zarr.Group | None, name: str = "", root_dir: Path | None = None,
                 check: bool = False, schema: Schema | None = None) -> None:
        self.group = group
        self.name = name or (group.path if group is not None else "table")
        self.problems: list[str] = []
        self._arrays: dict[str, zarr.Array] = {}
        self.root_dir = root_dir
        self._dirty: set[Path] = set()
        self._unreadable: dict[str, str] = {}
        """column → why its metadata cannot be used (missing, unparseable, not as expected)."""
        if group is None:
            self.committed = 0
            self.readable = 0
            return
        raw = group.attrs.get("committed")
        marked = isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0
        self.committed = int(raw) if marked else 0
        self.readable = self.committed
        self._load_arrays(group, "", root_dir / group.path if root_dir is not None else None)
        if schema is not None:
            self._check_schema(schema)
        if not marked:
            self.problems.append(
                f"{self.name}/zarr.json has no valid 'committed' marker (got {raw!r}), so "
                f"which of its rows are complete is unknown")
            self.committed = self.readable = self._rows_with_uid()
        for problem in self._unreadable.values():
            # Without its metadata no row of a column can be read (nor trusted): none is.
            self._damaged(0, problem)
        if check:
            self._check(root_dir)

    def _load_arrays(self, group: zarr.Group, prefix: str, folder: Path | None) -> None:
        """Open every array of ``group`` (in ``folder`` on disk, when known). zarr's listing
        skips a member whose ``zarr.json`` is missing (with a warning) and fails on one that
        does not parse: where the folder shows either, members are opened one by one, so
        each such one is recorded in ``_unreadable`` and the others still open."""
        bare = self._folders_without_metadata(folder, prefix) if folder is not None else False
        try:
            if bare:
                raise LookupError("a folder without metadata: open the members one by one")
            members = list(group.members())
        except Exception:  # noqa: BLE001 - located member by member below
            if folder is None:
                raise
            members = self._members_one_by_one(group, prefix, folder)
        for name, member in members:
            if isinstance(member, zarr.Array):
                # Dense tables store empty chunks too: a missing chunk file is then damage.
                self._arrays[prefix + name] = member.with_config({"write_empty_chunks": True})
            else:
                self._load_arrays(member, f"{prefix}{name}/",
                                  folder / name if folder is not None else None)

    def _folders_without_metadata(self, folder: Path, prefix: str) -> bool:
        """Record each member folder with data but no ``zarr.json``; whether any lacks one."""
        bare = False
        for entry in sorted(folder.iterdir()):
            if not entry.is_dir() or (entry / "zarr.json").is_file():
                continue
            bare = True
            if (entry / "c").exists():
                holds = "the column's type and shape are lost, so none of its rows can be read"
            elif any(p.is_dir() for p in entry.iterdir()):
                holds = "the columns in it cannot be opened"
            else:
                continue  # an empty folder (a column being made by a live run): no data
            self._unreadable[prefix + entry.name] = (
                f"{self.name}/{prefix}{entry.name}/zarr.json is missing: {holds}")
        return bare

    def _members_one_by_one(self, group: zarr.Group, prefix: str,
                            folder: Path) -> list[tuple[str, Any]]:
        members = []
        for entry in sorted(folder.iterdir()):
            if not entry.is_dir() or not (entry / "zarr.json").is_file():
                continue
            try:
                members.append((entry.name, group[entry.name]))
            except Exception as exc:  # noqa: BLE001 - any unparseable metadata is damage
                self._unreadable[prefix + entry.name] = (
                    f"{self.name}/{prefix}{entry.name}/zarr.json cannot be read ({_brief(exc)})")
        return members

    def _check_schema(self, schema: Schema) -> None:
        """Every required column is there and every known one has the expected dtype, row
        shape and chunking; a column that does not is taken out of the table."""
        broken = tuple(f"{c}/" for c in self._unreadable)
        for col, spec in {**schema.required, **schema.optional}.items():
            if col in self._unreadable or col.startswith(broken):
                continue  # reported already (its folder's metadata)
            arr = self._arrays.get(col)
            if arr is None:
                if col in schema.required:
                    self._unreadable[col] = (f"{self.name}/{col} is missing (the store has no "
                                             "such column, which every run store holds)")
                continue
            wrong = spec.mismatch(arr)
            if wrong is not None:
                del self._arrays[col]
                self._unreadable[col] = (f"{self.name}/{col} {wrong}: its zarr.json was altered "
                                         "or replaced")

    @property
    def dense(self) -> bool:
        return self.group is not None and bool(self.group.attrs.get("dense", False))

    def _rows_with_uid(self) -> int:
        """Without a marker: the leading rows whose uid is set (fill value -1 elsewhere)."""
        arr = self._arrays.get("uid")
        if arr is None:
            return 0
        try:
            uid = np.asarray(arr[:])
        except Exception:  # noqa: BLE001 - an unreadable uid column: nothing is trusted
            return 0
        unset = np.flatnonzero(uid < 0)
        return int(unset[0]) if unset.size else int(uid.size)

    def _damaged(self, row: int, problem: str) -> None:
        self.problems.append(problem)
        self.readable = min(self.readable, row)

    def _check(self, root_dir: Path | None) -> None:
        """Column lengths, chunk presence and readability, uids of committed rows."""
        n = self.committed
        for col, arr in self._arrays.items():
            where = f"{self.name}/{col}"
            if arr.shape[0] < n:
                self._damaged(arr.shape[0], f"{where} holds {arr.shape[0]} rows but {n} are "
                                            f"committed (the column was cut short)")
            rows = min(n, arr.shape[0])
            if rows == 0:
                continue
            missing = self._missing_chunks(root_dir, col, arr, rows)
            per = arr.chunks[0]
            block = per * CHECK_CHUNKS
            for start in range(0, rows, block):
                stop = min(start + block, rows)
                if missing & set(range(start // per, (stop - 1) // per + 1)):
                    self._check_chunks(col, arr, start, stop, missing)
                    continue
                # One read of many chunks (zarr fetches them concurrently); only when it
                # fails are they read one by one to say which is bad.
                try:
                    values = np.asarray(arr[start:stop])
                except Exception:  # noqa: BLE001 - located chunk by chunk
                    self._check_chunks(col, arr, start, stop, missing)
                    continue
                self._check_uids(col, where, start, values)

    def _check_chunks(self, col: str, arr: zarr.Array, start: int, stop: int,
                      missing: set[int]) -> None:
        """Read rows ``start:stop`` chunk by chunk, reporting each one that cannot be read."""
        where = f"{self.name}/{col}"
        per = arr.chunks[0]
        for k in range(start // per, (stop - 1) // per + 1):
            lo, hi = k * per, min((k + 1) * per, stop)
            if k in missing:
                continue
            try:
                values = arr[lo:hi]
            except Exception as exc:  # noqa: BLE001 - any decoding failure is damage
                self._damaged(lo, f"{where}: rows {lo}-{hi - 1} cannot be read (a "
                                  f"truncated or corrupt chunk file: {exc})")
                continue
            self._check_uids(col, where, lo, np.asarray(values))

    def _missing_chunks(self, root_dir: Path | None, col: str, arr: zarr.Array,
                        rows: int) -> set[int]:
        """Chunks holding committed rows whose files are absent (each reported as damage).
        Dense tables store every chunk; older ones only the uid column's for sure. The
        column's chunk files are listed once, not looked up one by one."""
        if root_dir is None or not (self.dense or col == "uid"):
            return set()
        since = int(arr.attrs.get("since", 0)) if self.dense else 0
        base = root_dir / arr.path
        present: set[str] = set()
        for folder, _, files in os.walk(base / "c"):
            rel = Path(folder).relative_to(base).as_posix()
            present.update(f"{rel}/{f}" for f in files)
        per = arr.chunks[0]
        missing: set[int] = set()
        for k in range(since // per, rows // per + (rows % per > 0)):
            lo, hi = k * per, min((k + 1) * per, rows)
            if hi <= since:
                continue
            key = arr.metadata.encode_chunk_key((k,) + (0,) * (arr.ndim - 1))
            if key not in present:
                missing.add(k)
                self._damaged(lo, f"{self.name}/{col}: the chunk file {arr.path}/{key} holding "
                                  f"rows {lo}-{hi - 1} is missing")
        return missing

    def _check_uids(self, col: str, where: str, lo: int, values: np.ndarray) -> None:
        if col == "uid" and (values < 0).any():
            bad = lo + int(np.flatnonzero(values < 0)[0])
            self._damaged(bad, f"{where}: committed row {bad} has no uid (its data were lost)")

    @classmethod
    def create(cls, parent: zarr.Group, name: str, columns: Mapping[str, tuple[str, tuple[int, ...]]],
               root_dir: Path | None = None) -> Table:
        group = parent.require_group(name)
        group.attrs.update({"committed": 0, "dense": True})
        table = cls(group, name, root_dir)
        if root_dir is not None:  # a new table (curves, mid-run): its directory entry too
            table._dirty.update((root_dir / group.path, root_dir / group.path / "zarr.json"))
        for col, (dtype, tail) in columns.items():
            table.add_column(col, dtype, tail)
        return table

    @property
    def columns(self) -> list[str]:
        return list(self._arrays)

    def add_column(self, name: str, dtype: str, tail: tuple[int, ...] = (), rows: int | None = None) -> None:
        """Create a column; rows already committed read as the fill value (NaN, -1 or '')."""
        if name in self._arrays:
            return
        rows = rows if rows is not None else self._capacity()
        if dtype == STR:
            fill: Any = ""
            zdtype: Any = str
        elif dtype.startswith("f"):
            fill, zdtype = np.nan, dtype
        elif dtype == "bool":
            fill, zdtype = False, dtype
        else:
            fill, zdtype = -1, dtype
        arr = self.group.create_array(
            name, shape=(rows, *tail), chunks=(CHUNK, *tail), dtype=zdtype, fill_value=fill,
            compressors=None if dtype != STR else "auto",
            # Rows committed before the column existed read as fill and have no chunk of it.
            attributes={"since": self.committed},
        )
        self._arrays[name] = arr.with_config({"write_empty_chunks": True})
        if self.root_dir is not None:
            # The new array's metadata and directory, and any group made on the way to it
            # (``metrics/`` for the first metric): each directory entry must reach the disk.
            where = self.root_dir / arr.path
            while where != self.root_dir / self.group.path:
                self._dirty.update((where, where / "zarr.json"))
                where = where.parent

    def _capacity(self) -> int:
        """Rows every column can hold: the minimum, so a kill between two resizes (one
        column grown, the next not yet) makes the next append grow the short ones too."""
        if not self._arrays:
            return CHUNK
        return min(arr.shape[0] for arr in self._arrays.values())

    def _reserve(self, stop: int) -> None:
        """Grow every column to the same whole-chunk capacity of at least ``stop`` rows."""
        if stop <= self._capacity():
            return
        new = max(stop, 2 * max(arr.shape[0] for arr in self._arrays.values()))
        new = -(-new // CHUNK) * CHUNK
        for arr in self._arrays.values():
            if arr.shape[0] != new:
                arr.resize((new, *arr.shape[1:]))
                self._touch_metadata(arr)

    def _touch_metadata(self, arr: zarr.Array) -> None:
        """A resize rewrote ``arr``'s zarr.json: a snapshot must not name rows it lost."""
        if self.root_dir is not None:
            self._dirty.add(self.root_dir / arr.path / "zarr.json")

    def append(self, rows: Mapping[str, np.ndarray | Sequence[Any]], n: int) -> None:
        """Write ``n`` rows (columns missing from ``rows`` keep their fill value), then commit."""
        if n == 0:
            return
        unknown = set(rows) - set(self._arrays)
        if unknown:
            raise KeyError(f"{self.name} has no column(s) {sorted(unknown)}")
        start, stop = self.committed, self.committed + n
        self._reserve(stop)
        writes = []
        for col, arr in self._arrays.items():
            # Every column, fill values included: chunks of a dense table are never absent.
            kind = object if arr.dtype.kind in "TUO" else arr.dtype
            values = rows[col] if col in rows else np.full((n, *arr.shape[1:]), arr.fill_value,
                                                           dtype=kind)
            writes.append(arr.async_array.setitem(slice(start, stop),
                                                  np.asarray(values, dtype=kind)))
            self._touch(arr, start, stop)
        _run_together(writes)
        self.committed = stop
        self.group.attrs["committed"] = stop
        self._touch(None, 0, 0)

    def _touch(self, arr: zarr.Array | None, start: int, stop: int) -> None:
        """Remember the files an append wrote (chunks, or the group's metadata) for ``sync``."""
        if self.root_dir is None:
            return
        if arr is None:
            self._dirty.add(self.root_dir / self.group.path / "zarr.json")
            return
        per = arr.chunks[0]
        for k in range(start // per, (stop - 1) // per + 1):
            key = arr.metadata.encode_chunk_key((k,) + (0,) * (arr.ndim - 1))
            path = self.root_dir / arr.path / key
            self._dirty.add(path)
            if arr.ndim > 1:  # c/k/0: the directory c/k is new with chunk k, so is its entry
                self._dirty.add(path.parent)

    def take_dirty(self) -> list[Path]:
        """The files appended to since the last ``sync`` or ``take_dirty`` (then forgotten)."""
        paths, self._dirty = sorted(self._dirty), set()
        return paths

    def sync(self) -> list[Path]:
        """fsync every file appended to since the last call; returns (and forgets) them."""
        paths = self.take_dirty()
        fsync_files(paths)
        return paths

    def column(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows ``start:stop`` of committed column ``name`` (fill values if it has none)."""
        top = self.committed if stop is None else min(stop, self.committed)
        arr = self._arrays.get(name)
        if arr is None:
            return np.full(max(top - start, 0), -1)
        return arr[start:top]

    def has_column(self, name: str) -> bool:
        return name in self._arrays

    def read(self, column: str, stop: int | None = None) -> np.ndarray:
        """Committed rows of ``column`` (of a damaged table: those before the first bad row)."""
        top = min(self.committed, self.readable) if self.problems else self.committed
        n = top if stop is None else min(stop, top)
        return self._arrays[column][:n]

    def truncate(self, n: int) -> None:
        """Forget rows from ``n`` on (they become garbage the next append overwrites)."""
        if n < self.committed:
            self.committed = n
            self.group.attrs["committed"] = n

    def trim(self) -> None:
        """Shrink every column to exactly the committed rows (on a clean finish)."""
        for arr in self._arrays.values():
            if arr.shape[0] != self.committed:
                arr.resize((self.committed, *arr.shape[1:]))
                self._touch_metadata(arr)


def _brief(exc: Exception, limit: int = 160) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


class RunStore:
    """A run's zarr store: run attributes, the evaluation log and the migration log."""

    def __init__(self, root: zarr.Group, path: Path, check: bool = False) -> None:
        self.root = root
        self.path = path
        self._dirty: set[Path] = set()
        """Files outside the tables' chunks and markers written since ``take_dirty``."""
        self.damage: list[str] = []
        """What the checks on opening found wrong (empty for a sound store)."""
        self._schemas, problems = expected(root.attrs.asdict())
        self.damage.extend(problems)
        self.evaluations = self._table("evaluations", check)
        self.migrations = self._table("migrations", check)
        # Readers need only the two logs; writers (and --resume) need the task log and snapshots.
        self.tasks = self._table("tasks", check) if "tasks" in root else None
        self.snapshots = self._group("snapshots")
        self.curves = self._table("curves", check) if "curves" in root else None
        if check:
            self._check_outcomes()
            self._check_snapshot_pointer()

    def _check_outcomes(self) -> None:
        """A COMPLETE row always has a finite fitness: NaN there means lost data (this also
        catches a deleted fitness chunk in stores written before tables were dense)."""
        ev = self.evaluations
        if "state" not in ev.columns or "fitness" not in ev.columns:
            return
        n = min(ev.committed, ev.readable)
        try:
            state, fitness = ev._arrays["state"][:n], ev._arrays["fitness"][:n]
        except Exception:  # noqa: BLE001 - unreadable columns are reported already
            return
        bad = np.flatnonzero((state == int(EvalState.COMPLETE)) & ~np.isfinite(fitness))
        if bad.size:
            problem = (f"evaluations/fitness: {bad.size} complete evaluations have no fitness "
                       f"(the first at row {bad[0]}): their data were lost")
            ev._damaged(int(bad[0]), problem)
            self.damage.append(problem)

    def _group(self, name: str) -> zarr.Group | None:
        try:
            member = self.root.get(name)
        except Exception as exc:  # noqa: BLE001 - unparseable metadata is damage
            self.damage.append(f"{name}/zarr.json cannot be read ({exc})")
            return None
        if member is not None and not isinstance(member, zarr.Group):
            self.damage.append(f"{name} is not a group")
            return None
        return member

    def _table(self, name: str, check: bool) -> Table:
        group = self._group(name)
        table = Table(group, name, self.path, check=check, schema=self._schemas[name])
        self.damage.extend(table.problems)
        return table

    def _check_snapshot_pointer(self) -> None:
        if self.snapshots is None:
            return
        # A writer may replace a snapshot between our reading the pointer and listing the
        # snapshots (analyze of a live run): only a problem seen twice in a row is damage.
        problems = self._pointer_problems(self.snapshots)
        if problems:
            with contextlib.suppress(Exception):
                problems = self._pointer_problems(zarr.open_group(str(self.path / "snapshots"),
                                                                  mode="r"))
        self.damage.extend(problems)

    def _pointer_problems(self, snapshots: zarr.Group) -> list[str]:
        try:
            pointers = snapshots.attrs.asdict()
            names = set(snapshots.array_keys())
        except Exception as exc:  # noqa: BLE001
            return [f"snapshots cannot be listed ({exc})"]
        out: list[str] = []
        serial = pointers.get("serial", 0)
        if not isinstance(serial, int) or serial < 0:
            out.append(f"the snapshot pointer's serial is {serial!r}, not a count")
        for key in ("latest", "previous"):
            name = pointers.get(key)
            if name is None or (key == "previous" and name == ""):
                if key == "latest" and isinstance(serial, int) and serial > 0:
                    out.append("the snapshot pointer names no latest snapshot although "
                               f"{serial} were written")
                continue
            if not isinstance(name, str) or name not in names:
                out.append(f"the snapshot pointer's {key!r} names {name!r}, which is not a "
                           f"snapshot in {self.path / 'snapshots'}")
        return out

    def require_curves(self) -> Table:
        """The curves table, created on first use (runs without reports never have one)."""
        if self.curves is None:
            self.curves = Table.create(self.root, "curves", CURVE_COLUMNS, self.path)
        return self.curves

    @staticmethod
    def location(run_dir: Path) -> Path:
        return Path(run_dir) / "run.zarr"

    @classmethod
    def create(cls, run_dir: Path, *, attrs: Mapping[str, Any], param_kinds: Mapping[str, str],
               dim: int) -> RunStore:
        path = cls.location(run_dir)
        # Made under a temporary name and renamed into place: a kill at any instant leaves
        # either no run.zarr or a whole one (the temporary is garbage the next start deletes).
        tmp = path.with_name(f".run.zarr.creating-{os.getpid()}")
        if tmp.exists():
            shutil.rmtree(tmp)
        root = zarr.open_group(str(tmp), mode="w")
        root.attrs.update({"format_version": FORMAT_VERSION, "status": "running", **attrs,
                           "param_names": list(param_kinds), "metric_names": []})
        Table.create(root, "evaluations", evaluation_columns(param_kinds, dim))
        Table.create(root, "migrations", MIGRATION_COLUMNS)
        Table.create(root, "tasks", task_columns(dim))
        root.require_group("snapshots")
        if path.exists():  # mode "w" semantics: a caller that creates a store replaces one
            shutil.rmtree(path)
        os.rename(tmp, path)
        return cls(zarr.open_group(str(path), mode="r+"), path)

    @classmethod
    def open(cls, run_dir: Path, mode: str = "r+", check: bool = True) -> RunStore:
        """Open and check a run's store; ``StoreDamaged`` if a writer (mode "r+") opens a
        damaged one. A reader (mode "r") gets ``damage`` listing what is wrong instead.
        ``check=False`` skips reading every chunk (for a store just checked)."""
        path = cls.location(run_dir)
        if not (path / "zarr.json").is_file():
            raise StoreError(f"{run_dir} is not an evo_engine run directory (no run.zarr inside)")
        try:
            root = zarr.open_group(str(path), mode=mode)
        except Exception as exc:  # noqa: BLE001 - any zarr failure means the same to the user
            raise StoreError(f"{path} cannot be opened as a zarr store: {exc}") from exc
        version = root.attrs.get("format_version")
        if not isinstance(version, int):
            raise StoreError(f"{path} has no format_version: it was not written by evo_engine")
        if version > FORMAT_VERSION:
            raise StoreError(
                f"{path} has store format {version}, newer than this evo_engine reads "
                f"({FORMAT_VERSION}): upgrade evo_engine to read it"
            )
        if any(g not in root for g in ("evaluations", "migrations")):
            raise StoreError(f"{path} lacks its evaluations/migrations groups: not a complete run store")
        store = cls(root, path, check=check)
        if store.damage and mode != "r":
            raise StoreDamaged(path, store.damage)
        return store

    @property
    def attrs(self) -> dict[str, Any]:
        return self.root.attrs.asdict()

    def set_attrs(self, **kw: Any) -> None:
        self.root.attrs.update(kw)
        self._dirty.add(self.path / "zarr.json")

    def take_dirty(self) -> list[Path]:
        """Files written since the last call, the root's metadata and every table's (then
        forgotten): what an fsync policy must sync before a snapshot names them."""
        paths = set(self._dirty)
        self._dirty.clear()
        for table in (self.tasks, self.curves, self.evaluations, self.migrations):
            if table is not None:
                paths.update(table.take_dirty())
        return sorted(paths)

    def ensure_metrics(self, names: Sequence[str]) -> None:
        known = list(self.root.attrs.get("metric_names", []))
        new = [n for n in names if n not in known]
        if not new:
            return
        for n in new:
            self.evaluations.add_column(f"metrics/{n}", "f8")
        self.root.attrs["metric_names"] = known + new
        self._dirty.add(self.path / "zarr.json")

    def close(self, status: str, stop_reason: str, trim: bool = False, **attrs: Any) -> None:
        if trim:
            for table in (self.evaluations, self.migrations, self.tasks, self.curves):
                if table is not None:
                    table.trim()
        # closed_at: when this job's store was complete on disk (benchmarks time up to here).
        self.set_attrs(status=status, stop_reason=stop_reason, closed_at=time.time(), **attrs)

    # -- snapshots --------------------------------------------------------------------------

    def write_snapshot(self, state: Mapping[str, Any], fsync: bool = False) -> str:
        """Store ``state`` (with the table positions it matches) and make it the latest;
        with ``fsync`` the snapshot reaches stable storage before its pointer, and the
        pointer before this returns."""
        payload = zlib.compress(json_in_pieces(state).encode(), 3)
        digest = hashlib.sha256(payload).hexdigest()
        pointers = self.snapshots.attrs.asdict()
        serial = int(pointers.get("serial", 0)) + 1
        name = f"s{serial:08d}"
        data = np.frombuffer(payload, dtype=np.uint8)
        # overwrite: a job killed mid-snapshot may have left this name half-written.
        arr = self.snapshots.create_array(
            name, shape=data.shape, chunks=(max(len(data), 1),), dtype="u1", compressors=None,
            attributes={"sha256": digest, "bytes": len(payload)}, overwrite=True,
        )
        arr[:] = data
        where = self.path / "snapshots"
        if fsync:
            fsync_files([where / name / "zarr.json", where / name / "c" / "0"])
        # The pointer goes last: until it is written the previous pair stays in charge.
        keep = {name, pointers.get("latest")}
        self.snapshots.attrs.update(
            {"latest": name, "previous": pointers.get("latest"), "serial": serial}
        )
        if fsync:
            fsync_files([where / "zarr.json"])
        for old in [k for k in self.snapshots.array_keys() if k not in keep]:
            with contextlib.suppress(Exception):
                del self.snapshots[old]
        return name

    def read_snapshot(self, name: str) -> dict[str, Any]:
        """Decode one snapshot; SnapshotCorrupt when it is missing, truncated or altered."""
        try:
            arr = self.snapshots[name]
            payload = arr[:].tobytes()
            if hashlib.sha256(payload).hexdigest() != arr.attrs["sha256"]:
                raise SnapshotCorrupt(f"snapshot {name} fails its checksum")
            return json.loads(zlib.decompress(payload))
        except SnapshotCorrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to decode means unusable
            raise SnapshotCorrupt(f"snapshot {name} is unreadable: {exc}") from exc

    def latest_snapshot(self, warn: Any = None) -> dict[str, Any] | None:
        """The newest usable snapshot, falling back to the previous one (with a warning);
        None when there is none usable (the caller replays the whole log)."""
        pointers = self.snapshots.attrs.asdict()
        names = [pointers[k] for k in ("latest", "previous") if pointers.get(k)]
        for i, name in enumerate(names):
            try:
                return self.read_snapshot(name)
            except SnapshotCorrupt as exc:
                if warn is not None:
                    then = ("falling back to the previous snapshot" if i + 1 < len(names) else
                            "there is no earlier snapshot to fall back to, so the run is "
                            "rebuilt by replaying its whole log (nothing recorded is lost)")
                    warn(f"{exc}; {then}")
        return None

