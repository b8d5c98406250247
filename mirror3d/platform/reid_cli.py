"""CLI commands ``train-reid``, ``eval-reid`` and ``lift-flat`` (thin wrappers; see
:mod:`mirror3d.platform.reid_trainer`)."""

from __future__ import annotations

import argparse
import json
import pathlib


class TrainReidCommand:
    """``python -m mirror3d train-reid [--smoke] [--config FILE] [--optim.epochs 60 ...]``"""

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        from mirror3d.cli import add_config_arguments
        from mirror3d.platform.reid_trainer import ReidTrainConfig

        parser.add_argument("--smoke", action="store_true",
                            help="tiny run: 2 epochs, few points, small batches")
        add_config_arguments(parser, ReidTrainConfig)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from mirror3d.cli import config_from_args
        from mirror3d.platform.reid_trainer import ReidTrainConfig, smoke_config, train_reid

        cfg = config_from_args(ReidTrainConfig, args)
        if args.smoke:
            cfg = smoke_config(cfg)
        run_dir = train_reid(cfg)
        res = json.loads((run_dir / "eval.json").read_text())
        print(f"train-reid: {cfg.model.name} R1 {100 * res['rank1']:.2f} "
              f"mAP {100 * res['map_trapezoid']:.2f} (trapezoid) -> {run_dir}")
        return 0


class EvalReidCommand:
    """``python -m mirror3d eval-reid RUN_DIR [--shards DIR | --images DIR]`` (A→B when given)."""

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run_dir", help="a train-reid run directory (or its model_final.pt)")
        parser.add_argument("--shards", default=None,
                            help="evaluate on these point-cloud shards instead (cross-dataset)")
        parser.add_argument("--images", default=None,
                            help="evaluate on this Market-1501-layout tree instead (2D models)")
        parser.add_argument("--out", default=None,
                            help="where to write eval.json and ranked.png (default: RUN_DIR/eval)")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from mirror3d.utils.config import update_config
        from mirror3d.platform.reid_trainer import (evaluate_model, is_image_model,
                                                    load_reid_data, load_reid_model)

        model, cfg = load_reid_model(args.run_dir)
        updates = {}
        if args.shards:
            updates["data.shards"] = args.shards
        if args.images:
            updates["data.images"] = args.images
        cfg = update_config(cfg, updates) if updates else cfg
        data = load_reid_data(cfg)
        run = pathlib.Path(args.run_dir)
        out = pathlib.Path(args.out) if args.out else (run if run.is_dir() else run.parent) / "eval"
        out.mkdir(parents=True, exist_ok=True)
        res = evaluate_model(model, data, cfg, out, is_image_model(cfg.model.name))
        print(json.dumps(res, indent=2))
        return 0


class LiftFlatCommand:
    """``python -m mirror3d lift-flat ROOT OUT`` — every pixel as (x, y, 0), into shards."""

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("root", help="re-id dataset root")
        parser.add_argument("out", help="output directory of parquet shards")
        parser.add_argument("--reader", default="market1501",
                            help="layout: market1501 | dukemtmc | cuhk03_np | msmt17")
        parser.add_argument("--shard-size", type=int, default=512)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from mirror3d.lifting.flat import lift_reid_tree_flat

        paths = lift_reid_tree_flat(args.root, args.out, args.reader, args.shard_size)
        print(f"lift-flat: {len(paths)} shards in {args.out}")
        return 0
