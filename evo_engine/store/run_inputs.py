"""What a run was made from besides its settings: preset, scenario file and data file.

The scenario's fingerprint (``Scenario.fingerprint_description``) covers the space and every
search setting. A resumed run must also see the same *inputs*: the problem size preset, the
scenario file's contents (its objective is code) and the data file it trains on. They are
stored in the run's ``inputs`` attribute and compared on ``--resume``; a difference is named
("scenario file scenarios/adv.py changed since the run started", ...) and refused unless
``--force``. Runs made before inputs were recorded have no ``inputs``: they resume unchecked,
with a warning saying so, and record their inputs from then on.

The data file is compared by size and modification time, not by hash: PDEBench files are
gigabytes. Its path is shown but a move alone is not a difference.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DATA_FILE_ENV = "EVO_ENGINE_ADVECTION_FILE"
"""Set by ``--data-file`` (and readable by scenarios); the data file a run trains on."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_inputs(scenario_path: Path, preset: str, environ: Mapping[str, str] | None = None
               ) -> dict[str, Any]:
    """The inputs of a run starting now (JSON-serialisable)."""
    env = os.environ if environ is None else environ
    scenario_path = Path(scenario_path)
    out: dict[str, Any] = {
        "preset": preset,
        "scenario_file": {"path": str(scenario_path.resolve()), "sha256": _sha256(scenario_path)},
        "data_file": None,
    }
    data = env.get(DATA_FILE_ENV)
    if data:
        p = Path(data)
        try:
            st = p.stat()
            out["data_file"] = {"path": str(p.resolve()), "size": st.st_size,
                                "mtime": round(st.st_mtime, 3)}
        except OSError:
            out["data_file"] = {"path": str(p), "size": None, "mtime": None}
    return out


def _when(t: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if isinstance(t, (int, float)) else "?"


def _data_text(d: Mapping[str, Any] | None) -> str:
    if not d:
        return "generated data (no --data-file)"
    return f"{d.get('path')} ({d.get('size')} bytes, modified {_when(d.get('mtime'))})"


def inputs_diff(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Each difference between a run's stored inputs and the current ones, in words."""
    out: list[str] = []
    if stored.get("preset") != current.get("preset"):
        out.append(f"preset: the run used {stored.get('preset')!r}, this job {current.get('preset')!r} "
                   "(pass --preset explicitly; 'auto' depends on whether a GPU is visible)")
    a, b = stored.get("scenario_file") or {}, current.get("scenario_file") or {}
    if a.get("sha256") != b.get("sha256"):
        out.append(f"scenario file: {b.get('path')} differs from the file the run started with "
                   f"({a.get('path')}; sha256 {str(a.get('sha256'))[:12]}… now "
                   f"{str(b.get('sha256'))[:12]}…)")
    da, db = stored.get("data_file"), current.get("data_file")
    if bool(da) != bool(db) or (da and db and (da.get("size"), da.get("mtime"))
                                != (db.get("size"), db.get("mtime"))):
        out.append(f"data file: the run used {_data_text(da)}, this job {_data_text(db)}")
    return out


__all__ = ["DATA_FILE_ENV", "inputs_diff", "run_inputs"]
