"""Job ``eval-reid``: evaluate a trained re-id run (CMC, mAP, ranked picture) on its own test
split, or on another dataset's (cross-dataset A→B).

    python -m mirror3d eval-reid runs/ognet/<run>
    python -m mirror3d eval-reid runs/ognet/<run> --shards data/lifted/other   # A→B, points
    python -m mirror3d eval-reid runs/ognet/<run> --images data/other/Market-1501 --out /tmp/ev
    python -m mirror3d eval-reid runs/ognet/<run> --densities 0.25,0.5,1.0   # OG-Net Fig. 8
    python -m mirror3d eval-reid runs/ognet/<run> --num_points 2048 --densities 0.25,0.5,1.0

Writes ``eval.json`` and ``ranked.png`` into ``out`` (default ``<run_dir>/eval``) and prints the
evaluation (:func:`mirror3d.engine.reid_train.evaluate_model`). Runs in this process, no Ray.

``--densities`` evaluates again with every test cloud thinned to those fractions of its
evaluation points (``eval.json``'s ``densities``; the fractions and how they map to the OG-Net
paper's Fig. 8: :func:`~mirror3d.engine.reid_train.evaluate_model`). ``--num_points`` evaluates
with another number of points per test cloud than the run trained with (e.g. twice as many: the
paper's 100 % test density for a model trained at 50 %).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from mirror3d.engine.reid_train import evaluate_model, load_reid_data, load_reid_model
from mirror3d.utils import storage
from mirror3d.utils.config import ConfigError, update_config
from mirror3d.utils.preflight import check_checkpoint, check_input, check_output

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
    densities: tuple[float, ...] = field(default=(), metadata={
        "metavar": "D,...",
        "help": "also evaluate at these fractions (0, 1] of each test cloud's points, e.g. "
                "0.25,0.5,1.0 (default: the run's eval_densities)"})
    num_points: int = field(default=0, metadata={
        "range": (0, 1_000_000),
        "help": "points per test cloud (0 = the run's data.num_points)"})

    def validate(self) -> None:
        shown = ",".join(format(d, "g") for d in self.densities)
        if any(not 0.0 < d <= 1.0 for d in self.densities):
            raise ConfigError(f"densities: every element must be in (0, 1], got {shown}")
        if len(set(self.densities)) != len(self.densities):
            raise ConfigError(f"densities: expected distinct fractions, got {shown}")


CONFIG = EvalReidConfig
POSITIONAL = ("run_dir",)


def run(cfg: EvalReidConfig) -> int:
    if not cfg.run_dir:
        raise ConfigError("run_dir: required (a train-reid run directory or its model_final.pt)")
    # inputs and outputs may be storage URIs: read from and written to this node's stage
    local_run = storage.stage(cfg.run_dir)
    run = storage.local_path(cfg.run_dir)
    if run.is_dir():
        run_at = cfg.run_dir
    else:  # a model_final.pt: its run directory
        run_at = (cfg.run_dir.rstrip("/").rsplit("/", 1)[0] if storage.is_uri(cfg.run_dir)
                  else str(run.parent))
    out_at = cfg.out or storage.join(run_at, "eval")
    # checked before anything is evaluated: the checkpoint, the other data, the output folder
    check_checkpoint(local_run, "reid", "run_dir", needs=("config", "model", "num_classes"))
    if cfg.shards:
        check_input(storage.stage(cfg.shards), "shards", what="shard folder")
    if cfg.images:
        check_input(storage.stage(cfg.images), "images", what="image tree")
    check_output(out_at, "out")
    model, train_cfg = load_reid_model(local_run)
    updates = {}
    if cfg.shards:
        updates["data.shards"] = storage.stage(cfg.shards)
    if cfg.images:
        updates["data.images"] = storage.stage(cfg.images)
    if cfg.densities:
        updates["eval_densities"] = cfg.densities
    if cfg.num_points:
        updates["data.num_points"] = cfg.num_points
    train_cfg = update_config(train_cfg, updates) if updates else train_cfg
    data = load_reid_data(train_cfg)
    out = storage.local_path(out_at)
    out.mkdir(parents=True, exist_ok=True)
    res = evaluate_model(model, data, train_cfg, out)
    storage.push(out_at)
    print(json.dumps(res, indent=2))
    return 0
