"""Job ``train-reid``: train OG-Net on point-cloud shards, or the 2D baseline on images, through
Ray Train, then evaluate it (CMC, mAP, ranked picture).

    python -m mirror3d train-reid --data.shards data/lifted/flat --model.name og-net-small
    python -m mirror3d train-reid --model.name cnn2d-small --data.images data/synthpeople/Market-1501
    python -m mirror3d train-reid --smoke                  # two tiny epochs
    python -m mirror3d train-reid --preset paper           # the OG-Net paper's settings
    python -m mirror3d train-reid --name <run> --resume runs/ognet/<run> --optim.epochs 80
                                                            # continue <run> in place
    python -m mirror3d train-reid --name <run> --overwrite  # replace <run>
    (an existing <run> without --resume or --overwrite is refused)

The run directory ``<out_dir>/<name>`` holds ``config.yaml``, ``metrics.jsonl``,
``checkpoints/``, ``model_final.pt``, ``eval.json`` and ``ranked.png``
(:func:`mirror3d.platform.reid.train_reid`; the loop is :mod:`mirror3d.engine.reid_train`).
"""

from __future__ import annotations

import json

from mirror3d.engine.reid_train import ReidTrainConfig
from mirror3d.platform.reid import train_reid

__all__ = ["CONFIG", "run"]

CONFIG = ReidTrainConfig


def run(cfg: ReidTrainConfig) -> int:
    run_dir = train_reid(cfg)
    res = json.loads((run_dir / "eval.json").read_text())
    print(f"train-reid: {cfg.model.name} R1 {100 * res['rank1']:.2f} "
          f"mAP {100 * res['map_trapezoid']:.2f} (trapezoid) -> {run_dir}")
    counts = run_dir / "input.json"  # samples read and used per split (nothing is skipped here)
    if counts.exists():
        print(json.loads(counts.read_text())["counts_line"])
    return 0
