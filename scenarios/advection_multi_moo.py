"""1D advection, two objectives: validation nRMSE against the model's parameter count.

The search of ``advection_multi.py`` (U-Net or FNO, their widths, the optimiser, the schedule,
the batch size) with two objectives instead of one fitness: ``val_nrmse`` (lower is better)
and ``n_params`` (smaller models are cheaper to train and to run). The U-Net/FNO choice makes
the front interesting: an FNO's parameter count grows with width² · modes, a U-Net's with its
features², and the two reach a given error at different sizes. A constraint keeps every model
under two million parameters. The surrogate scalarises the two by ParEGO (one random
Tchebycheff weighting per ask); ``finalize`` retrains the knee of the front
(docs/multiobjective.md). Races (``intensify``) estimate one noisy fitness, so they are off.

    python -m evo_engine scenarios/advection_multi_moo.py [--preset full]
    python -m evo_engine analyze runs/advection_multi_moo --plots plots --front front.csv

Swap ``n_params`` for ``train_seconds`` to trade accuracy against training time (noisier: it
moves with the machine's load).
"""

from __future__ import annotations

from pathlib import Path

from evo_engine.scenario import Scenario, load_scenario, override


def make_scenario(preset: str) -> Scenario:
    base = load_scenario(Path(__file__).with_name("advection_multi.py"), preset)
    return override(
        base,
        name="advection_multi_moo",
        objectives=[("val_nrmse", "min"), ("n_params", "min")],
        constraints={"n_params": ("<=", 2_000_000)},
        intensify=0,
    )
