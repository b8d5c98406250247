"""Re-id training on Ray Train: the driver around :func:`mirror3d.engine.reid_train.train_reid_loop`.

:func:`train_reid` checks the data before Ray or a run directory exists, makes the run directory
(``<out_dir>/<name>``, kept on failure so that a run can be resumed from its checkpoints) with
its ``config.yaml``, and runs the engine's loop on ``ray.num_workers`` Ray Train workers
(:func:`mirror3d.platform.train.fit`; docs/architecture.md). Each worker trains on its device with
:func:`mirror3d.platform.train.ray_report` as the loop's per-epoch report.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

from mirror3d.engine.reid_train import (KIND, ReidTrainConfig, input_kind, load_reid_data,
                                        train_reid_loop)
from mirror3d.engine.tracking import resolve_tracking
from mirror3d.platform.casl import image_header
from mirror3d.platform.train import ray_report, stage_inputs, train_run, worker_device
from mirror3d.utils.config import config_from_dict
from mirror3d.utils.preflight import check_images, check_input, check_output

__all__ = ["train_reid", "reid_worker"]


def reid_worker(loop_config: dict) -> None:
    """Ray Train worker entry: the engine's loop on this worker's device, reporting to Ray."""
    cfg = config_from_dict(ReidTrainConfig, loop_config["config"])
    train_reid_loop(cfg, loop_config["run_dir"], loop_config.get("resume") or "",
                    device=worker_device(), report=ray_report)


def train_reid(cfg: ReidTrainConfig, callbacks: Sequence[Any] = ()) -> pathlib.Path:
    """Train (through Ray Train) and evaluate. Returns the run directory, which holds
    ``config.yaml``, ``metrics.jsonl``, ``checkpoints/``, ``model_final.pt``, ``eval.json`` and
    ``ranked.png``.

    Raises:
        FileNotFoundError / ValueError: bad data, model name or resume checkpoint (before any
            run directory or Ray exists; an unreadable image a ``DataError``, an output folder
            that is a file an ``OutputPathError``: :mod:`mirror3d.utils.preflight`).
        FloatingPointError: a non-finite loss (see :func:`mirror3d.engine.runtime.non_finite_loss`).
        mirror3d.platform.train.TrainingFailed: a worker failed otherwise.
    """
    # workers run in their own directories: absolute data paths (URIs: staged on each node)
    cfg, inputs = stage_inputs(cfg, ["data.shards", "data.images"])
    cfg = resolve_tracking(cfg)  # the MLflow store, absolute for the workers
    images = input_kind(cfg.model.name) == "image"
    key = "data.images" if images else "data.shards"
    check_input(cfg.data.images if images else cfg.data.shards, key,
                what="image tree" if images else "shard folder")
    check_output(cfg.out_dir, "out_dir")
    data = load_reid_data(cfg)  # fail fast on bad data, before a run directory or Ray exists
    if images:  # corrupt images: found in seconds here, not inside the workers
        paths = [r.path for d in (data.train, data.query, data.gallery) for r in d.records]
        check_images(((p, None) for p in dict.fromkeys(paths)), key, what="images",
                     header=image_header)
    return train_run(reid_worker, cfg, KIND, callbacks, inputs)
