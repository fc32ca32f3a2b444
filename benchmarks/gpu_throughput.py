"""Model-epochs per GPU-second of the advection U-Net and FNO: one model, packed ranks, batched.

What one GPU (or, without one, this machine) gets done when it trains advection models:

- ``single``: one ``train_advection`` at a time, fp32, eager (today's trainer: the baseline);
- ``packed_R``: R processes on the same device, each training one model (what ``mpiexec -n``
  with several ranks per GPU does);
- ``batched_K``: one process training K members at once (``train_advection_batch``: stacked
  parameters under ``vmap``); member 0 has the single run's parameters and seed, so its
  validation fitness shows that batching leaves results unchanged (up to rounding);
- ``packed_RxK``: R processes each training K members (batching combined with packing);
- the launch-overhead switches on the single model and on the largest batch: ``bf16``
  (autocast) and ``compile`` (``torch.compile``, ``--compile-mode``, default
  "reduce-overhead" = CUDA graphs on a GPU). Compilation is done in a warm-up and reported as
  ``compile_s``, not counted in the throughput.

Every entry gives model-epochs per second (members × epochs / wall time, the validation
evaluation after each epoch included), the speed-up over ``single``, the mean SM utilisation
from NVML while it ran (``sm_pct``; null without a GPU or without ``nvidia-ml-py``) and the
validation fitness (mean of RMSE, nRMSE, bRMSE, cRMSE) after ``--epochs`` epochs.

Sizes: with a GPU (``--preset auto`` → full) PDEBench's full-preset models and batch size on
1,000 generated trajectories (1024 × 201, read at 256 × 41; 800 train, 100 validation), K = 8, 16,
32 and 4 and 8 packed ranks. Without a GPU the same runs at the cpu preset (200 trajectories
at 128 × 41, the cpu preset's small models, K = 2 and 4, 2 ranks; compile is skipped unless asked
for, since inductor needs minutes per graph on a CPU) and the JSON says so: CPU figures say
nothing about the GPU targets (≥ 12× U-Net, ≥ 15× FNO on one H200-class GPU). Every process
uses one torch thread, so on a CPU ``packed_R`` uses R cores where the others use one.

    nice python benchmarks/gpu_throughput.py                      # auto: full on a GPU, else cpu
    python benchmarks/gpu_throughput.py --models unet --ks 16,32 --ranks 4

Progress on stderr, one final JSON line on stdout. Not a test.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from evo_engine.context import Context
from evo_engine.sciml.advection import AdvectionRecipe
from evo_engine.sciml.batched import train_advection_batch
from evo_engine.sciml.presets import advection_task
from evo_engine.sciml.training import AdvectionTask, prepare_advection, train_advection

TARGETS = {"unet": 12.0, "fno": 15.0}
RANK_TIMEOUT_S = 3600.0
_CACHE: dict = {}  # this process's data cache (the worker's ctx.cache)


def log(message: str) -> None:
    print(f"[gpu_throughput] {message}", file=sys.stderr, flush=True)


def make_task(preset: str, epochs: int, samples: int) -> AdvectionTask:
    if preset == "full":
        recipe = AdvectionRecipe(samples=samples)  # PDEBench's 1024 × 201 grid
        return AdvectionTask(recipe=recipe, nx=256, nt=41, samples=samples, epochs=epochs)
    return dataclasses.replace(advection_task("cpu"), epochs=epochs)


def member_params(model: str, i: int) -> dict[str, Any]:
    """Member i: PDEBench's defaults for i = 0, then learning rates 0.25× .. 4× around them."""
    return {"model": model, "lr": 1e-3 * 2.0 ** (((i + 2) % 5) - 2)}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


