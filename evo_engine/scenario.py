"""Scenarios: what to optimise and how, loaded and validated from a ``.py`` file.

A scenario file defines ``make_scenario(preset: str) -> Scenario`` (preset is "cpu" or
"full"), or a module-level ``scenario = Scenario(...)``. It may also define, at module level,
``objective_batch(params_list, ctxs)`` and ``batch_key(params)`` (see the fields of the same
names); they are picked up unless the Scenario sets them itself. Loading never shows the user a
traceback: every problem becomes a ScenarioError whose message names the file and field.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from evo_engine.errors import InputError
from evo_engine.search.engine import EngineConfig, pbt_clashes
from evo_engine.search.operators import DESIGNS, OPERATORS
from evo_engine.search.pareto import Objectives, parse_objectives
from evo_engine.search.pbt import PBTConfig
from evo_engine.search.pruning import ASHAConfig
from evo_engine.space import Space

MAX_EVAL_TIMEOUT_S = 1e9
"""The longest ``eval_timeout_s``: the inline transport's timer (setitimer) holds no more."""


class ScenarioError(InputError):
    """A scenario file or one of its fields is unusable; the message says which and why."""


def flag_for_a_number(annotation: Any, value: Any) -> str | None:
    """What is wrong with ``value`` for a field typed ``annotation``, when it is a bool given
    for an int or float field (optional or not); None otherwise. pydantic's lax mode reads
    ``True`` as 1, so ``seed=True`` or ``--set max_evals=true`` ran as 1."""
    kinds = set(get_args(annotation)) if get_origin(annotation) in (Union, UnionType) \
        else {annotation}
    if isinstance(value, bool) and kinds & {int, float} and bool not in kinds:
        return f"must be a number, not {value}"
    return None


