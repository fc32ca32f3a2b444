"""The identities of configurations and genomes: pure functions the search, the store and
analysis all need (a configuration's key for dedupe and repeats, a genome's digest for the
dispatch journal)."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np


def genome_digest(genome: np.ndarray) -> str:
    """A short fingerprint of a genome (bit-exact: a replayed genome has the same one)."""
    return f"{zlib.crc32(np.ascontiguousarray(genome, dtype=np.float64).tobytes()):08x}"


def config_key(params: Mapping[str, Any]) -> str:
    """The identity of a configuration: its decoded parameters, order-independent.

    ``repr`` keeps 1, 1.0, True and "1" apart (they are different choices) and round-trips
    floats exactly; numpy scalars count as the Python values they hold, so a configuration
    read back from the store has the key it had when it was issued.
    """
    parts = []
    for name, v in sorted(params.items()):
        if isinstance(v, np.generic):
            v = v.item()
        if v.__class__ is float:
            v += 0.0  # -0.0 and 0.0 are one value
        parts.append((name, v))
    return repr(tuple(parts))


def interval_key(key: str, uid: int) -> str:
    """The identity of a PBT interval: its configuration's ``key`` and its uid. An interval
    that continues a member with unchanged hyperparameters trains on from other weights, so it
    is a candidate of its own, not a repeat (the engine's incumbent and analyze's tables)."""
    return f"{key}@{uid}"


def plain_value(v: Any) -> Any:
    """A value as ``config_key`` sees it (numpy scalars as Python values, -0.0 as 0.0)."""
    if isinstance(v, np.generic):
        v = v.item()
    return v + 0.0 if v.__class__ is float else v
