"""One readable console line per epoch (instead of raw metric dicts), printed by rank 0 and
appended to ``<run dir>/progress.log`` (which the Ray layer shows on the driver's console when
the workers' own output is kept off it).

    progress = EpochProgress("train-casl", epochs=30, budget_minutes=8)
    progress.epoch(epoch, steps=n, seconds=t, metrics={"loss": 1.2, "train_mask_iou": 0.45},
                   main=("loss", "train_mask_iou"))
    # train-casl  epoch 3/30  1.85 s/step  loss 1.200  train_mask_iou 0.450  elapsed 1.2 min  ETA 6.8 min
"""

from __future__ import annotations

import os
import pathlib
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TextIO

__all__ = ["PROGRESS_FILE", "EpochProgress", "format_minutes"]

PROGRESS_FILE = "progress.log"


def format_minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


class EpochProgress:
    """Prints ``<job>  epoch e/E  s/step  <main metrics>  elapsed  ETA`` once per epoch.

    The ETA is the sooner of the epochs left at the mean epoch time and the time budget left."""

    def __init__(self, job: str, epochs: int, budget_minutes: float = 0.0, start_epoch: int = 0,
                 stream: TextIO | None = None, enabled: bool = True,
                 log_file: str | os.PathLike | None = None) -> None:
        self.job, self.epochs, self.budget = job, epochs, budget_minutes * 60.0
        self.start_epoch = start_epoch
        self.t0 = time.time()
        self.stream = stream
        self.enabled = enabled
        self.log_file = pathlib.Path(log_file) if log_file is not None else None

    def line(self, epoch: int, steps: int, seconds: float, metrics: Mapping[str, float],
             main: Sequence[str]) -> str:
        elapsed = time.time() - self.t0
        done = epoch + 1 - self.start_epoch
        eta = (self.epochs - epoch - 1) * elapsed / max(done, 1)
        if self.budget > 0:
            eta = min(eta, max(0.0, self.budget - elapsed))
        parts = [self.job, f"epoch {epoch + 1}/{self.epochs}",
                 f"{seconds / max(steps, 1):.2f} s/step"]
        parts += [f"{k} {metrics[k]:.3f}" for k in main if k in metrics]
        parts += [f"elapsed {format_minutes(elapsed)}", f"ETA {format_minutes(eta)}"]
        return "  ".join(parts)

    def epoch(self, epoch: int, steps: int, seconds: float, metrics: Mapping[str, float],
              main: Sequence[str]) -> None:
        if not self.enabled:
            return
        line = self.line(epoch, steps, seconds, metrics, main)
        print(line, file=self.stream or sys.stdout, flush=True)
        if self.log_file is not None:
            with open(self.log_file, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
