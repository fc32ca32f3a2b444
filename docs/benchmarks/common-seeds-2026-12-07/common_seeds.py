"""Does a training seed shared across configurations carry a shared effect on the cpu task?

The engine races a challenger and the incumbent on common seeds (``race_seed``) so that the
seeds' effect cancels from their difference. That pays only if a seed moves every
configuration's fitness the same way (same initial weights, same data order). This trains
``advection_lr``'s task at LRS (the good region) x the run's first race seeds and splits the
variance with a two-way additive model: lr + seed + residual. The seed component is what
common seeds cancel; the residual is what they cannot.

    EVO_ENGINE_DATA_DIR=/work/data python docs/benchmarks/common-seeds-2026-12-07/common_seeds.py
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from evo_engine.context import Context  # noqa: E402
from evo_engine.search.intensify import race_seed  # noqa: E402
from evo_engine.sciml.presets import advection_task  # noqa: E402
from evo_engine.sciml.training import prepare_advection, train_advection  # noqa: E402

LRS = [0.004, 0.006, 0.009, 0.013]
SEEDS = [race_seed(0, j) for j in range(4)]  # run seed 0's race seeds 0..3
_CACHE: dict = {}


def _init() -> None:
    import torch

    torch.set_num_threads(1)


def _train(lr: float, seed: int) -> float:
    task = advection_task("cpu")
    return float(train_advection({"lr": lr}, Context.standalone(seed, _CACHE), task)["fitness"])


def main() -> None:
    prepare_advection(advection_task("cpu"))
    t0 = time.time()
    jobs = [(lr, s) for lr in LRS for s in SEEDS]
    with ProcessPoolExecutor(2, mp_context=get_context("spawn"), initializer=_init) as pool:
        values = list(pool.map(_train, *zip(*jobs, strict=True)))
    y = np.array(values).reshape(len(LRS), len(SEEDS))
    n_lr, n_seed = y.shape
    grand = y.mean()
    lr_eff, seed_eff = y.mean(1) - grand, y.mean(0) - grand
    resid = y - grand - lr_eff[:, None] - seed_eff[None, :]
    ms_seed = n_lr * (seed_eff ** 2).sum() / (n_seed - 1)
    ms_resid = (resid ** 2).sum() / ((n_lr - 1) * (n_seed - 1))
    var_seed = max(0.0, (ms_seed - ms_resid) / n_lr)
    from scipy import stats

    f = ms_seed / ms_resid
    p = float(stats.f.sf(f, n_seed - 1, (n_lr - 1) * (n_seed - 1)))
    print("val fitness, rows lr", LRS, "columns race seeds 0..3", file=sys.stderr)
    for lr, row in zip(LRS, y, strict=True):
        print(f"  lr {lr:<6} " + "  ".join(f"{v:.4f}" for v in row), file=sys.stderr)
    print(f"  seed means - grand: " + "  ".join(f"{v:+.4f}" for v in seed_eff), file=sys.stderr)
    print(json.dumps({
        "benchmark": "common_seeds", "lrs": LRS, "seeds": SEEDS, "values": y.tolist(),
        "seed_effect_std": var_seed ** 0.5, "residual_std": ms_resid ** 0.5,
        "share_common_seeds_cancel": var_seed / (var_seed + ms_resid),
        "F_seed": f, "p_seed": p, "wall_s": round(time.time() - t0, 1),
    }))


if __name__ == "__main__":
    main()
