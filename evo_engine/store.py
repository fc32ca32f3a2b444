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
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.core.sync import sync

from evo_engine.errors import InputError

FORMAT_VERSION = 1
CHUNK = 4096
STR = "str"


class StoreError(InputError):
    """The run directory holds no usable run store (or one this version cannot read)."""


class SnapshotCorrupt(RuntimeError):
    """A snapshot is truncated or altered; resume falls back to the previous one."""


class Table:
    """A group of equally long column arrays with an atomic ``committed`` row counter."""

    def __init__(self, group: zarr.Group) -> None:
        self.group = group
        self.committed = int(group.attrs.get("committed", 0))
        self._arrays: dict[str, zarr.Array] = {}
        self._load_arrays(group, "")

    def _load_arrays(self, group: zarr.Group, prefix: str) -> None:
        for name, member in group.members():
            if isinstance(member, zarr.Array):
                self._arrays[prefix + name] = member
            else:
                self._load_arrays(member, f"{prefix}{name}/")

    @classmethod
    def create(cls, parent: zarr.Group, name: str, columns: Mapping[str, tuple[str, tuple[int, ...]]]) -> Table:
        group = parent.require_group(name)
        group.attrs["committed"] = 0
        table = cls(group)
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
        self._arrays[name] = self.group.create_array(
            name, shape=(rows, *tail), chunks=(CHUNK, *tail), dtype=zdtype, fill_value=fill,
            compressors=None if dtype != STR else "auto",
        )

    def _capacity(self) -> int:
        if not self._arrays:
            return CHUNK
        return next(iter(self._arrays.values())).shape[0]

    def append(self, rows: Mapping[str, np.ndarray | Sequence[Any]], n: int) -> None:
        """Write ``n`` rows (columns missing from ``rows`` keep their fill value), then commit."""
        if n == 0:
            return
        start, stop = self.committed, self.committed + n
        if stop > self._capacity():
            new = max(stop, 2 * self._capacity())
            new = -(-new // CHUNK) * CHUNK
            for arr in self._arrays.values():
                arr.resize((new, *arr.shape[1:]))

        async def write_all() -> None:
            import asyncio

            jobs = []
            for col, values in rows.items():
                arr = self._arrays[col]
                v = np.asarray(values, dtype=object if arr.dtype.kind in "TUO" else arr.dtype)
                jobs.append(arr._async_array.setitem(slice(start, stop), v))
            await asyncio.gather(*jobs)

        sync(write_all())
        self.committed = stop
        self.group.attrs["committed"] = stop

    def read(self, column: str, stop: int | None = None) -> np.ndarray:
        n = self.committed if stop is None else min(stop, self.committed)
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


def _params_dtype(kind: str) -> str:
    return {"float": "f8", "int": "i8", "categorical": STR}[kind]


class RunStore:
    """A run's zarr store: run attributes, the evaluation log and the migration log."""

    def __init__(self, root: zarr.Group, path: Path) -> None:
        self.root = root
        self.path = path
        self.evaluations = Table(root["evaluations"])
        self.migrations = Table(root["migrations"])
        # Readers need only the two logs; writers (and --resume) need the task log and snapshots.
        self.tasks = Table(root["tasks"]) if "tasks" in root else None
        self.snapshots = root.get("snapshots")
        self.curves = Table(root["curves"]) if "curves" in root else None

    def require_curves(self) -> Table:
        """The curves table, created on first use (runs without reports never have one)."""
        if self.curves is None:
            self.curves = Table.create(self.root, "curves", {
                "uid": ("i8", ()), "step": ("i8", ()), "value": ("f8", ()),
            })
        return self.curves

    @staticmethod
    def location(run_dir: Path) -> Path:
        return Path(run_dir) / "run.zarr"

    @classmethod
    def create(cls, run_dir: Path, *, attrs: Mapping[str, Any], param_kinds: Mapping[str, str],
               dim: int) -> RunStore:
        path = cls.location(run_dir)
        root = zarr.open_group(str(path), mode="w")
        root.attrs.update({"format_version": FORMAT_VERSION, "status": "running", **attrs,
                           "param_names": list(param_kinds), "metric_names": []})
        columns: dict[str, tuple[str, tuple[int, ...]]] = {
            "uid": ("i8", ()), "island": ("i4", ()), "state": ("i1", ()), "fitness": ("f8", ()),
            "worker": ("i4", ()), "t_start": ("f8", ()), "t_end": ("f8", ()), "seed": ("i8", ()),
            "operator": (STR, ()), "error": (STR, ()), "accepted": ("bool", ()),
            "parents": ("i8", (2,)), "genome": ("f8", (dim,)),
        }
        for name, kind in param_kinds.items():
            columns[f"params/{name}"] = (_params_dtype(kind), ())
        Table.create(root, "evaluations", columns)
        Table.create(root, "migrations", {
            "uid": ("i8", ()), "origin": ("i4", ()), "destination": ("i4", ()),
            "accepted": ("bool", ()), "at_eval": ("i8", ()),
        })
        Table.create(root, "tasks", {
            "uid": ("i8", ()), "island": ("i4", ()), "seed": ("i8", ()), "operator": (STR, ()),
            "parents": ("i8", (2,)), "genome": ("f8", (dim,)), "info": (STR, ()),
            "reevaluation_of": ("i8", ()), "told_before": ("i8", ()),
        })
        root.require_group("snapshots")
        return cls(root, path)

    @classmethod
    def open(cls, run_dir: Path, mode: str = "r+") -> RunStore:
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
        return cls(root, path)

    @property
    def attrs(self) -> dict[str, Any]:
        return self.root.attrs.asdict()

    def set_attrs(self, **kw: Any) -> None:
        self.root.attrs.update(kw)

    def ensure_metrics(self, names: Sequence[str]) -> None:
        known = list(self.root.attrs.get("metric_names", []))
        new = [n for n in names if n not in known]
        if not new:
            return
        for n in new:
            self.evaluations.add_column(f"metrics/{n}", "f8")
        self.root.attrs["metric_names"] = known + new

    def close(self, status: str, stop_reason: str, trim: bool = False) -> None:
        if trim:
            for table in (self.evaluations, self.migrations, self.tasks, self.curves):
                if table is not None:
                    table.trim()
        self.set_attrs(status=status, stop_reason=stop_reason)

    # -- snapshots --------------------------------------------------------------------------

    def write_snapshot(self, state: Mapping[str, Any]) -> str:
        """Store ``state`` (with the table positions it matches) and make it the latest."""
        payload = zlib.compress(json.dumps(state, separators=(",", ":")).encode(), 3)
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
        # The pointer goes last: until it is written the previous pair stays in charge.
        keep = {name, pointers.get("latest")}
        self.snapshots.attrs.update(
            {"latest": name, "previous": pointers.get("latest"), "serial": serial}
        )
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
        """The newest usable snapshot, falling back to the previous one (with a warning)."""
        pointers = self.snapshots.attrs.asdict()
        for key in ("latest", "previous"):
            name = pointers.get(key)
            if not name:
                continue
            try:
                return self.read_snapshot(name)
            except SnapshotCorrupt as exc:
                if warn is not None:
                    warn(f"{exc}; falling back to the previous snapshot")
        return None

