"""Callbacks: loggers that receive every finished evaluation on the coordinator.

A scenario's ``callbacks`` field (or ``--callback NAME``, repeatable) names them:

* ``tensorboard``: scalars (fitness, best so far, metrics, numeric params) per evaluation and
  one HParams entry per complete evaluation, in ``RUN_DIR/tensorboard`` (torch's
  ``SummaryWriter``; needs the ``tensorboard`` package: ``pip install evo-engine[tensorboard]``).
* ``mlflow``: one MLflow run per evaluation (params, metrics, tags) in an experiment named after
  the scenario, in a SQLite store ``RUN_DIR/mlflow.db`` (no server; ``evo-engine[mlflow]``,
  which brings mlflow-skinny, SQLAlchemy and Alembic). Read it with ``MlflowClient(
  tracking_uri="sqlite:///RUN_DIR/mlflow.db")``; its web UI needs the full ``mlflow`` package
  (``pip install mlflow``; mlflow-skinny has no Flask): ``mlflow ui --backend-store-uri
  sqlite:///RUN_DIR/mlflow.db``.
* ``wandb``: one offline W&B run for the whole search, one ``log`` per evaluation, under
  ``RUN_DIR/wandb`` (``wandb sync`` uploads it later; ``evo-engine[wandb]``).
* ``module:factory``: your own: ``factory(run_dir: Path, scenario: str)`` returns an object
  with ``log(record: EvaluationRecord)`` and ``close()``.

Loggers run on a background thread behind a queue, so a slow one never makes the
coordinator wait for it (it still shares the coordinator's GIL while it runs Python); a logger that
raises is reported once (stderr and ``log.jsonl`` event ``callback_failed``) and the run goes
on. The queue holds at most ``QUEUE_LIMIT`` records: a logger that falls that far behind loses
the *oldest* waiting records (dropping, not blocking: a slow MLflow server must not idle the
workers, and the store keeps every evaluation anyway), with one warning when it starts and the
count in ``log.jsonl`` (``callbacks_dropped``) and at the end of the run. Unbounded, a logger
slower than the results held every record of the run in memory. A logger that cannot be *created* (unknown name, package missing, a ``module:factory`` whose
module fails to import) is bad input: exit 2 before the run starts.
"""

from __future__ import annotations

import importlib
import math
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from evo_engine.errors import InputError

QUEUE_LIMIT = 10_000
"""Records waiting for the loggers at most (a few MB); beyond, the oldest are dropped."""

BUILTIN = ("tensorboard", "mlflow", "wandb")
NEEDS = {"tensorboard": ("tensorboard",), "mlflow": ("mlflow", "sqlalchemy", "alembic"),
         "wandb": ("wandb",)}
"""The packages each built-in logger imports (checked before the run starts)."""


class CallbackError(InputError):
    """A callback name is unknown or its package is not installed."""


@dataclass(frozen=True)
class EvaluationRecord:
    """One finished evaluation as a logger sees it (plain values only)."""

    uid: int
    island: int
    state: str
    """"COMPLETE", "FAILED" or "PRUNED"."""
    fitness: float | None
    params: dict[str, Any]
    metrics: dict[str, float]
    operator: str
    worker: int
    duration_s: float
    n_finished: int
    """Evaluations finished so far, this one included: the natural step axis."""
    best_fitness: float | None
    error: str = ""
    curve: list[tuple[int, float]] = field(default_factory=list)


class Logger(Protocol):
    def log(self, record: EvaluationRecord) -> None: ...

    def close(self) -> None: ...


