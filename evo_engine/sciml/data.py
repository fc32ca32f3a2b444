"""Read 1D advection data in PDEBench's HDF5 layout (real PDEBench files and ours) and split it.

A file must hold ``tensor`` ``[samples, nt, nx]``, ``x-coordinate`` ``[nx]`` and
``t-coordinate`` of length nt or nt + 1 (PDEBench's files have one entry too many). β comes from
the ``beta`` attribute, else from the file name (``..._beta4.0.hdf5``, ``adv_beta4.h5``).

Reads are lazy and strided like PDEBench's ``reduced_resolution`` (every 4th cell: nx 1024 → 256),
``reduced_resolution_t`` (every 5th frame: nt 201 → 41) and ``reduced_batch`` (every k-th sample),
but only the requested split is read, sample block by sample block, so a 8 GB file never has to
fit in memory.

Splits, for honest hyperparameter optimisation: test = the first 10% of the (reduced) samples
(PDEBench's own test set), validation = the next 10%, training = the rest. The optimiser only
ever sees validation metrics.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from evo_engine.errors import DataError

SPLITS = ("train", "val", "test", "all")
# ``beta4.0`` (PDEBench), ``beta_0.4``, ``beta=1``; a sign is β's own (``advection_beta-1_...``
# is what ``AdvectionRecipe.filename`` writes for β = -1), never a separator.
_BETA_IN_NAME = re.compile(r"beta[_=]?([-+]?[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)")


class DataFileError(DataError):
    """A data file is missing, unreadable or not in the expected layout (a ``ValueError``)."""


@dataclass(frozen=True)
class AdvectionFileInfo:
    """What a validated advection file holds, before any data are read."""

    path: Path
    samples: int
    nt: int
    nx: int
    beta: float | None


@dataclass(frozen=True)
class AdvectionData:
    """One split of an advection file: ``u`` ``[samples, nt, nx]`` float32 with its grid."""

    u: np.ndarray
    x: np.ndarray
    t: np.ndarray
    beta: float | None
    path: Path
    split: str


def beta_from_filename(path: str | os.PathLike) -> float | None:
    """Parse β from a name such as ``1D_Advection_Sols_beta4.0.hdf5``; None if it has none."""
    stem = Path(path).name
    for suffix in (".hdf5", ".h5"):
        stem = stem.removesuffix(suffix)
    match = _BETA_IN_NAME.search(stem)
    return float(match.group(1)) if match else None


def _bad(path: Path, problem: str) -> DataFileError:
    return DataFileError(
        f"{path} is not a usable 1D advection file: {problem}. Expected PDEBench's HDF5 layout: "
        "dataset 'tensor' [samples, nt, nx], 'x-coordinate' [nx] and 't-coordinate' [nt] or "
        "[nt + 1] (generate one with `python -m evo_engine.sciml.advection`)."
    )


def inspect_advection_file(path: str | os.PathLike) -> AdvectionFileInfo:
    """Check the layout of ``path`` and return its sizes and β; raises :class:`DataFileError`."""
    path = Path(path)
    if not path.is_file():
        raise _bad(path, "the file does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise _bad(path, f"it cannot be opened as HDF5 ({exc})") from None
    with f:
        for key in ("tensor", "x-coordinate", "t-coordinate"):
            if not isinstance(f.get(key), h5py.Dataset):
                raise _bad(path, f"dataset '{key}' is missing (found: {sorted(f.keys())})")
        tensor = f["tensor"]
        if tensor.ndim != 3:
            raise _bad(path, f"'tensor' has shape {tensor.shape}, not [samples, nt, nx]")
        if tensor.dtype.kind != "f":
            raise _bad(path, f"'tensor' has dtype {tensor.dtype}, not a float type")
        samples, nt, nx = tensor.shape
        if min(samples, nt, nx) < 1:
            raise _bad(path, f"'tensor' is empty (shape {tensor.shape})")
        x_len = f["x-coordinate"].shape
        if x_len != (nx,):
            raise _bad(path, f"'x-coordinate' has shape {x_len} but the tensor has nx = {nx}")
        t_len = f["t-coordinate"].shape
        if t_len not in ((nt,), (nt + 1,)):
            raise _bad(path, f"'t-coordinate' has shape {t_len} but the tensor has nt = {nt}")
        beta = f.attrs.get("beta")
    beta = float(np.asarray(beta).reshape(-1)[0]) if beta is not None else beta_from_filename(path)
    return AdvectionFileInfo(path, samples, nt, nx, beta)


MIN_SAMPLES = 3
"""The fewest samples that split into test, validation and training (one each at least)."""


def split_bounds(samples: int) -> dict[str, tuple[int, int]]:
    """Index ranges ``[start, stop)`` of each split for ``samples`` samples (test, val, train)."""
    if samples < MIN_SAMPLES:
        raise ValueError(
            f"need at least {MIN_SAMPLES} samples to split into test/val/train, got {samples}"
        )
    tenth = max(1, samples // 10)
    return {
        "test": (0, tenth),
        "val": (tenth, 2 * tenth),
        "train": (2 * tenth, samples),
        "all": (0, samples),
    }


def read_advection(
    path: str | os.PathLike,
    split: str = "all",
    *,
    reduced_resolution: int = 4,
    reduced_resolution_t: int = 5,
    reduced_batch: int = 1,
    block: int = 256,
) -> AdvectionData:
    """Read one split of an advection file with PDEBench's strides; see the module docstring."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    for name, value in (
        ("reduced_resolution", reduced_resolution),
        ("reduced_resolution_t", reduced_resolution_t),
        ("reduced_batch", reduced_batch),
    ):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    info = inspect_advection_file(path)
    start, stop = split_bounds(thinned_samples(info.samples, reduced_batch))[split]
    with h5py.File(info.path, "r") as f:
        tensor = f["tensor"]
        parts = []
        # Rows along x are contiguous on disk: read whole rows of the wanted frames and stride x
        # in memory, block by block, instead of asking HDF5 for a step in every dimension.
        for i in range(start, stop, block):
            j = min(i + block, stop)
            rows = tensor[
                i * reduced_batch : (j - 1) * reduced_batch + 1 : reduced_batch,
                ::reduced_resolution_t,
            ]
            parts.append(np.asarray(rows[..., ::reduced_resolution]))
        u = np.concatenate(parts).astype(np.float32, copy=False)
        x = np.asarray(f["x-coordinate"][::reduced_resolution], dtype=np.float32)
        t = np.asarray(f["t-coordinate"][: info.nt][::reduced_resolution_t], dtype=np.float32)
    return AdvectionData(u=u, x=x, t=t, beta=info.beta, path=info.path, split=split)


