"""Structured logging: structlog JSON events in ``RUN_DIR/log.jsonl``.

Event names are stable snake_case (``run_started``, ``eval_failed``, ``worker_started``,
``stop_requested``, ``run_finished``); values go in fields; context such as ``rank`` is bound
once. Nothing is printed to the terminal from here. The file is the run's: ``close()`` at
the run's end (``evo_engine.job.run.execute``, however it ends) closes it, so a process that
runs many (a notebook, the ``Optimizer`` API, the tests) keeps no handle per run.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import IO, Any

import structlog

_files: list[IO[str]] = []


class _RunLog:
    """The run's file as the loggers see it: once closed, a late event (from a logger bound
    during the run, in a thread still winding down) is dropped instead of raising."""

    def __init__(self, file: IO[str]) -> None:
        self.file = file

    def write(self, text: str) -> None:
        with contextlib.suppress(ValueError):  # I/O operation on closed file
            self.file.write(text)

    def flush(self) -> None:
        with contextlib.suppress(ValueError):
            self.file.flush()


def configure(path: Path | None, level: str = "info", **context: Any) -> structlog.typing.FilteringBoundLogger:
    """Send events to ``path`` (appending; several ranks may share it) and return a bound logger."""
    close()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - closed by close()
        _files.append(f)
        factory: Any = structlog.WriteLoggerFactory(file=_RunLog(f))  # type: ignore[arg-type]
    else:
        factory = structlog.ReturnLoggerFactory()
    _setup(factory, level)
    return structlog.get_logger().bind(**context)


def close() -> None:
    """Close the run's log file (line-buffered: every event is on disk already). Events after
    it, from a logger bound before, are dropped (``_RunLog``) rather than raise."""
    if not _files:
        return
    _setup(structlog.ReturnLoggerFactory(), "info")
    for f in _files:
        f.close()
    _files.clear()


def _setup(factory: Any, level: str) -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
