"""How busy a worker's GPU was during an evaluation, from NVML (optional extra ``gpu``).

When ``nvidia-ml-py`` is installed (``import pynvml``) and a worker is bound to ``cuda:N``,
a daemon thread samples that device's utilization (the percentage of time a kernel was
running, NVML's ``gpu`` rate) and its used memory every ``interval`` seconds; each
evaluation's Result carries the mean busy % and the peak memory over its own time window.
NVML reports per *device*, not per process: ranks packed onto one GPU all see the same,
shared figure. Without pynvml, without a GPU, or if NVML fails in any way, there is no
sampler and nothing changes: this is a diagnostic, never a requirement.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

MIB = 1024 * 1024


def _physical_index(device: str) -> int | str:
    """The NVML index (or UUID) of ``cuda:N``, seen through CUDA_VISIBLE_DEVICES."""
    n = int(device.split(":", 1)[1]) if ":" in device else 0
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if n < len(visible):
        return int(visible[n]) if visible[n].isdigit() else visible[n]
    return n


def _by_uuid(nvml: Any, device: str) -> Any:
    """NVML's handle of the GPU torch calls ``device``, by its UUID; None where torch is not
    loaded (an objective without torch), has not started CUDA yet, or cannot say.

    NVML numbers GPUs in PCI order; CUDA, unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, fastest
    first: on a node with two kinds of GPU, ``cuda:0`` is then not NVML's 0 (nor
    ``CUDA_VISIBLE_DEVICES``' first entry's NVML number), and the index would sample
    another GPU. The UUID names the same one for both."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if not torch.cuda.is_initialized():
            return None  # asking would start CUDA here, before the objective chose to
        n = int(device.split(":", 1)[1]) if ":" in device else 0
        uuid = str(torch.cuda.get_device_properties(n).uuid)
        return nvml.nvmlDeviceGetHandleByUUID(
            uuid if uuid.startswith(("GPU-", "MIG-")) else "GPU-" + uuid)
    except Exception:  # noqa: BLE001 - a torch without the field, a MIG slice: the index
        return None


class GpuSampler:
    """A background thread sampling one GPU; ``begin``/``end`` bracket an evaluation."""

    def __init__(self, nvml: Any, handle: Any, interval: float = 0.5,
                 device: str | None = None) -> None:
        self.nvml, self.handle, self.interval = nvml, handle, interval
        self._device = device
        """Set while ``handle`` is by index: once torch has started CUDA (the objective's
        first evaluation), the handle is looked up again by UUID (``_by_uuid``)."""
        self._lock = threading.Lock()
        self._busy_sum = 0.0
        self._count = 0
        self._peak_mib = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        try:
            busy = float(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)
            used = float(self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used) / MIB
        except Exception:  # noqa: BLE001 - a diagnostic must never hurt the evaluation
            return
        with self._lock:
            self._busy_sum += busy
            self._count += 1
            self._peak_mib = max(self._peak_mib, used)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def begin(self) -> tuple[float, int]:
        """Mark the start of an evaluation (starts the sampling thread on first use)."""
        if self._device is not None:
            handle = _by_uuid(self.nvml, self._device)
            if handle is not None:
                with self._lock:
                    self.handle, self._device = handle, None
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="evo-nvml", daemon=True)
            self._thread.start()
        with self._lock:
            self._peak_mib = 0.0
            mark = self._busy_sum, self._count
        self._sample()
        return mark

    def end(self, mark: tuple[float, int]) -> tuple[float, float] | None:
        """(mean busy %, peak used MiB) since ``mark``, or None if nothing could be sampled."""
        self._sample()
        with self._lock:
            count = self._count - mark[1]
            if count <= 0:
                return None
            return (self._busy_sum - mark[0]) / count, self._peak_mib

    def close(self) -> None:
        self._stop.set()


def gpu_sampler(device: str, interval: float = 0.5) -> GpuSampler | None:
    """A sampler for ``device`` when it is a CUDA device and NVML answers; else None."""
    if not device.startswith("cuda"):
        return None
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        handle = _by_uuid(pynvml, device)
        pending = None
        if handle is None:
            index = _physical_index(device)
            handle = (pynvml.nvmlDeviceGetHandleByIndex(index) if isinstance(index, int)
                      else pynvml.nvmlDeviceGetHandleByUUID(index))
            pending = device
    except Exception:  # noqa: BLE001 - no NVML, no sampling
        return None
    return GpuSampler(pynvml, handle, interval, pending)


__all__ = ["GpuSampler", "gpu_sampler"]