def record_of(ev: Any, n_finished: int, best: float | None) -> EvaluationRecord:
    """An ``EvaluationRecord`` from an engine ``Evaluation``."""
    r = ev.result
    fitness = r.fitness if ev.state.name == "COMPLETE" and r.fitness is not None else None
    return EvaluationRecord(
        uid=int(ev.task.uid), island=int(ev.task.island), state=ev.state.name,
        fitness=None if fitness is None else float(fitness), params=dict(ev.task.params),
        metrics={k: float(v) for k, v in r.metrics.items()}, operator=str(ev.task.operator),
        worker=int(r.worker), duration_s=max(float(r.t_end) - float(r.t_start), 0.0),
        n_finished=int(n_finished), best_fitness=best, error=ev.error or "",
        curve=[(int(s), float(v)) for s, v in (r.curve or [])],
    )


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _need(module: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise CallbackError(f"callback {extra!r} needs the {module.split('.')[0]!r} package, "
                            f"which is not installed ({exc}); `pip install "
                            f"evo-engine[{extra}]`") from None


class TensorBoardLogger:
    """Scalars per evaluation and HParams per complete one, via torch's ``SummaryWriter``."""

    def __init__(self, run_dir: Path, scenario: str) -> None:
        _need("tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.dir = Path(run_dir) / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.dir))

    def log(self, rec: EvaluationRecord) -> None:
        w, step = self.writer, rec.n_finished
        if rec.fitness is not None:
            w.add_scalar("fitness", rec.fitness, step)
        if rec.best_fitness is not None:
            w.add_scalar("best_fitness", rec.best_fitness, step)
        for k, v in rec.metrics.items():
            if _finite(v):
                w.add_scalar(f"metrics/{k}", v, step)
        for k, v in rec.params.items():
            if _finite(v):
                w.add_scalar(f"params/{k}", v, step)
        if rec.fitness is not None:
            hparams = {k: v if isinstance(v, (int, float, str, bool)) else str(v)
                       for k, v in rec.params.items()}
            w.add_hparams(hparams, {"hparam/fitness": rec.fitness}, run_name=f"uid{rec.uid:06d}",
                          global_step=step)

    def close(self) -> None:
        self.writer.close()


def mlflow_uri(run_dir: Path) -> str:
    """The tracking URI of a run's MLflow store: SQLite in ``RUN_DIR/mlflow.db``.

    Not the ``mlruns`` file store: MLflow 3 keeps that in maintenance mode and refuses to read
    it without ``MLFLOW_ALLOW_FILE_STORE=true``."""
    return f"sqlite:///{(Path(run_dir) / 'mlflow.db').resolve()}"


class MLflowLogger:
    """One MLflow run per evaluation in a SQLite store (``RUN_DIR/mlflow.db``)."""

    def __init__(self, run_dir: Path, scenario: str) -> None:
        for module in NEEDS["mlflow"]:
            _need(module, "mlflow")
        import logging

        # Creating the store's tables logs INFO lines to stderr, through the live line.
        for name in ("mlflow.store.db.utils", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        from mlflow.tracking import MlflowClient

        Path(run_dir).mkdir(parents=True, exist_ok=True)
        self.uri = mlflow_uri(run_dir)
        self.client = MlflowClient(tracking_uri=self.uri)
        exp = self.client.get_experiment_by_name(scenario)
        self.experiment = exp.experiment_id if exp else self.client.create_experiment(scenario)

    def log(self, rec: EvaluationRecord) -> None:
        run = self.client.create_run(self.experiment, run_name=f"uid{rec.uid:06d}", tags={
            "evo_engine.uid": str(rec.uid), "evo_engine.island": str(rec.island),
            "evo_engine.operator": rec.operator, "evo_engine.state": rec.state,
        })
        rid = run.info.run_id
        for k, v in rec.params.items():
            self.client.log_param(rid, k, v)
        if rec.fitness is not None:
            self.client.log_metric(rid, "fitness", rec.fitness, step=rec.n_finished)
        for k, v in rec.metrics.items():
            if _finite(v):
                self.client.log_metric(rid, k, v, step=rec.n_finished)
        for step, value in rec.curve:
            if _finite(value):
                self.client.log_metric(rid, "curve", value, step=step)
        status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}.get(rec.state, "FAILED")
        self.client.set_terminated(rid, status=status)

    def close(self) -> None:
        pass


class WandbLogger:
    """One offline W&B run for the whole search (``RUN_DIR/wandb``; ``wandb sync`` uploads it)."""

    def __init__(self, run_dir: Path, scenario: str) -> None:
        wandb = _need("wandb", "wandb")
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=scenario, mode="offline", dir=str(run_dir),
                              name=Path(run_dir).name, reinit="create_new",
                              settings=wandb.Settings(silent=True, console="off"))

    def log(self, rec: EvaluationRecord) -> None:
        row: dict[str, Any] = {"uid": rec.uid, "island": rec.island, "state": rec.state}
        if rec.fitness is not None:
            row["fitness"] = rec.fitness
        if rec.best_fitness is not None:
            row["best_fitness"] = rec.best_fitness
        row.update({f"params/{k}": v for k, v in rec.params.items()})
        row.update({f"metrics/{k}": v for k, v in rec.metrics.items() if _finite(v)})
        self.run.log(row, step=rec.n_finished)

    def close(self) -> None:
        self.run.finish()


FACTORIES: dict[str, Callable[[Path, str], Any]] = {
    "tensorboard": TensorBoardLogger, "mlflow": MLflowLogger, "wandb": WandbLogger,
}


def _factory(name: str) -> Callable[[Path, str], Any]:
    if name in FACTORIES:
        return FACTORIES[name]
    module, sep, attr = name.partition(":")
    if not sep or not module or not attr:
        raise CallbackError(f"unknown callback {name!r}: choose from {list(BUILTIN)} or give "
                            f"your own as 'module:factory'")
    try:
        return getattr(importlib.import_module(module), attr)
    except Exception as exc:  # noqa: BLE001 - the user's module may raise anything at import
        raise CallbackError(f"callback {name!r} cannot be imported: "
                            f"{type(exc).__name__}: {exc}") from None


def check_callbacks(names: Iterable[str]) -> None:
    """Refuse unknown names and missing packages before a run touches anything."""
    for name in names:
        _factory(name)
        for module in NEEDS.get(name, ()):
            _need(module, name)


class CallbackSet:
    """The run's loggers, fed from a queue on one background thread."""

    def __init__(self, loggers: dict[str, Any], warn: Callable[[str], None],
                 log: Any = None, limit: int = QUEUE_LIMIT) -> None:
        self.loggers = loggers
        self.warn = warn
        self.log = log
        self.failures: dict[str, int] = {}
        self.limit = limit
        self.dropped = 0
        """Records dropped unlogged because the queue was full (the oldest first)."""
        self._queue: deque[EvaluationRecord] = deque()
        self._closing = False
        self._ready = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="evo-callbacks", daemon=True)
        if loggers:
            self._thread.start()

    @classmethod
    def create(cls, names: Iterable[str], run_dir: Path, scenario: str,
               warn: Callable[[str], None], log: Any = None) -> CallbackSet:
        loggers = {}
        for name in dict.fromkeys(names):
            try:
                loggers[name] = _factory(name)(Path(run_dir), scenario)
            except CallbackError:
                raise
            except Exception as exc:  # noqa: BLE001 - a logger that cannot start is not fatal
                warn(f"callback {name!r} could not start and is off for this run: "
                     f"{type(exc).__name__}: {exc}")
        return cls(loggers, warn, log)

    def __call__(self, record: EvaluationRecord) -> None:
        if not self.loggers:
            return
        with self._ready:
            full = len(self._queue) >= self.limit
            if full:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(record)
            self._ready.notify()
        if full:
            self._dropping()

    def _dropping(self) -> None:
        if self.dropped == 1:
            self.warn(f"callbacks fell {self.limit} evaluations behind; the oldest waiting "
                      "records are dropped from now on (the run store keeps every evaluation)")
        if self.log is not None and self.dropped % self.limit == 1:
            self.log.warning("callbacks_dropped", dropped=self.dropped, limit=self.limit)

    def _next(self) -> EvaluationRecord | None:
        with self._ready:
            while not self._queue and not self._closing:
                self._ready.wait()
            return self._queue.popleft() if self._queue else None

    def _loop(self) -> None:
        while True:
            rec = self._next()
            if rec is None:
                return
            for name, logger in self.loggers.items():
                self._safely(name, "log", lambda lg=logger, r=rec: lg.log(r))

    def _safely(self, name: str, what: str, call: Callable[[], Any]) -> None:
        try:
            call()
        # A logger never stops the run; SystemExit too (a library that gives up with
        # sys.exit() would end the logger thread, and every later record would be lost).
        except (Exception, SystemExit) as exc:  # noqa: BLE001
            n = self.failures.get(name, 0) + 1
            self.failures[name] = n
            if self.log is not None:
                self.log.warning("callback_failed", callback=name, call=what,
                                 error=f"{type(exc).__name__}: {exc}")
            if n == 1:
                self.warn(f"callback {name!r} failed ({type(exc).__name__}: {exc}); the run "
                          f"goes on (further failures only in log.jsonl)")

    def close(self, timeout: float = 60.0) -> None:
        """Deliver what is queued (waiting at most ``timeout`` s), then close every logger."""
        if not self.loggers:
            return
        with self._ready:
            self._closing = True
            self._ready.notify()
        self._thread.join(timeout)
        if self.dropped:
            self.warn(f"callbacks: {self.dropped} evaluation record(s) were dropped because "
                      f"the loggers fell more than {self.limit} behind")
            if self.log is not None:
                self.log.warning("callbacks_dropped", dropped=self.dropped, limit=self.limit)
        if self._thread.is_alive():
            self.warn(f"callbacks still busy after {timeout:.0f} s at the end of the run; "
                      f"their last records may be missing")
            return
        for name, logger in self.loggers.items():
            self._safely(name, "close", logger.close)


__all__ = ["BUILTIN", "QUEUE_LIMIT", "CallbackError", "CallbackSet", "EvaluationRecord", "Logger",
           "check_callbacks", "record_of"]