class _NoFlagsForNumbers(BaseModel):
    """A bool given for a number field is refused (``flag_for_a_number``)."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_flag_for_a_number(cls, v: Any, info: ValidationInfo) -> Any:
        problem = info.field_name and flag_for_a_number(
            cls.model_fields[info.field_name].annotation, v)
        if problem:
            raise ValueError(problem)
        return v


class PBTSettings(_NoFlagsForNumbers):
    """Population-based training (``Scenario.pbt``; docs/pbt.md, ``evo_engine.search.pbt``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    interval: int = Field(1, ge=1)
    """Training steps (e.g. epochs) per interval: one task trains a member this much further."""
    quantile: float = Field(0.25, gt=0.0, le=0.5)
    """A member in the worst ``quantile`` at its step exploits one of the best ``quantile``."""
    explore: Literal["perturb", "resample"] = "perturb"
    """How an exploiting member changes the copied hyperparameters: "perturb" = a Gaussian
    step of ``sigma`` in the (log-aware) unit cube; "resample" = also redraw each with
    probability ``resample_probability``."""
    sigma: float = Field(0.1, gt=0.0, le=1.0)
    resample_probability: float = Field(0.25, ge=0.0, le=1.0)
    fixed: tuple[str, ...] = ()
    """Parameters explore never changes (architecture: the weights fix them); an exploit copies
    them with the weights."""

    def config(self) -> PBTConfig:
        return PBTConfig(self.interval, self.quantile, self.explore, self.sigma,
                         self.resample_probability, tuple(self.fixed))


class Scenario(_NoFlagsForNumbers):
    """Everything a run needs: the space, the objective, the search settings and the budget."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    name: str = Field(min_length=1)
    space: Space
    objective: Callable[..., Any]
    """``objective(params, ctx) -> float | dict``; a dict carries ``fitness`` plus metrics.
    Lower fitness is better."""
    fitness_name: str = Field("fitness", min_length=1)
    """What fitness measures, with its unit if any (e.g. "validation nRMSE"): the name on the
    plots' axes. Labels only; not part of the search or of the fingerprint."""
    prepare: Callable[[], Any] | None = None
    """Called once on the coordinator before any worker starts (e.g. generate a data set)."""
    finalize: Callable[..., dict[str, float]] | None = None
    """``finalize(params, ctx) -> metrics`` run for the best individuals at the end of a run
    (e.g. test-split metrics); its results are stored in the run's ``final`` attribute."""
    islands: int = Field(1, ge=1)
    population_size: int = Field(8, ge=2)
    operator: str = "ga"
    operator_settings: dict[str, Any] = Field(default_factory=dict)
    initial_design: str = "random"
    max_evals: int = Field(100, ge=1)
    max_time: float | None = Field(None, gt=0)
    """Seconds of wall time after which no new evaluation starts."""
    seed: int = Field(0, ge=0)
    workers: int | None = Field(None, ge=1)
    """Local worker processes when not under mpiexec (default: the cores this process may
    use, its CPU affinity)."""
    migration_interval: int = Field(10, ge=0)
    migrants: int = Field(1, ge=0)
    topology: Literal["ring"] | list[list[int]] = "ring"
    checkpoint_every: int = Field(50, ge=1)
    sync: bool = False
    pruner: Literal["none", "asha"] = "none"
    """Early stopping of evaluations whose objective calls ``ctx.report(step, value)``:
    "asha" = asynchronous successive halving with rungs at ``min_steps · eta**k`` steps."""
    eta: int = Field(3, ge=2)
    """ASHA: at a rung, the best 1/eta of the values seen there go on."""
    min_steps: int = Field(1, ge=1)
    """ASHA: the first rung, in the objective's steps (e.g. epochs completed)."""
    max_steps: int | None = Field(None, ge=2)
    """ASHA: the steps a complete evaluation reports up to (e.g. its epochs); required."""
    grace_steps: int = Field(0, ge=0)
    """ASHA: no evaluation is stopped before this step (rungs below it are dropped; a
    non-finite report still stops). 0 = off; advection_multi_asha uses 4 on cpu."""
    smooth: int = Field(1, ge=1)
    """ASHA: a rung compares the median (or mean or min, ``smooth_by``) of each evaluation's last
    ``smooth`` reports instead of its one report there, so one noisy epoch does not stop a
    training. 1 = off (the raw report); advection_multi_asha uses 3."""
    smooth_by: Literal["median", "mean", "min"] = "median"
    """ASHA: how ``smooth`` reduces the window (see docs/scenarios.md, Early stopping)."""
    repeats: int = Field(0, ge=0)
    """For noisy objectives: evaluate each promising configuration this many more times, each
    with a fresh seed (its fitness becomes the mean). 0 = never evaluate a configuration twice."""
    intensify: int = Field(0, ge=0)
    """For noisy objectives: a configuration whose first result beats the incumbent's mean is
    evaluated again on seeds common with the incumbent, up to this many evaluations in all,
    before it may become the best (it drops out as soon as it falls behind on the common
    seeds). 0 = off; the SciML scenarios use 3. See docs/noise.md."""
    objective_batch: Callable[..., Any] | None = None
    """``objective_batch(params_list, ctxs) -> list``: evaluate several parameter sets in one
    call (e.g. train K models at once on one GPU). Item i is what ``objective`` would return
    for member i, or an exception instance (member i FAILED; ``StopEvaluation()`` = pruned).
    ``ctxs[i]`` is member i's own context (seed, uid, ``report``/``should_stop``)."""
    batch_key: Callable[..., Any] | None = None
    """``batch_key(params) -> hashable``: only tasks with equal keys share a batch (e.g. the
    architecture parameters); without it any tasks may."""
    batch: int = Field(1, ge=1)
    """Tasks a worker evaluates at once through ``objective_batch`` (CLI ``--batch K``)."""
    eval_timeout_s: float | None = Field(None, gt=0)
    """Seconds one evaluation (one ``objective_batch`` call for a batch) may run before it is
    recorded FAILED "timed out after N s"; off by default (None), at most
    ``MAX_EVAL_TIMEOUT_S``. See the README for what each transport does then."""
    objectives: list[Any] = Field(default_factory=list)
    """Several objectives: ``[("val_nrmse", "min"), ("train_seconds", "min")]`` (a bare name
    means "min"). The objective then returns a dict of named values (these and any others);
    the search ranks by Pareto dominance (docs/multiobjective.md). Empty = one ``fitness``."""
    constraints: dict[str, Any] = Field(default_factory=dict)
    """Named values that must hold, e.g. ``{"gpu_mem_gb": ("<=", 40)}``. A violated one makes
    the evaluation infeasible (recorded COMPLETE with ``constraint_violation`` > 0, ranked
    behind every feasible one), not FAILED. Needs ``objectives``."""
    pbt: PBTSettings | None = None
    """Population-based training: each evaluation is one interval of a member's training,
    warm-started from a checkpoint (``ctx.load_checkpoint``); e.g.
    ``pbt=dict(interval=2, quantile=0.25, explore="perturb", fixed=("model",))``. None = off."""
    callbacks: list[str] = Field(default_factory=list)
    """Loggers that receive every finished evaluation: "tensorboard", "mlflow", "wandb" or
    "module:factory" (``evo_engine.job.callbacks``); ``--callback`` adds more."""

    @field_validator("objectives", mode="before")
    @classmethod
    def _objectives_are_a_list(cls, v: Any) -> Any:
        # The one rule (search/pareto.py), shared with the Optimizer: a bare string or a bare
        # (name, sense) pair is refused there, before pydantic's list[Any] takes it apart.
        parse_objectives(v, {})
        return v

    @field_validator("name")
    @classmethod
    def _name_is_one_path_part(cls, v: str) -> str:
        # The default run directory is runs/<name>: "../x" or "a/b" would put it elsewhere.
        if "/" in v or "\\" in v or "\0" in v or v.strip() in (".", ".."):
            raise ValueError(f"{v!r} cannot name a run directory (runs/<name> by default): "
                             "use a name without '/', '\\' or a bare '.' or '..'")
        return v

    @field_validator("eval_timeout_s")
    @classmethod
    def _timer_can_hold(cls, v: float | None) -> float | None:
        # --workers 0 arms an OS interval timer, which overflows past ~9e9 s (and on inf).
        if v is not None and not v <= MAX_EVAL_TIMEOUT_S:
            raise ValueError(f"must be at most {MAX_EVAL_TIMEOUT_S:g} seconds (about 30 "
                             "years; None, or --set eval_timeout_s=null, is no limit)")
        return v

    @field_validator("operator")
    @classmethod
    def _known_operator(cls, v: str) -> str:
        if v not in OPERATORS:
            raise ValueError(f"unknown operator {v!r}; choose from {sorted(OPERATORS)}")
        return v

    @field_validator("initial_design")
    @classmethod
    def _known_design(cls, v: str) -> str:
        if v not in DESIGNS:
            raise ValueError(f"unknown initial design {v!r}; choose from {sorted(DESIGNS)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        try:
            OPERATORS[self.operator].Settings(**self.operator_settings)
        except ValidationError as exc:
            raise ValueError(
                f"operator_settings for {self.operator!r}: {_format_errors(exc, prefix='')}"
            ) from None
        if self.intensify == 1:
            raise ValueError("intensify is a race length: 0 (off) or at least 2 evaluations")
        spec = self.objective_spec()
        if spec is not None:
            # The worker records a dict's "fitness": give it the first objective (minimised).
            if not isinstance(self.objective, NamedValues):
                self.__dict__["objective"] = NamedValues(self.objective, spec)
            if self.objective_batch is not None and not isinstance(self.objective_batch,
                                                                    NamedValues):
                self.__dict__["objective_batch"] = NamedValues(self.objective_batch, spec,
                                                               batch=True)
        if self.pbt is not None:
            self._check_pbt(self.pbt)
        if self.pruner == "asha":
            if self.max_steps is None:
                raise ValueError(
                    "pruner 'asha' needs max_steps: the steps (e.g. epochs) a complete "
                    "evaluation reports up to"
                )
            if self.max_steps <= self.min_steps:
                raise ValueError(
                    f"max_steps ({self.max_steps}) must exceed min_steps ({self.min_steps}), "
                    "or there is no rung to stop at"
                )
            ladder = ASHAConfig(self.eta, self.min_steps, self.max_steps).rungs
            if self.grace_steps > ladder[-1]:
                raise ValueError(
                    f"grace_steps ({self.grace_steps}) is past the last rung ({ladder[-1]} of "
                    f"{', '.join(map(str, ladder))}): ASHA would never stop anything; lower it "
                    "or set pruner='none'"
                )
        # The engine's own checks (migrants <= population_size, ...), held in one place.
        self.engine_config()
        return self

    def objective_spec(self) -> Objectives | None:
        """The validated objectives and constraints, or None for one fitness."""
        return parse_objectives(self.objectives, self.constraints)

    def _check_pbt(self, pbt: PBTSettings) -> None:
        unknown = [n for n in pbt.fixed if n not in self.space.names]
        if unknown:
            raise ValueError(f"pbt.fixed names {unknown}, which the space does not have "
                             f"(its parameters: {self.space.names})")
        # The engine's clashes (one copy: search/engine.py), then the worker's batch.
        bad = pbt_clashes(pruning=self.pruner == "asha", sync=self.sync, repeats=self.repeats,
                          intensify=self.intensify, objectives=bool(self.objectives))
        if self.batch > 1:
            bad.append(f"batch {self.batch} (a batch of intervals would load and save several "
                       "checkpoints in one stacked training, which objective_batch does not do; "
                       "set batch=1)")
        if bad:
            raise ValueError("pbt cannot be combined with " + "; nor with ".join(bad))

    def engine_config(self) -> EngineConfig:
        topo = self.topology if self.topology == "ring" else tuple(tuple(r) for r in self.topology)
        return EngineConfig(
            max_evals=self.max_evals, islands=self.islands, population_size=self.population_size,
            operator=self.operator, operator_settings=dict(self.operator_settings),
            initial_design=self.initial_design, seed=self.seed,
            migration_interval=self.migration_interval, migrants=self.migrants, topology=topo,
            sync=self.sync,
            repeats=self.repeats,
            intensify=self.intensify,
            objectives=self.objective_spec(),
            pruning=ASHAConfig(self.eta, self.min_steps, self.max_steps, self.grace_steps,
                               self.smooth, self.smooth_by)
            if self.pruner == "asha" and self.max_steps is not None else None,
            pbt=self.pbt.config() if self.pbt is not None else None,
        )

    def fingerprint_description(self) -> dict[str, Any]:
        """What must match for a run to be resumed: the space and every search setting."""
        return {"space": self.space.describe(), **self.engine_config().describe()}

    def fingerprint(self) -> str:
        # Workers load scenarios too: hashing here keeps zarr out of their imports.
        text = json.dumps(self.fingerprint_description(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class NamedValues:
    """A multi-objective objective (or batch objective) whose dicts gain ``fitness``: the first
    objective, minimised, so the worker records it like any fitness; the engine ranks by all
    of them (search/engine.py). A result without the objective values is an error that names
    them. Picklable when the wrapped function is."""

    def __init__(self, fn: Callable[..., Any], spec: Objectives, batch: bool = False) -> None:
        self.fn, self.spec, self.batch = fn, spec, batch

    def __call__(self, params: Any, ctx: Any) -> Any:
        out = self.fn(params, ctx)
        if self.batch:
            return [v if isinstance(v, BaseException) else self._with_fitness(v) for v in out]
        return self._with_fitness(out)

    def _with_fitness(self, value: Any) -> Any:
        if not isinstance(value, dict) or "fitness" in value:
            if not isinstance(value, dict):
                raise ValueError(f"a multi-objective scenario's objective returns a dict with "
                                 f"{list(self.spec.names)}, not {type(value).__name__}")
            return value
        raw = self.spec.raw(value)  # raises, naming what is missing
        return {"fitness": self.spec.minimised(raw)[0], **value}


def _format_errors(exc: ValidationError, prefix: str = "field ") -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(scenario)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "is not a scenario field (a typo?)"
        elif ("input" in err and err["type"] not in ("missing",) and not callable(err["input"])
              and loc != "(scenario)"):  # a model-level rule's input is the whole scenario
            msg = f"{msg} (got {err['input']!r})"
        parts.append(f"{prefix}{loc!r}: {msg}" if loc != "(scenario)" else msg)
    return "; ".join(parts)


def validate_scenario(fields: dict[str, Any], source: str = "scenario") -> Scenario:
    """Build a Scenario, turning validation errors into one readable ScenarioError."""
    try:
        return Scenario(**fields)
    except ValidationError as exc:
        raise ScenarioError(f"{source}: {_format_errors(exc)}") from None


def _module_name(path: Path) -> str:
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    return f"evo_scenario_{path.stem}_{digest}"


def load_scenario(path: Path | str, preset: str = "cpu") -> Scenario:
    """Import a scenario file and return its validated Scenario."""
    path = Path(path)
    if not path.exists():
        raise ScenarioError(f"scenario file {path} does not exist")
    if path.is_dir() or path.suffix != ".py":
        raise ScenarioError(f"scenario {path} must be a .py file")
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ScenarioError(f"scenario file {path} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # so objectives defined in the file can be pickled by reference
    try:
        spec.loader.exec_module(module)
        if hasattr(module, "make_scenario"):
            scenario = module.make_scenario(preset)
        elif hasattr(module, "scenario"):
            scenario = module.scenario
        else:
            raise ScenarioError(
                f"scenario file {path} defines neither make_scenario(preset) nor scenario"
            )
    except ScenarioError:
        raise
    except ValidationError as exc:
        raise ScenarioError(f"scenario {path}: {_format_errors(exc)}") from None
    except SystemExit as exc:  # e.g. a training script's argparse, run at import
        line = _where_in(exc, path).strip(" ()")
        raise ScenarioError(
            f"scenario file {path} exited while loading ({line + ': ' if line else ''}"
            f"SystemExit({exc.code!r})): a scenario file is imported, not run as a script; "
            "put its argument parsing and sys.exit under `if __name__ == \"__main__\":`"
        ) from None
    except Exception as exc:  # noqa: BLE001 - a user's file may raise anything
        where = _where_in(exc, path)
        raise ScenarioError(f"scenario file {path} failed to load{where}: {type(exc).__name__}: {exc}") from None
    if not isinstance(scenario, Scenario):
        raise ScenarioError(
            f"scenario file {path} must produce an evo_engine.scenario.Scenario, got {type(scenario).__name__}"
        )
    scenario = _with_module_batch_functions(scenario, module, path)
    check_batch(scenario, f"scenario {path}")
    return scenario


def _with_module_batch_functions(scenario: Scenario, module: Any, path: Path) -> Scenario:
    """Take ``objective_batch`` / ``batch_key`` from the file when the Scenario lacks them."""
    found = {}
    for name in ("objective_batch", "batch_key"):
        fn = getattr(module, name, None)
        if fn is None or getattr(scenario, name) is not None:
            continue
        if not callable(fn):
            raise ScenarioError(f"scenario file {path}: {name} must be a function, got "
                                f"{type(fn).__name__}")
        found[name] = fn
    return scenario.model_copy(update=found) if found else scenario


def check_batch(scenario: Scenario, source: str) -> None:
    """A batch larger than one needs an objective that takes batches."""
    if scenario.batch > 1 and scenario.objective_batch is None:
        raise ScenarioError(
            f"{source}: batch {scenario.batch} needs an objective_batch(params_list, ctxs) "
            "function in the scenario file (this scenario evaluates one task at a time); "
            "use batch 1 or add objective_batch"
        )


def _where_in(exc: BaseException, path: Path) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == path]
    return f" (line {frames[-1].lineno})" if frames else ""


def override(scenario: Scenario, **changes: Any) -> Scenario:
    """A copy of ``scenario`` with CLI overrides applied and validated again."""
    changes = {k: v for k, v in changes.items() if v is not None}
    if not changes:
        return scenario
    fields = {k: getattr(scenario, k) for k in Scenario.model_fields}
    fields.update(changes)
    source = f"scenario {scenario.name!r} with command-line overrides"
    result = validate_scenario(fields, source=source)
    check_batch(result, source)
    return result
