"""An objective whose worker process loads slowly once ``EVO_TEST_SLOW_START`` names a file
that exists (a replacement started after the test made it), dies on ``x < 0`` and hangs on
``x = inf``."""

from __future__ import annotations

import os
import time

_MARK = os.environ.get("EVO_TEST_SLOW_START")
if _MARK and os.path.exists(_MARK):
    time.sleep(float(os.environ.get("EVO_TEST_SLOW_START_S", "4")))


def objective(params: dict, ctx: object) -> float:
    if params["x"] < 0:
        os._exit(3)
    if params["x"] == float("inf"):
        time.sleep(600)
    return float(params["x"])
