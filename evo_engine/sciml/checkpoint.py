"""Training checkpoints for population-based training (docs/pbt.md): save, load, reschedule.

A PBT interval (``Context.start_step`` to ``Context.stop_step``) starts from the checkpoint in
``ctx.checkpoint_load`` and saves its own to ``ctx.checkpoint_save``. A checkpoint holds the
model's, the optimizer's and the scheduler's state and the global RNG states (python, numpy,
torch, and the CUDA generator of the device the model trains on), plus the step it was taken
at. The CUDA state goes back onto the loading model's own device, whichever GPU (and however
many) the saving worker had. It is written to a temporary file in the same
folder, flushed to disk and renamed over the target (``os.replace``), so a ``kill -9`` leaves
either the whole file or none, never half of one. A missing file raises ``CheckpointMissing``,
which the worker records as that interval FAILED (the run goes on).

Hyperparameters an exploit explored (learning rate, weight decay, StepLR's step and γ) are
applied after loading (``apply_hyperparameters``): the learning rate is the schedule's base, so
at step s it is ``lr · γ^⌊s / step_size⌋``, as if the new schedule had run from the start. The
data order of an interval comes from the interval's own seed (``ctx.seed``), so a member that
exploits another does not repeat that member's batches.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evo_engine.context import CheckpointMissing

FORMAT = 1


def pbt_interval(ctx: Any, epochs: int) -> tuple[int, int, bool]:
    """(first epoch, epoch to stop before, is a PBT interval) for an objective's context."""
    if getattr(ctx, "checkpoint_save", None) is None:
        return 0, epochs, False
    stop = getattr(ctx, "stop_step", None)
    return int(ctx.start_step), int(stop if stop is not None else ctx.start_step + 1), True


def _cuda_device(model: torch.nn.Module) -> torch.device | None:
    """The CUDA device ``model`` trains on; None on the CPU (or without parameters)."""
    param = next(iter(model.parameters()), None)
    device = getattr(param, "device", None)
    return device if device is not None and device.type == "cuda" else None


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any | None, step: int, params: Mapping[str, Any]) -> None:
    """Write the training state at ``step`` to ``path`` atomically (tmp file + os.replace)."""
    device = _cuda_device(model)
    state = {
        "format": FORMAT,
        "step": int(step),
        "params": dict(params),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device is not None else None,
        },
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The state ``save_checkpoint`` wrote to ``path``; ``CheckpointMissing`` when it is not there."""
    path = Path(path)
    if not path.exists():
        raise CheckpointMissing(
            f"the checkpoint this PBT interval starts from, {path}, does not exist: it was "
            "deleted, or the run directory is not on a file system this worker shares with "
            "the one that saved it (docs/pbt.md); the interval is FAILED and its member "
            "exploits another one")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not an evo_engine training checkpoint (format {FORMAT})")
    return state


def restore(state: Mapping[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: Any | None) -> None:
    """Put a loaded checkpoint's model, optimizer, scheduler and RNG states back."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    rng = state["rng"]
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    device = _cuda_device(model)
    # A list is an older checkpoint's state of every visible GPU, which says not which one
    # trained: it is left alone rather than put on devices this worker may not have.
    if device is not None and isinstance(rng.get("cuda"), torch.Tensor):
        torch.cuda.set_rng_state(rng["cuda"], device)


def apply_hyperparameters(optimizer: torch.optim.Optimizer, scheduler: Any | None,
                          params: Mapping[str, Any], step: int) -> None:
    """Set ``params``' learning rate, weight decay and StepLR schedule for training at ``step``."""
    lr = float(params["lr"])
    factor = 1.0
    if isinstance(scheduler, torch.optim.lr_scheduler.StepLR):
        scheduler.step_size = max(1, int(params["scheduler_step"]))
        scheduler.gamma = float(params["scheduler_gamma"])
        scheduler.base_lrs = [lr for _ in optimizer.param_groups]
        scheduler.last_epoch = int(step)
        factor = scheduler.gamma ** (int(step) // scheduler.step_size)
    for group in optimizer.param_groups:
        group["lr"] = lr * factor
        group["initial_lr"] = lr
        if "weight_decay" in params:
            group["weight_decay"] = float(params["weight_decay"])
    if scheduler is not None:
        scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]  # noqa: SLF001 - as get_last_lr reads it
