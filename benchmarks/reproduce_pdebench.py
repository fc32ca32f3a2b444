"""Train PDEBench's default U-Net and FNO on 1D advection (β = 4) and compare with its published table.

Meant for a GPU: the full run is PDEBench's setting (the ``full`` preset: 10,000 FV trajectories
of 1024 × 201 read at 256 × 41, 500 epochs, batch 50, Adam 1e-3, StepLR 100 / 0.5). ``--epochs``
and ``--samples`` shrink it for a short run (the StepLR step is scaled with the epochs, 100 of
500); the expected cost of the full run is extrapolated from the measured one and printed.

    python benchmarks/reproduce_pdebench.py                             # full size (GPU)
    python benchmarks/reproduce_pdebench.py --epochs 50 --samples 2000  # a short GPU run
    python benchmarks/reproduce_pdebench.py --data-file 1D_Advection_Sols_beta4.0.hdf5

Each model is trained once (seed 0) with the best epoch kept by validation fitness, then scored
on the TEST split (the first 10 % of the samples, PDEBench's own test set) in both metric
conventions: clean (predicted frames only, exact mean over samples) and PDEBench's published one
(``*_pdebench``: the 10 given frames included, per batch of 50, summed / (n_batches − 1)).

Differences from PDEBench's run that remain: our splits train on 80 % (validation = the second
10 %) where PDEBench trains on 90 % and selects its checkpoint on the test set; BatchNorm in eval
mode during validation; seeded. The published numbers come from the NeurIPS-era data (advection
at 2β, see PDEBENCH.md §1.5) and metric code, and the U-Net ones are a third party's
transcription; expect agreement in order of magnitude, not in the digits.

Prints the table to stdout and a final JSON line. Exit status 2 on bad flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from evo_engine.context import Context
from evo_engine.sciml.advection import default_device
from evo_engine.sciml.presets import advection_task
from evo_engine.sciml.training import PDEBENCH_DEFAULTS, advection_test_metrics, prepare_advection

FULL_EPOCHS, FULL_SAMPLES = 500, 10_000
PUBLISHED: dict[str, dict[str, float | tuple[float, float]]] = {
    # U-Net (PF-20), β = 4: PDEBench paper as transcribed by the L2L study (PDEBENCH.md §4.2).
    "unet": {"rmse": 1.68e-2, "nrmse": 2.95e-2, "crmse": 1.06e-2, "brmse": 3.04e-2},
    # FNO, β = 4: arXiv v7 Table 6 (6.7e-3) and the NeurIPS 2022 supplement (1.0e-2).
    "fno": {"nrmse": (6.7e-3, 1.0e-2)},
}
SHOWN = ("rmse", "nrmse", "crmse", "brmse", "max_error")


def _fmt(value: Any) -> str:
    if isinstance(value, tuple):
        return " to ".join(f"{v:.2e}" for v in value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.2e}"


def table(results: dict[str, dict[str, float]]) -> str:
    """The side-by-side table: published, ours (PDEBench's convention), ours (clean)."""
    header = f"{'model':6} {'metric':10} {'published':>20} {'ours, pdebench':>15} {'ours, clean':>12}"
    lines = [header, "-" * len(header)]
    for model, record in results.items():
        for metric in SHOWN:
            published = PUBLISHED.get(model, {}).get(metric)
            lines.append(
                f"{model:6} {metric:10} {_fmt(published):>20} "
                f"{_fmt(record.get(f'test_{metric}_pdebench')):>15} "
                f"{_fmt(record.get(f'test_{metric}')):>12}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=FULL_EPOCHS, help="default 500 (PDEBench)")
    parser.add_argument("--samples", type=int, default=FULL_SAMPLES, help="trajectories (10,000)")
    parser.add_argument("--models", default="unet,fno", help="comma list of unet, fno")
    parser.add_argument("--data-file", type=Path, help="a PDEBench HDF5 file instead of our data")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if any)")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models or any(m not in PUBLISHED for m in models):
        parser.error(f"--models takes a comma list of unet and fno, got {args.models!r}")
    if args.epochs < 1 or args.samples < 30:
        parser.error("need --epochs >= 1 and --samples >= 30 (10 % test, 10 % validation)")
    if args.data_file is not None and not args.data_file.is_file():
        parser.error(f"--data-file {args.data_file} does not exist")
    device = args.device or default_device()
    full = advection_task("full")
    task = dataclasses.replace(
        full,
        recipe=dataclasses.replace(full.recipe, samples=args.samples),
        samples=args.samples if args.data_file else None,
        data_file=str(args.data_file) if args.data_file else None,
        epochs=args.epochs,
    )
    step = max(1, round(PDEBENCH_DEFAULTS["scheduler_step"] * args.epochs / FULL_EPOCHS))
    wall = time.perf_counter()
    path = prepare_advection(task)
    generation = time.perf_counter() - wall
    print(f"data: {path} ({'given' if args.data_file else 'FV, generated or cached'}; "
          f"{generation:.1f} s) on {device}", file=sys.stderr)
    results: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    for model in models:
        params = {"model": model, "scheduler_step": step}
        wall = time.perf_counter()
        ctx = Context.standalone(0, device=device)
        results[model] = advection_test_metrics(params, ctx, task)
        seconds[model] = time.perf_counter() - wall
        print(f"{model}: {seconds[model]:.1f} s, best epoch {results[model]['best_epoch']:.0f}",
              file=sys.stderr)
    n_train = args.samples - 2 * max(1, args.samples // 10)
    scale = (FULL_EPOCHS / args.epochs) * ((FULL_SAMPLES - 2000) / max(n_train, 1))
    expected = {m: seconds[m] * scale for m in models}
    print(f"run: {args.epochs} epochs, {args.samples} samples, StepLR step {step}, on {device}")
    print(table(results))
    print(
        "expected cost of the full run (500 epochs, 8,000 training trajectories), extrapolated "
        "linearly from this run: "
        + ", ".join(f"{m} ≈ {expected[m] / 3600:.2f} h" for m in models)
        + f" on {device}; FV data generation of 10,000 × 1024 × 201 not included"
    )
    summary = {
        "benchmark": "reproduce_pdebench",
        "device": device,
        "torch": torch.__version__,
        "epochs": args.epochs,
        "samples": args.samples,
        "data": str(path),
        "seconds": seconds,
        "expected_full_seconds": expected,
        "published": {m: {k: v for k, v in p.items()} for m, p in PUBLISHED.items()},
        "test": {
            m: {k: v for k, v in r.items() if k.startswith("test_")} for m, r in results.items()
        },
        "recipe": dataclasses.asdict(task.recipe) if not args.data_file else None,
    }
    print(json.dumps(summary, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
