"""PDEBench's error metrics for 1D fields, accumulated over a whole split batch by batch.

For predictions p and targets y of shape ``[samples, nt, nx]`` (PDEBench's ``[b, x, t, c]`` with
one channel, transposed), per frame t:

- RMSE: mean over samples of e = sqrt(mean_x (p − y)²);
- nRMSE: mean over samples of e / sqrt(mean_x y²) (no epsilon, as PDEBench);
- cRMSE: sqrt(mean over samples of (Σ_x p − Σ_x y)²) / nx, the error of the conserved mean;
- max error: max over samples and x of |p − y|;
- bRMSE: mean over samples of sqrt(((p − y)² at the first cell + at the last cell) / 2);
- fRMSE: E_k = sqrt(mean over samples of |P_k − Y_k|²) / nx · L with P, Y the unnormalised rFFTs
  along x, averaged over the bands k ∈ [0, 4) (low), [4, 12) (mid) and [12, nx/2] (high).

Every metric is then averaged over the predicted frames, i.e. the frames after the
``initial_step`` frames the model is given (PDEBench since 2024). The statistics are summed over
all batches first, so the result is exact for the whole split whatever the batch size.

Three conventions (``convention=``), because PDEBench's published numbers were not computed the
clean way and a comparison must use the same averaging:

- ``"clean"`` (the default, and what the fitness uses): as above.
- ``"pdebench"``: the convention of PDEBench's published tables, i.e. ``metrics.py`` as released
  in the PyPI wheel 0.1.0 (2023-08) and in git before commit 268ba5e (2024-10-21). The
  ``initial_step`` given frames (zero error) are *included* in the time average; each batch of the
  evaluation loader (PDEBench: 50 trajectories) is reduced on its own (per-batch maxima,
  per-batch cRMSE/fRMSE); the per-batch values are summed and divided by n_batches − 1 (an
  off-by-one; with a single batch we divide by 1 where PDEBench divides by zero). On 41 frames
  with 20 batches this reads ≈ 31/41 · 20/19 ≈ 0.80 × the clean value. Recorded by every
  advection evaluation as ``*_pdebench`` next to the clean metrics.
- ``"pdebench_head"``: PDEBench's git HEAD since 268ba5e: the initial frames are sliced off as in
  the clean convention, but the per-batch reduction and the n_batches − 1 divisor remain.

The two PDEBench conventions depend on the batch size of the evaluation; the clean one does not.
``legacy=True`` is the older spelling of ``convention="pdebench"``.
"""

from __future__ import annotations

import math

import torch

METRIC_NAMES = (
    "rmse",
    "nrmse",
    "crmse",
    "max_error",
    "brmse",
    "frmse_low",
    "frmse_mid",
    "frmse_high",
)
CONVENTIONS = ("clean", "pdebench", "pdebench_head")
PDEBENCH_SUFFIX = "_pdebench"
"""Suffix of the metrics recorded in PDEBench's published convention (``val_nrmse_pdebench``)."""
FITNESS_METRICS = ("rmse", "nrmse", "brmse", "crmse")
"""The metrics whose mean is the fitness of the advection scenarios (as in the L2L study)."""


def advection_fitness(metrics: dict[str, float], prefix: str = "") -> float:
    """Mean of RMSE, nRMSE, bRMSE and cRMSE: the quantity the advection scenarios minimise."""
    return sum(metrics[prefix + name] for name in FITNESS_METRICS) / len(FITNESS_METRICS)


