"""Shared fixtures: paths, a Python that runs evo_engine, and small spaces."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from cpu_report import pytest_runtest_protocol  # noqa: F401  (on with EVO_ENGINE_TEST_CPU=FILE)

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    # Subprocess workers share 2 cores with the test runner: one intra-op thread each.
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))


@pytest.fixture(autouse=True)
def _no_fsync_in_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """``os.fsync`` is a no-op inside the test process, except in tests marked ``real_fsync``.

    It only matters for a node crash or power loss, which no test can cause: the kills here
    (in-process ``Killed``, SIGKILL of a subprocess) leave the page cache intact. The fsync
    *policies* are checked with the real call by the ``real_fsync`` spies in test_recorder.py
    and test_store.py, every code path that calls it still runs, and runs started as
    subprocesses (the CLI, mpiexec) still fsync for real. What it saves: the replay state
    machine calls it ~380 times per example; it was half of test_replay.py's wall time.
    """
    if request.node.get_closest_marker("real_fsync") is None:
        monkeypatch.setattr(os, "fsync", lambda fd: None)


@pytest.fixture
def sciml_isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A SciML test trains on one thread, on data generated under its own tmp_path (never a
    user's cache or an EVO_ENGINE_ADVECTION_FILE)."""
    import torch

    torch.set_num_threads(1)
    monkeypatch.setenv("EVO_ENGINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("EVO_ENGINE_ADVECTION_FILE", raising=False)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long tests (marked ``slow`` or ``mpi``) first, each group in collection order.

    Under xdist the run ends when its last test does: started last (test_resume.py sorts
    late), a 70-second kill test left the other workers idle at the end of every run.
    """
    items.sort(key=lambda item: not (item.get_closest_marker("slow")
                                     or item.get_closest_marker("mpi")))