class SmSampler:
    """Mean SM utilisation of one GPU from NVML, sampled every 0.1 s in a thread."""

    def __init__(self, device: str) -> None:
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._handle = None
        if not device.startswith("cuda"):
            return
        try:
            import pynvml  # nvidia-ml-py: optional

            pynvml.nvmlInit()
            index = torch.device(device).index or 0
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self._nvml = pynvml
        except Exception:  # noqa: BLE001 - no NVML: no figure
            self._handle = None

    @property
    def available(self) -> bool:
        return self._handle is not None

    def __enter__(self) -> SmSampler:
        if self._handle is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.samples.append(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._handle is not None:
            self._thread.join()

    def mean(self) -> float | None:
        return round(sum(self.samples) / len(self.samples), 1) if self.samples else None


def _train(task: AdvectionTask, model: str, members: int, seed0: int,
           device: str) -> list[dict[str, float]]:
    """Train ``members`` models (one: train_advection; more: batched) and return their records."""
    if members == 1:
        ctx = Context.standalone(seed=seed0, cache=_CACHE, device=device)
        return [train_advection(member_params(model, 0), ctx, task)]
    ctxs = [Context.standalone(seed=seed0 + i, cache=_CACHE, device=device)
            for i in range(members)]
    out = train_advection_batch([member_params(model, i) for i in range(members)], ctxs, task)
    failed = [r for r in out if isinstance(r, BaseException)]
    if failed:
        raise failed[0]
    return out


def _entry(records: Sequence[dict[str, float]], members: int, wall: float, epochs: int,
           sm: float | None, **extra: Any) -> dict[str, Any]:
    fitness = [r["val_fitness"] for r in records]
    return {
        "members": members,
        **extra,
        "model_epochs_per_s": round(members * epochs / wall, 4),
        "wall_s": round(wall, 2),
        "sm_pct": sm,
        "val_fitness_member0": records[0]["val_fitness"],
        "val_rmse_member0": records[0]["val_rmse"],
        "val_fitness_mean": sum(fitness) / len(fitness),
    }


def measure_here(task: AdvectionTask, model: str, members: int, device: str,
                 warm: bool = False) -> dict[str, Any]:
    """Train in this process; a warm-up epoch first when ``warm`` (compilation, allocator)."""
    compile_s = None
    if warm:
        t0 = time.perf_counter()
        _train(dataclasses.replace(task, epochs=1), model, members, 0, device)
        _sync(device)
        compile_s = round(time.perf_counter() - t0, 2)
    with SmSampler(device) as sampler:
        _sync(device)
        t0 = time.perf_counter()
        records = _train(task, model, members, 0, device)
        _sync(device)
        wall = time.perf_counter() - t0
    extra = {"compile_s": compile_s} if task.compile else {}
    return _entry(records, members, wall, task.epochs, sampler.mean(), **extra)


def _rank_main(rank: int, ranks: int, task: AdvectionTask, model: str, members: int,
               device: str, barrier: Any, queue: Any) -> None:
    try:
        torch.set_num_threads(1)
        # warm-up: read the data, initialise the device, one epoch of the same work
        _train(dataclasses.replace(task, epochs=1), model, members, 100 * rank, device)
        _sync(device)
        barrier.wait()
        t0 = time.time()
        records = _train(task, model, members, 100 * rank, device)
        _sync(device)
        queue.put((rank, t0, time.time(), records, None))
    except BaseException as exc:  # noqa: BLE001 - report it to the parent
        barrier.abort()
        queue.put((rank, 0.0, 0.0, [], f"{type(exc).__name__}: {exc}"))


def measure_packed(task: AdvectionTask, model: str, ranks: int, members: int,
                   device: str) -> dict[str, Any]:
    """``ranks`` processes on the same device, each training ``members`` models at once."""
    mp = multiprocessing.get_context("spawn")
    barrier, queue = mp.Barrier(ranks + 1), mp.Queue()
    procs = [mp.Process(target=_rank_main,
                        args=(r, ranks, task, model, members, device, barrier, queue))
             for r in range(ranks)]
    for p in procs:
        p.start()
    try:
        barrier.wait()  # every rank has warmed up
    except threading.BrokenBarrierError:
        pass  # a rank failed; its error comes through the queue
    try:
        with SmSampler(device) as sampler:
            results = [queue.get(timeout=RANK_TIMEOUT_S) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
    errors = [e for *_, e in results if e]
    if errors:
        raise RuntimeError(errors[0])
    start, end = min(r[1] for r in results), max(r[2] for r in results)
    records = [rec for _, _, _, recs, _ in sorted(results, key=lambda r: r[0]) for rec in recs]
    return _entry(records, ranks * members, end - start, task.epochs, sampler.mean(),
                  ranks=ranks, members_per_rank=members)


def _attempt(name: str, fn: Callable[[], dict[str, Any]], device: str) -> dict[str, Any]:
    log(f"{name} ...")
    try:
        out = fn()
    except Exception as exc:  # noqa: BLE001 - an OOM or a compile failure is a result too
        out = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    log(f"{name}: {out}")
    return out


def run_model(model: str, task: AdvectionTask, device: str, args: argparse.Namespace
              ) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _train(dataclasses.replace(task, epochs=1), model, 2, 0, device)  # data, device, allocator
    out["single"] = _attempt(f"{model} single", lambda: measure_here(task, model, 1, device),
                             device)
    for r in args.ranks:
        out[f"packed_{r}"] = _attempt(f"{model} packed {r}",
                                      lambda r=r: measure_packed(task, model, r, 1, device), device)
    for k in args.ks:
        out[f"batched_{k}"] = _attempt(f"{model} batched {k}",
                                       lambda k=k: measure_here(task, model, k, device), device)
    for r, k in args.combined:
        out[f"packed_{r}x{k}"] = _attempt(
            f"{model} packed {r} x batched {k}",
            lambda r=r, k=k: measure_packed(task, model, r, k, device), device)
    kmax = max(args.ks)
    for switch in args.switches:
        changed = (dataclasses.replace(task, bf16=True) if switch == "bf16" else
                   dataclasses.replace(task, compile=True, compile_mode=args.compile_mode))
        out[f"single_{switch}"] = _attempt(
            f"{model} single {switch}",
            lambda t=changed: measure_here(t, model, 1, device, warm=True), device)
        out[f"batched_{kmax}_{switch}"] = _attempt(
            f"{model} batched {kmax} {switch}",
            lambda t=changed: measure_here(t, model, kmax, device, warm=True), device)
    base = out["single"].get("model_epochs_per_s")
    for entry in out.values():
        if base and "model_epochs_per_s" in entry:
            entry["speedup"] = round(entry["model_epochs_per_s"] / base, 2)
    best = max((e.get("speedup", 0.0) for e in out.values()), default=0.0)
    keys = [k for k, e in out.items() if e.get("speedup") == best]
    out["best"] = {"speedup": best, "how": keys[0] if keys else None}
    return out


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"values must be >= 1, got {text!r}")
    return values


def _pairs(text: str) -> list[tuple[int, int]]:
    pairs = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        r, _, k = item.partition("x")
        if not (r.isdigit() and k.isdigit() and int(r) >= 1 and int(k) >= 1):
            raise argparse.ArgumentTypeError(f"expected RxK pairs like 2x16, got {item!r}")
        pairs.append((int(r), int(k)))
    return pairs


def _switches(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in ("bf16", "compile")]
    if bad:
        raise argparse.ArgumentTypeError(f"switches are bf16 and compile, got {bad}")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    gpu = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=("auto", "cpu", "full"), default="auto",
                   help="sizes: full (a GPU) or cpu; auto picks full when CUDA is available")
    p.add_argument("--device", default="cuda:0" if gpu else "cpu")
    p.add_argument("--models", default="unet,fno",
                   type=lambda s: [m.strip() for m in s.split(",") if m.strip()])
    p.add_argument("--epochs", type=int, default=2, help="epochs per measurement (2)")
    p.add_argument("--samples", type=int, default=1000, help="trajectories (full preset)")
    p.add_argument("--ks", type=_ints, default=None, help="batched K (8,16,32; cpu 2,4)")
    p.add_argument("--ranks", type=_ints, default=None, help="packed ranks (4,8; cpu 2)")
    p.add_argument("--combined", type=_pairs, default=None,
                   help="packed ranks x batched K (2x16; cpu 2x2); '' for none")
    p.add_argument("--switches", type=_switches, default=None,
                   help="bf16,compile (cpu: bf16 only; inductor takes minutes per graph there)")
    p.add_argument("--compile-mode", default="reduce-overhead",
                   help="torch.compile mode for the compile switch (reduce-overhead: CUDA graphs)")
    args = p.parse_args(argv)
    if args.preset == "auto":
        args.preset = "full" if gpu else "cpu"
    cpu = args.preset == "cpu"
    args.ks = args.ks or ([2, 4] if cpu else [8, 16, 32])
    args.ranks = args.ranks if args.ranks is not None else ([2] if cpu else [4, 8])
    args.combined = args.combined if args.combined is not None else ([(2, 2)] if cpu else [(2, 16)])
    args.switches = args.switches if args.switches is not None else (
        ["bf16"] if cpu else ["bf16", "compile"])
    if args.epochs < 1:
        p.error("--epochs must be at least 1")
    bad = [m for m in args.models if m not in TARGETS]
    if bad or not args.models:
        p.error(f"--models takes unet and/or fno, got {args.models}")
    if args.device.startswith("cuda") and not gpu:
        p.error(f"--device {args.device}: CUDA is not available here")
    if args.samples < 10:
        p.error("--samples must be at least 10")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(0)
    # One thread per process: on a shared machine a multi-threaded process spends its time in
    # OpenMP barriers waiting for descheduled threads (measured here: 15x slower under load).
    # So on a CPU, packed R uses R cores where single and batched use one.
    torch.set_num_threads(1)
    task = make_task(args.preset, args.epochs, args.samples)
    if args.compile_mode is not None and "compile" in args.switches:
        try:
            dataclasses.replace(task, compile=True, compile_mode=args.compile_mode)
        except ValueError as exc:
            print(f"gpu_throughput: {exc}", file=sys.stderr)
            return 2
    log(f"preparing data for the {args.preset} preset ...")
    prepare_advection(task)
    gpu = args.device.startswith("cuda")
    name = torch.cuda.get_device_name(args.device) if gpu else "cpu"
    results = {model: run_model(model, task, args.device, args) for model in args.models}
    out: dict[str, Any] = {
        "benchmark": "gpu_throughput",
        "device": f"{args.device} ({name})",
        "gpu": gpu,
        "preset": args.preset,
        "note": ("measured on a GPU" if gpu else
                 "no GPU here: ran at the cpu preset on CPU cores; the GPU figures (targets "
                 "12x U-Net, 15x FNO on one H200-class GPU) are still to be measured"),
        "trajectories": task.samples,
        "nx": task.nx,
        "nt": task.nt,
        "epochs": task.epochs,
        "threads": torch.get_num_threads(),
        "nvml": SmSampler(args.device).available,
        "ks": args.ks,
        "ranks": args.ranks,
        "switches": args.switches,
        "compile_mode": args.compile_mode if "compile" in args.switches else None,
        "results": results,
        "best_speedup": {m: r["best"]["speedup"] for m, r in results.items()},
        "targets": TARGETS,
        "targets_met": ({m: results[m]["best"]["speedup"] >= TARGETS[m] for m in results}
                        if gpu and args.preset == "full" else None),
    }
    print(json.dumps(out, allow_nan=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
