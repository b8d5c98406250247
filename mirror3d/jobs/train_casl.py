"""Job ``train-casl``: train CASL (Zheng et al. 2022, "3D Magic Mirror") — single-image textured
mesh reconstruction, self-supervised on images + masks — through Ray Train.

    python -m mirror3d train-casl --data.root data/synthpeople/Market-HQ --optim.max_minutes 30
    python -m mirror3d train-casl --smoke                   # two tiny epochs at 32x64
    python -m mirror3d train-casl --preset paper            # the paper's Market-HQ settings (GPU)
    python -m mirror3d train-casl --name <run> --resume runs/casl/<run> --optim.epochs 40
                                                            # continue <run> in place
    python -m mirror3d train-casl --name <run> --overwrite  # replace <run>
    (an existing <run> without --resume or --overwrite is refused)

The run directory ``<out_dir>/<name>`` holds ``config.yaml``, ``metrics.jsonl``,
``checkpoints/``, ``templates/``, ``model_final.pt``, ``template_final.obj`` and
``train_summary.json`` (:func:`mirror3d.platform.casl.train_casl`; the loop is
:mod:`mirror3d.engine.casl_train`). Evaluate it with ``eval-casl``.
"""

from __future__ import annotations

import json

from mirror3d.engine.casl_train import CaslTrainConfig
from mirror3d.platform.casl import train_casl

__all__ = ["CONFIG", "run"]

CONFIG = CaslTrainConfig


def run(cfg: CaslTrainConfig) -> int:
    run_dir = train_casl(cfg)
    summary = json.loads((run_dir / "train_summary.json").read_text())
    print(f"train-casl: held-out mask IoU {summary['held_out_mask_iou']:.1f}% after "
          f"{summary['epochs_run']} epochs -> {run_dir}")
    if "data" in summary:  # read, used, skipped by reason (the items: skipped.tsv)
        print(f"{summary['data']['counts_line']} (skipped images with reasons: "
              f"{run_dir}/skipped.tsv)")
    return 0