def thinned_samples(samples: int, reduced_batch: int) -> int:
    """How many of ``samples`` samples every ``reduced_batch``-th one keeps."""
    return len(range(0, samples, reduced_batch))


def strides_for(
    info: AdvectionFileInfo, nx: int, nt: int, samples: int | None = None
) -> dict[str, int]:
    """The ``read_advection`` strides that bring the file of ``info`` to ``nx`` × ``nt``.

    Lets a scenario ask for "nx 256, nt 41" and read both a native 256 × 41 file (strides 1, 1)
    and a PDEBench 1024 × 201 file (strides 4, 5). ``samples`` (optional) thins the samples with
    ``reduced_batch`` to at least that many. Raises :class:`DataFileError` when the file's grid
    is not a multiple of the wanted one, or when too few samples remain to split
    (:data:`MIN_SAMPLES`), so a scenario's ``prepare`` stops a run that no training could use.
    """
    if nx < 1 or nt < 2:
        raise ValueError(f"need nx >= 1 and nt >= 2, got nx={nx}, nt={nt}")
    if info.nx % nx or info.nt < nt or (info.nt - 1) % (nt - 1):
        raise _bad(
            info.path,
            f"its grid nx={info.nx}, nt={info.nt} cannot be strided to nx={nx}, nt={nt} "
            "(need nx_file a multiple of nx and nt_file − 1 a multiple of nt − 1)",
        )
    reduced_batch = max(1, info.samples // samples) if samples else 1
    kept = thinned_samples(info.samples, reduced_batch)
    if kept < MIN_SAMPLES:
        thinned = f" (every {reduced_batch}th kept: {kept})" if reduced_batch > 1 else ""
        raise _bad(
            info.path,
            f"it holds {info.samples} samples{thinned}, fewer than the {MIN_SAMPLES} that a "
            "test, a validation and a training split need",
        )
    return {
        "reduced_resolution": info.nx // nx,
        "reduced_resolution_t": (info.nt - 1) // (nt - 1),
        "reduced_batch": reduced_batch,
    }
