"""Job ``eval-reid``: evaluate a trained re-id run (CMC, mAP, ranked picture) on its own test
split, or on another dataset's (cross-dataset A→B).

    python -m mirror3d eval-reid runs/ognet/<run>
    python -m mirror3d eval-reid runs/ognet/<run> --shards data/lifted/other   # A→B, points
    python -m mirror3d eval-reid runs/ognet/<run> --images data/other/Market-1501 --out /tmp/ev

Writes ``eval.json`` and ``ranked.png`` into ``out`` (default ``<run_dir>/eval``) and prints the
evaluation (:func:`mirror3d.engine.reid_train.evaluate_model`). Runs in this process, no Ray.
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass, field

from mirror3d.engine.reid_train import evaluate_model, load_reid_data, load_reid_model
from mirror3d.utils.config import ConfigError, update_config

__all__ = ["CONFIG", "POSITIONAL", "EvalReidConfig", "run"]


@dataclass
class EvalReidConfig:
    """Evaluate a train-reid run."""

    run_dir: str = field(default="", metadata={
        "help": "a train-reid run directory (or its model_final.pt); required"})
    shards: str = field(default="", metadata={
        "help": "evaluate on these point-cloud shards instead (cross-dataset; default: the run's)"})
    images: str = field(default="", metadata={
        "help": "evaluate on this Market-1501-layout tree instead (2D models; default: the run's)"})
    out: str = field(default="", metadata={
        "help": "where to write eval.json and ranked.png (default: RUN_DIR/eval)"})


CONFIG = EvalReidConfig
POSITIONAL = ("run_dir",)


def run(cfg: EvalReidConfig) -> int:
    if not cfg.run_dir:
        raise ConfigError("run_dir: required (a train-reid run directory or its model_final.pt)")
    model, train_cfg = load_reid_model(cfg.run_dir)
    updates = {}
    if cfg.shards:
        updates["data.shards"] = cfg.shards
    if cfg.images:
        updates["data.images"] = cfg.images
    train_cfg = update_config(train_cfg, updates) if updates else train_cfg
    data = load_reid_data(train_cfg)
    run = pathlib.Path(cfg.run_dir)
    out = pathlib.Path(cfg.out) if cfg.out else (run if run.is_dir() else run.parent) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    res = evaluate_model(model, data, train_cfg, out)
    print(json.dumps(res, indent=2))
    return 0
