"""Waiting for a command-line run in a subprocess without ever hanging the suite."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest


def finish(proc: subprocess.Popen[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Wait for ``proc`` (started with ``start_new_session=True``); past ``timeout`` kill its
    whole process group (mpiexec and every rank) and fail the test with what it printed."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        args = proc.args if isinstance(proc.args, str) else " ".join(map(str, proc.args))
        pytest.fail(f"{args} did not finish within {timeout} s\nstdout:\n{out}\nstderr:\n{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
