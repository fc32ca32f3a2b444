"""Structured logging: structlog JSON events in ``RUN_DIR/log.jsonl``.

Event names are stable snake_case (``run_started``, ``eval_failed``, ``worker_started``,
``stop_requested``, ``run_finished``); values go in fields; context such as ``rank`` is bound
once. Nothing is printed to the terminal from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import structlog

_files: list[IO[str]] = []


def configure(path: Path | None, level: str = "info", **context: Any) -> structlog.typing.FilteringBoundLogger:
    """Send events to ``path`` (appending; several ranks may share it) and return a bound logger."""
    for f in _files:
        f.close()
    _files.clear()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives for the run
        _files.append(f)
        factory: Any = structlog.WriteLoggerFactory(file=f)
    else:
        factory = structlog.ReturnLoggerFactory()
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
    return structlog.get_logger().bind(**context)