class MetricAccumulator:
    """Accumulates PDEBench's metrics over batches of ``[samples, nt, nx]`` predictions.

    Call :meth:`update` with each batch (full trajectories including the ``initial_step`` given
    frames), then :meth:`compute` for a dict of floats keyed by :data:`METRIC_NAMES`.
    """

    def __init__(
        self,
        initial_step: int = 10,
        *,
        legacy: bool = False,
        convention: str = "clean",
        low: int = 4,
        high: int = 12,
        length: float = 1.0,
    ) -> None:
        if initial_step < 0 or not 0 <= low <= high:
            raise ValueError("need initial_step >= 0 and 0 <= low <= high")
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        self.initial_step = initial_step
        self.convention = "pdebench" if legacy else convention
        self.per_batch = self.convention != "clean"
        self.keep_initial = self.convention == "pdebench"
        self.low, self.high, self.length = low, high, length
        self._sums: dict[str, torch.Tensor] = {}
        self._count = 0
        self._batches: list[dict[str, float]] = []

    def _per_frame(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Sums over the batch (and a max) of the per-sample, per-frame quantities."""
        diff = pred - target
        nx = diff.shape[-1]
        err = diff.pow(2).mean(-1).sqrt()  # [b, t]
        boundary = ((diff[..., 0].pow(2) + diff[..., -1].pow(2)) / 2).sqrt()
        spectrum = torch.fft.rfft(pred, dim=-1) - torch.fft.rfft(target, dim=-1)
        return {
            "rmse": err.sum(0),
            "nrmse": (err / target.pow(2).mean(-1).sqrt()).sum(0),
            "crmse": (pred.sum(-1) - target.sum(-1)).pow(2).sum(0),
            "max_error": diff.abs().amax(dim=(0, 2)),
            "brmse": boundary.sum(0),
            "spectrum": spectrum.abs().pow(2).sum(0),  # [t, nx//2 + 1]
            "nx": torch.tensor(float(nx)),
        }

    def _finish(self, sums: dict[str, torch.Tensor], count: int) -> dict[str, float]:
        nx = float(sums["nx"])
        fourier = (sums["spectrum"] / count).sqrt() / nx * self.length  # [t, k]
        bands = {
            "frmse_low": fourier[:, : self.low],
            "frmse_mid": fourier[:, self.low : self.high],
            "frmse_high": fourier[:, self.high :],
        }
        out = {
            "rmse": sums["rmse"] / count,
            "nrmse": sums["nrmse"] / count,
            "crmse": (sums["crmse"] / count).sqrt() / nx,
            "max_error": sums["max_error"],
            "brmse": sums["brmse"] / count,
        }
        result = {name: float(v.mean()) for name, v in out.items()}
        for name, band in bands.items():
            result[name] = float(band.mean(-1).mean()) if band.shape[-1] else math.nan
        return result

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of predicted and true trajectories, both ``[samples, nt, nx]``."""
        if pred.shape != target.shape or pred.ndim != 3:
            raise ValueError(
                f"pred and target must both be [samples, nt, nx]; got {tuple(pred.shape)} "
                f"and {tuple(target.shape)}"
            )
        pred = pred.detach().to(torch.float64)
        target = target.detach().to(torch.float64)
        if not self.keep_initial:
            if pred.shape[1] <= self.initial_step:
                raise ValueError(f"need more than initial_step={self.initial_step} frames")
            pred, target = pred[:, self.initial_step :], target[:, self.initial_step :]
        frame = self._per_frame(pred, target)
        if self.per_batch:
            self._batches.append(self._finish(frame, pred.shape[0]))
            return
        for name, value in frame.items():
            if name not in self._sums:
                self._sums[name] = value
            elif name == "max_error":
                self._sums[name] = torch.maximum(self._sums[name], value)
            elif name != "nx":
                self._sums[name] = self._sums[name] + value
        self._count += pred.shape[0]

    def compute(self) -> dict[str, float]:
        """Return every metric in :data:`METRIC_NAMES` as a float."""
        if self.per_batch:
            if not self._batches:
                raise ValueError("no batches were added")
            divisor = max(len(self._batches) - 1, 1)
            return {k: sum(b[k] for b in self._batches) / divisor for k in METRIC_NAMES}
        if not self._count:
            raise ValueError("no batches were added")
        return self._finish(self._sums, self._count)


def advection_metrics(
    pred: torch.Tensor,
    target: torch.Tensor,
    initial_step: int = 10,
    *,
    legacy: bool = False,
    convention: str = "clean",
) -> dict[str, float]:
    """PDEBench's metrics of one set of trajectories ``[samples, nt, nx]`` (see the module doc).

    The whole set is one batch; for the PDEBench conventions use :class:`MetricAccumulator`
    with the evaluation loader's batches.
    """
    acc = MetricAccumulator(initial_step, legacy=legacy, convention=convention)
    acc.update(pred, target)
    return acc.compute()


class RecordedMetrics:
    """The metrics an evaluation records: the clean ones and PDEBench's (``*_pdebench``) together.

    Same interface as :class:`MetricAccumulator`; feed it the evaluation's batches (for PDEBench's
    convention their size matters: PDEBench evaluates in batches of 50). :meth:`compute` returns
    :data:`METRIC_NAMES` in the clean convention plus each name with :data:`PDEBENCH_SUFFIX` in
    the ``"pdebench"`` convention (published tables: initial frames included, sum / (n − 1)).
    """

    def __init__(self, initial_step: int = 10) -> None:
        self.clean = MetricAccumulator(initial_step)
        self.pdebench = MetricAccumulator(initial_step, convention="pdebench")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of predicted and true trajectories, both ``[samples, nt, nx]``."""
        self.clean.update(pred, target)
        self.pdebench.update(pred, target)

    def compute(self) -> dict[str, float]:
        """Clean metrics under their own names, PDEBench's under ``name + "_pdebench"``."""
        legacy = self.pdebench.compute()
        return {
            **self.clean.compute(),
            **{name + PDEBENCH_SUFFIX: value for name, value in legacy.items()},
        }
