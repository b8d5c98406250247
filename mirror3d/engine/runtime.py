"""What a training loop needs from its process, with or without Ray: rank and world size,
the device, gradient all-reduce, the training clock, BN re-estimation and the NaN stop.

Everything here is plain torch (``torch.distributed`` when a process group exists): the engine's
loops run the same in one process (tests, a debugger) and inside a Ray Train worker, where
:mod:`mirror3d.platform.train` has set the process group and the device up.
"""

from __future__ import annotations

import math
import pathlib
import time
from collections.abc import Callable
from typing import Any

import torch

from mirror3d.utils.checkpoint import latest_checkpoint

__all__ = ["ReportFn", "world", "default_device", "all_reduce_sum", "all_reduce_grads", "reestimate_bn",
           "TrainingClock", "non_finite_loss"]


#: A loop's per-epoch hook: ``report(metrics, checkpoint_file_or_None)``, called on every rank
#: (inside Ray Train: :func:`mirror3d.platform.train.ray_report`).
ReportFn = Callable[[dict, pathlib.Path | None], None]


def world() -> tuple[int, int]:
    """(rank, world_size); (0, 1) outside torch.distributed."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def default_device() -> torch.device:
    """CUDA device 0 when there is one, else CPU (a Ray worker passes its assigned device)."""
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all workers (identity with one worker)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_world_size() > 1:
        t = t.clone()
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return t


def all_reduce_grads(params) -> None:
    """Average gradients over workers (DDP's all-reduce, made explicit). Which parameters have a
    gradient depends only on the step's phase, the same on every worker, so those without one
    are skipped everywhere."""
    ws = torch.distributed.get_world_size()
    for p in params:
        if p.grad is None:
            continue
        torch.distributed.all_reduce(p.grad)
        p.grad /= ws


def non_finite_loss(what: str, epoch: int, step: int, run_dir, resume: str | None = None
                    ) -> FloatingPointError:
    """The error that stops a run on a NaN/inf loss: where, and the last good checkpoint (the
    newest in ``run_dir``, else the one the run resumed from) with how to resume."""
    good = latest_checkpoint(run_dir) or resume or None
    return FloatingPointError(
        f"non-finite {what} loss at epoch {epoch}, step {step}: training stopped; "
        f"last good checkpoint: {good or 'none yet'}"
        + (f" (resume with --resume {good} after lowering optim.lr or fixing the data)"
           if good else ""))


@torch.no_grad()
def reestimate_bn(model: torch.nn.Module, loader, forward: Callable[[Any], Any],
                  max_batches: int = 50) -> None:
    """Recompute BatchNorm running statistics as a cumulative average over up to
    ``max_batches`` batches (for weight-averaged models). ``forward(batch)`` runs the model."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = {m: m.momentum for m in bns}
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for i, batch in enumerate(loader):
        if i >= max_batches:
            break
        forward(batch)
    for m, mom in saved.items():
        m.momentum = mom


class TrainingClock:
    """Training progress in [0, 1]: the epoch fraction, or the wall-time fraction of a budget
    when that is further along (so schedules finish inside ``max_minutes``)."""

    def __init__(self, epochs: int, max_minutes: float = 0.0) -> None:
        self.epochs = epochs
        self.budget = max_minutes * 60.0
        self.start = time.time()

    def elapsed(self) -> float:
        return time.time() - self.start

    def progress(self, epoch: float) -> float:
        p = epoch / self.epochs
        if self.budget > 0:
            p = max(p, self.elapsed() / self.budget)
        return min(p, 1.0)

    def out_of_time(self) -> bool:
        return self.budget > 0 and self.elapsed() >= self.budget

    def out_of_time_all(self, device=None) -> bool:
        """:meth:`out_of_time` agreed by all workers (any worker out of time stops all), so a
        loop can stop between steps without leaving a DDP peer waiting in an all-reduce."""
        stop = self.out_of_time()
        if self.budget > 0 and torch.distributed.is_available() \
                and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            stop = bool(all_reduce_sum(torch.tensor([float(stop)], device=device)).item() > 0)
        return stop

    def cosine(self, epoch: float, floor: float) -> float:
        """Cosine factor from 1 down to ``floor`` over the progress."""
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * self.progress(epoch)))
