"""Loggers for the callback tests, importable as ``fake_loggers:...`` (tests/ is on sys.path)."""

from __future__ import annotations

import json
from pathlib import Path


class JsonLinesLogger:
    """Writes each record as a JSON line to RUN_DIR/fake_callback.jsonl."""

    def __init__(self, run_dir: Path, scenario: str) -> None:
        self.f = open(Path(run_dir) / "fake_callback.jsonl", "w", encoding="utf-8")  # noqa: SIM115
        self.scenario = scenario

    def log(self, rec) -> None:
        self.f.write(json.dumps({"uid": rec.uid, "state": rec.state, "fitness": rec.fitness,
                                 "params": rec.params, "n_finished": rec.n_finished,
                                 "best": rec.best_fitness, "scenario": self.scenario}) + "\n")

    def close(self) -> None:
        self.f.write(json.dumps({"closed": True}) + "\n")
        self.f.close()


class Exploding:
    """Fails on every record: the run must go on and warn once."""

    def __init__(self, run_dir: Path, scenario: str) -> None:
        pass

    def log(self, rec) -> None:
        raise RuntimeError("logger exploded")

    def close(self) -> None:
        raise RuntimeError("close exploded too")
