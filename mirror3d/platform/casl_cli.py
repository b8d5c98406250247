"""CLI command ``train-casl`` (thin; see :mod:`mirror3d.platform.casl_trainer`)."""

from __future__ import annotations

import argparse
import json


class TrainCaslCommand:
    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        from mirror3d.cli import add_config_arguments
        from mirror3d.platform.casl_trainer import CaslTrainConfig

        parser.add_argument("--smoke", action="store_true",
                            help="tiny run: 2 epochs at 32×64 on a handful of images")
        add_config_arguments(parser, CaslTrainConfig)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from mirror3d.cli import config_from_args
        from mirror3d.platform.casl_trainer import CaslTrainConfig, smoke_config, train_casl

        cfg = config_from_args(CaslTrainConfig, args)
        if args.smoke:
            cfg = smoke_config(cfg)
        run_dir = train_casl(cfg)
        summary = json.loads((run_dir / "train_summary.json").read_text())
        print(f"train-casl: held-out mask IoU {summary['held_out_mask_iou']:.1f}% after "
              f"{summary['epochs_run']} epochs -> {run_dir}")
        return 0
