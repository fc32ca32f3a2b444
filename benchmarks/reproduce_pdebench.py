"""Train PDEBench's default U-Net and FNO on 1D advection (β = 4) and compare with published numbers.

Meant for a GPU: the full run is PDEBench's setting (the ``full`` preset: 10,000 FV trajectories
of 1024 × 201 read at 256 × 41, 500 epochs, batch 50, Adam 1e-3, StepLR 100 / 0.5). ``--epochs``
and ``--samples`` shrink it for a short run (the StepLR step is scaled with the epochs, 100 of
500); the expected cost of the full run is extrapolated from the measured one and printed.

    python benchmarks/reproduce_pdebench.py --data legacy               # full size (GPU)
    python benchmarks/reproduce_pdebench.py --data fixed --epochs 50 --samples 2000
    python benchmarks/reproduce_pdebench.py --data fixed --data-file 1D_Advection_Sols_beta4.0.hdf5

``--data`` says which dynamics the comparison uses (see ``docs/pdebench.md``): ``legacy`` = the
2022 files, which PDEBench's NeurIPS 2022 numbers were computed on (its generator before commit
ac1ed78: flux without its factor ½, so "β = 4" moves at 8; float32 clock); ``current`` =
PDEBench's files since 2023-10 (fixed flux, float32 clock); ``fixed`` = the equation as written
with exact save times (this project's default recipe). Without
``--data-file`` the data are generated (or taken from the cache) with that version; with it, the
given file is used for every model, and ``--data`` must say which version it is (a file this
project generated records its version and is checked; a downloaded one cannot be, so the output
says "declared"). One run never mixes generated and downloaded files.

Each model is trained once (seed 0) with the best epoch kept by validation fitness, then scored
on the TEST split (the first 10 % of the samples, PDEBench's own test set) in both metric
conventions: clean (predicted frames only, exact mean over samples) and PDEBench's published one
(``*_pdebench``: the 10 given frames included, per batch of 50, summed / (n_batches − 1)).

Published numbers (``PUBLISHED``; source, version and table in ``docs/pdebench.md``): only FNO
nRMSE for β = 4 could be cited, as transcribed from arXiv 2210.07182v7 Table 6 (6.7e-3) and from
the NeurIPS 2022 supplement (1.0e-2) by pdebench-fno-audit/artifact (verbatim lines in
``docs/benchmarks/pdebench-published-fno-audit-transcription.txt``); the U-Net and PINN rows and
the other metrics of the table could not be found as text (searched 2026-12-06, where is listed in
``docs/pdebench.md``) and are not quoted. Differences from
PDEBench's run that remain are listed in ``docs/pdebench.md`` (splits 80/10/10 with validation
apart from test, BatchNorm in eval mode during validation, seeded, our own draws of the
initial-condition recipe); expect agreement in order of magnitude, not in the digits.

Prints the table to stdout and a final JSON line. Exit status 2 on bad flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import h5py
import torch

from evo_engine.context import Context
from evo_engine.sciml.advection import VERSIONS, default_device, ensure_dataset
from evo_engine.sciml.presets import advection_task
from evo_engine.sciml.training import (
    ADVECTION_FILE_ENV,
    PDEBENCH_DEFAULTS,
    advection_test_metrics,
    prepare_advection,
)

FULL_EPOCHS, FULL_SAMPLES = 500, 10_000
MODELS = ("unet", "fno")
# Published test metrics for β = 4, per source; each source names the data it was computed on
# and whose text the number was read from. Only what could be cited is here (docs/pdebench.md,
# "Published numbers", with where the rest was searched for): FNO nRMSE, from
# pdebench-fno-audit/artifact's transcription of the paper, quoted verbatim in
# docs/benchmarks/pdebench-published-fno-audit-transcription.txt. No U-Net or PINN number, and no
# other metric column, could be found as text.
_AUDIT = "pdebench-fno-audit/artifact@e45d1550 standalone/evaluate_predictions.py"
PUBLISHED: dict[str, dict[str, Any]] = {
    "NeurIPS 2022 supplement": {
        "data": "legacy",  # computed before the flux fix (2023-08) and the new files (2023-10)
        "via": f"{_AUDIT} NEURIPS_SUPPLEMENT['9']",
        "fno": {"nrmse": 1.0e-2},
    },
    "arXiv 2210.07182v7, Table 6": {
        "data": "current?",  # posted 2024-08, after the new files; which data is not stated
        "via": f"{_AUDIT} TEST_CATALOG['9']",
        "fno": {"nrmse": 6.7e-3},
    },
}
SHOWN = ("rmse", "nrmse", "crmse", "brmse", "max_error", "frmse_low", "frmse_mid", "frmse_high")


def _fmt(value: Any) -> str:
    if isinstance(value, tuple):
        return " to ".join(f"{v:.2e}" for v in value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.2e}"


def table(results: dict[str, dict[str, float]]) -> str:
    """The side-by-side table: each published source, ours (PDEBench's convention), ours (clean)."""
    sources = [f"{name} [{p['data']}]" for name, p in PUBLISHED.items()]
    width = max(len(name) for name in sources)
    header = (
        f"{'model':6} {'metric':10} "
        + " ".join(f"{name:>{width}}" for name in sources)
        + f" {'ours, pdebench':>15} {'ours, clean':>12}"
    )
    lines = [header, "-" * len(header)]
    for model, record in results.items():
        for metric in SHOWN:
            published = [p.get(model, {}).get(metric) for p in PUBLISHED.values()]
            lines.append(
                f"{model:6} {metric:10} "
                + " ".join(f"{_fmt(v):>{width}}" for v in published)
                + f" {_fmt(record.get(f'test_{metric}_pdebench')):>15}"
                f" {_fmt(record.get(f'test_{metric}')):>12}"
            )
    return "\n".join(lines)


def file_version(path: Path) -> str | None:
    """The dynamics version a file records: ours say it (or are "fixed" if they predate the
    attribute); a file made elsewhere (PDEBench's downloads) records none: None."""
    with h5py.File(path, "r") as f:
        if f.attrs.get("generator") != "evo_engine.sciml.advection":
            return None
        return str(f.attrs.get("version", "fixed"))


def data_line(version: str, path: Path, origin: str) -> str:
    """The sentence that says which data every number of this run was computed on."""
    same = [
        name + (" (presumably: the paper does not say)" if p["data"].endswith("?") else "")
        for name, p in PUBLISHED.items()
        if p["data"].rstrip("?") == version
    ]
    return (
        f"data: {version} dynamics, {origin}: {path} (every model of this run uses this file); "
        f"published numbers computed on the same version: {', '.join(same) or 'none'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=FULL_EPOCHS, help="default 500 (PDEBench)")
    parser.add_argument("--samples", type=int, default=FULL_SAMPLES, help="trajectories (10,000)")
    parser.add_argument("--models", default="unet,fno", help="comma list of unet, fno")
    parser.add_argument(
        "--data",
        choices=VERSIONS,
        default="legacy",
        help="which dynamics: legacy (the 2022 files of the NeurIPS numbers; default), "
        "current (PDEBench's files since 2023-10) or fixed (exact save times)",
    )
    parser.add_argument(
        "--data-file", type=Path, help="a PDEBench HDF5 file of that version instead of our data"
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if any)")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models or any(m not in MODELS for m in models):
        parser.error(f"--models takes a comma list of unet and fno, got {args.models!r}")
    if args.epochs < 1 or args.samples < 30:
        parser.error("need --epochs >= 1 and --samples >= 30 (10 % test, 10 % validation)")
    if args.data_file is not None and not args.data_file.is_file():
        parser.error(f"--data-file {args.data_file} does not exist")
    if args.data_file is not None:
        try:
            recorded = file_version(args.data_file)
        except OSError as exc:
            parser.error(f"--data-file {args.data_file} cannot be opened as HDF5 ({exc})")
        if recorded is not None and recorded != args.data:
            parser.error(
                f"--data-file {args.data_file} holds {recorded} data (it says so), not --data "
                f"{args.data}: a comparison on it is a comparison on {recorded} data"
            )
    device = args.device or default_device()
    full = advection_task("full")
    recipe = dataclasses.replace(full.recipe, samples=args.samples, version=args.data)
    step = max(1, round(PDEBENCH_DEFAULTS["scheduler_step"] * args.epochs / FULL_EPOCHS))
    wall = time.perf_counter()
    if args.data_file is not None:
        path = args.data_file
        origin = "generated by this project" if recorded else "downloaded, version per --data"
    else:
        # Named explicitly, so $EVO_ENGINE_ADVECTION_FILE cannot swap in another file unseen.
        path, origin = ensure_dataset(recipe, device=device), "generated here (or cached)"
        if os.environ.get(ADVECTION_FILE_ENV):
            print(f"note: ${ADVECTION_FILE_ENV} is ignored; use --data-file", file=sys.stderr)
    task = dataclasses.replace(
        full,
        recipe=recipe,
        samples=args.samples if args.data_file else None,
        data_file=str(path),
        epochs=args.epochs,
    )
    path = prepare_advection(task)
    generation = time.perf_counter() - wall
    print(f"data ready in {generation:.1f} s on {device}", file=sys.stderr)
    results: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    for model in models:
        params = {"model": model, "scheduler_step": step}
        wall = time.perf_counter()
        ctx = Context.standalone(0, device=device)
        results[model] = advection_test_metrics(params, ctx, task)
        seconds[model] = time.perf_counter() - wall
        print(
            f"{model}: {seconds[model]:.1f} s, best epoch {results[model]['best_epoch']:.0f}",
            file=sys.stderr,
        )
    n_train = args.samples - 2 * max(1, args.samples // 10)
    scale = (FULL_EPOCHS / args.epochs) * ((FULL_SAMPLES - 2000) / max(n_train, 1))
    expected = {m: seconds[m] * scale for m in models}
    print(f"run: {args.epochs} epochs, {args.samples} samples, StepLR step {step}, on {device}")
    print(data_line(args.data, path, origin))
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
        "data_version": args.data,
        "data_origin": origin,
        "seconds": seconds,
        "expected_full_seconds": expected,
        "published": PUBLISHED,
        "test": {
            m: {k: v for k, v in r.items() if k.startswith("test_")} for m, r in results.items()
        },
        "recipe": dataclasses.asdict(recipe) if not args.data_file else None,
    }
    print(json.dumps(summary, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
