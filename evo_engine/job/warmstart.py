"""``--warm-start FILE|RUN_DIR``: known configurations a new run evaluates before anything else.

FILE is a JSON or YAML list of parameter dicts (e.g. PDEBench's defaults); each is checked
against the scenario's space (every active parameter given, values in bounds; an inactive
conditional parameter may be left out). RUN_DIR is an earlier run: its best configurations
by estimated mean (``search.estimate``: a configuration re-evaluated counts once, with its
mean) are taken, ``population_size`` of them by default or N with ``RUN_DIR:N``.
The engine issues them first, recorded with operator ``warm_start`` (``Engine.add_warm_start``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from evo_engine.errors import InputError
from evo_engine.space import Space, SpaceError

OPERATOR = "warm_start"


class WarmStartError(InputError):
    """A warm-start file or run cannot be read, or a configuration does not fit the space."""


def _split_count(source: str) -> tuple[Path, int | None]:
    path = Path(source)
    head, sep, tail = source.rpartition(":")
    if path.exists() or not sep:
        return path, None
    try:
        count = int(tail)
    except ValueError:
        count = None
    if count is not None:
        if count < 1:
            raise WarmStartError(f"--warm-start {source}: the count after ':' must be >= 1")
        return Path(head), count
    if Path(head).is_dir():  # RUN_DIR:N with an N that is not a count
        raise WarmStartError(f"--warm-start {source}: N must be an integer (RUN_DIR:N takes "
                             f"the N best evaluations of {head}), not {tail!r}")
    return path, None


def _read_file(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise WarmStartError(f"--warm-start {path} is not a UTF-8 text file; give a list of "
                             f"parameter dicts as JSON or YAML, saved as UTF-8") from None
    except OSError as exc:
        raise WarmStartError(f"--warm-start {path} cannot be read: "
                             f"{exc.strerror or exc}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise WarmStartError(f"--warm-start {path}: reading YAML needs PyYAML "
                                 f"(`pip install pyyaml`), or give the list as JSON") from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise WarmStartError(f"--warm-start {path} is not valid YAML: {exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise WarmStartError(f"--warm-start {path} is not valid JSON ({exc}); give a list "
                             f"of parameter dicts (.json, or .yaml/.yml)") from None


def _from_run(path: Path, space: Space, top: int) -> list[dict[str, Any]]:
    from evo_engine.store.reader import load_run, run_estimates

    run = load_run(path)
    if run.damage:
        # Its best rows might be among the damaged ones: a silent partial pick is no warm start.
        raise WarmStartError(f"--warm-start {path}: the earlier run's store is damaged ("
                             + "; ".join(run.damage) + "); restore it from a copy, or warm "
                             "start from a file of configurations")
    missing = [n for n in space.names if f"params/{n}" not in run.evaluations]
    if missing:
        raise WarmStartError(f"--warm-start {path}: the earlier run has no column for the "
                             f"parameter(s) {missing} of this scenario's space")
    idx = np.flatnonzero(run.complete)
    if idx.size == 0:
        raise WarmStartError(f"--warm-start {path}: the earlier run has no complete evaluation")
    # The best estimated means (search.estimate, as the run itself ranked them), not the
    # luckiest single draws: one row per configuration (a PBT run ranks intervals, several
    # of which may share their hyperparameters: each configuration is taken once).
    ranked, first_row = run_estimates(run)
    configs: list[dict[str, Any]] = []
    for i in (first_row[e.key] for e in ranked):
        if len(configs) == top:
            break
        params: dict[str, Any] = {}
        for n in space.names:
            v = run.evaluations[f"params/{n}"][i]
            if isinstance(v, np.generic):
                v = v.item()
            if v == "" or (isinstance(v, float) and math.isnan(v)):
                continue  # masked: inactive in that configuration
            if space[n].kind == "int":
                v = int(v)
            elif space[n].kind == "categorical":
                # The store keeps choices as text: map back to the choice itself (1, True, ...).
                v = next((c for c in space[n].choices if str(c) == str(v)), v)
            params[n] = v
        config = {n: params[n] for n in space.active(params) if n in params}
        if config not in configs:
            configs.append(config)
    return configs


def load_configs(source: str | Path, space: Space, default_top: int) -> list[dict[str, Any]]:
    """The parameter dicts ``source`` (a file or ``RUN_DIR[:N]``) names, not yet checked."""
    path, top = _split_count(str(source))
    if not path.exists():
        raise WarmStartError(f"--warm-start {source}: no such file or run directory")
    if path.is_dir():
        return _from_run(path, space, top or default_top)
    if top is not None:
        raise WarmStartError(f"--warm-start {source}: ':N' applies to a run directory only")
    data = _read_file(path)
    if not isinstance(data, list) or not all(isinstance(c, Mapping) for c in data):
        raise WarmStartError(f"--warm-start {path}: expected a list of parameter dicts, "
                             f"e.g. [{{\"lr\": 0.001, \"model\": \"unet\"}}]")
    if not data:
        raise WarmStartError(f"--warm-start {path}: the list is empty")
    return [dict(c) for c in data]


def to_genomes(configs: list[dict[str, Any]], space: Space, source: str) -> list[np.ndarray]:
    """Encode each configuration; the first that does not fit the space is an error."""
    genomes = []
    for i, params in enumerate(configs):
        try:
            genomes.append(space.encode(params))
        except (SpaceError, TypeError, ValueError) as exc:
            raise WarmStartError(f"--warm-start {source}: configuration {i + 1} "
                                 f"({params}) does not fit the space: {exc}") from None
    return genomes


def warm_start_genomes(source: str | Path, space: Space, default_top: int) -> list[np.ndarray]:
    """The genomes of the known configurations ``source`` names, validated against ``space``."""
    return to_genomes(load_configs(source, space, default_top), space, str(source))


__all__ = ["OPERATOR", "WarmStartError", "load_configs", "to_genomes", "warm_start_genomes"]
