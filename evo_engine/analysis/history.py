"""Read a run store into plain numpy arrays: the one way analysis (and users) see a run.

``load_history(run_dir)`` is the documented helper: one numpy array per column of the
evaluation log, rows in the order the coordinator recorded them (the order results came
back, so row ``i`` is "the (i+1)-th finished evaluation"). ``to_dataframe`` turns that into
a pandas DataFrame when pandas is installed (it is not a dependency of evo_engine).

Everything here reads only rows below each table's ``committed`` counter, so it works on a
run that is still writing, and opens the store read-only, so it never touches a run's data.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from evo_engine.store.reader import Run, load_run


def load_history(run_dir: str | Path) -> dict[str, np.ndarray]:
    """The evaluation log of a run as a dict of numpy arrays, one entry per store column.

    Keys (all arrays have the same length, one row per recorded evaluation):
    ``uid``, ``island``, ``state`` (see ``STATE_NAMES``: 2 = COMPLETE, 3 = FAILED),
    ``fitness`` (NaN unless complete; lower is better), ``worker``, ``t_start`` and ``t_end``
    (Unix seconds), ``seed``, ``operator`` and ``error`` (str), ``accepted`` (bool: entered
    its island's population), ``parents`` (n, 2; -1 = none), ``genome`` (n, d; the unit-cube
    encoding), ``params/<name>`` (decoded values), ``metrics/<name>`` and, when the run
    recorded it, ``sigma`` (n, d; the ES step sizes per parameter, NaN for other operators).

    Example::

        from evo_engine.analysis import load_history
        h = load_history("runs/sphere")
        ok = h["state"] == 2
        best = h["fitness"][ok].argmin()
        print(h["params/lr"][ok][best])
    """
    return load_run(run_dir).evaluations


def to_dataframe(source: str | Path | Mapping[str, np.ndarray],
                 param_names: list[str] | None = None) -> Any:
    """The evaluation log as a pandas DataFrame, with exactly the CSV export's columns.

    ``source`` is a run directory, a ``Run`` or a dict from ``load_history``. Columns (as in
    ``analyze --csv``): ``uid, island, state`` (names: COMPLETE, FAILED, ...), ``fitness,
    worker, t_start, t_end, duration_s, seed, operator, accepted, parent1, parent2``, one per
    parameter and metric (their names), ``sigma_<param>`` when recorded, ``error`` (last
    line). pandas comes with the ``analysis`` extra: ``pip install evo-engine[analysis]``.
    """
    try:
        import pandas as pd
    except ImportError:
        raise ImportError(
            "to_dataframe needs pandas, which evo_engine does not install by default: "
            "`pip install pandas` (or evo-engine[analysis]), or use load_history() for the "
            "same data as numpy arrays"
        ) from None
    from evo_engine.analysis.export import csv_columns, table

    if isinstance(source, Run):
        run = source
    elif isinstance(source, (str, Path)):
        run = load_run(source)
    else:
        history = dict(source)
        # load_history lists params/<name> in the space's order, which is the genome's.
        names = param_names or [k[len("params/"):] for k in history if k.startswith("params/")]
        metrics = [k[len("metrics/"):] for k in history if k.startswith("metrics/")]
        run = Run(path=Path("."), attrs={"param_names": names, "metric_names": metrics},
                  evaluations=history)
    data = table(run)
    return pd.DataFrame({c: data[c] for c in csv_columns(run)})
