"""Re-id training on Ray Train: the driver around :func:`mirror3d.engine.reid_train.train_reid_loop`.

:func:`train_reid` checks the data before Ray or a run directory exists, makes the run directory
(``<out_dir>/<name>``, kept on failure so that a run can be resumed from its checkpoints) with
its ``config.yaml``, and runs the engine's loop on ``ray.num_workers`` Ray Train workers
(:func:`mirror3d.platform.train.fit`; docs/architecture.md). Each worker trains on its device with
:func:`mirror3d.platform.train.ray_report` as the loop's per-epoch report.
"""

from __future__ import annotations

import pathlib

from mirror3d.engine.reid_train import KIND, ReidTrainConfig, load_reid_data, train_reid_loop
from mirror3d.platform.train import ScalingSpec, fit, ray_report, worker_device
from mirror3d.utils.checkpoint import resolve_resume
from mirror3d.utils.config import config_from_dict, config_to_dict, save_config, update_config
from mirror3d.utils.rundir import default_run_name

__all__ = ["train_reid", "reid_worker"]


def reid_worker(loop_config: dict) -> None:
    """Ray Train worker entry: the engine's loop on this worker's device, reporting to Ray."""
    cfg = config_from_dict(ReidTrainConfig, loop_config["config"])
    train_reid_loop(cfg, loop_config["run_dir"], loop_config.get("resume") or "",
                    device=worker_device(), report=ray_report)


def train_reid(cfg: ReidTrainConfig) -> pathlib.Path:
    """Train (through Ray Train) and evaluate. Returns the run directory, which holds
    ``config.yaml``, ``metrics.jsonl``, ``checkpoints/``, ``model_final.pt``, ``eval.json`` and
    ``ranked.png``.

    Raises:
        FileNotFoundError / ValueError: bad data, model name or resume checkpoint (before any
            run directory or Ray exists).
        FloatingPointError: a non-finite loss (see :func:`mirror3d.engine.runtime.non_finite_loss`).
        mirror3d.platform.train.TrainingFailed: a worker failed otherwise.
    """
    # workers run in their own directories: ship absolute data paths
    cfg = update_config(cfg, {"data.shards": str(pathlib.Path(cfg.data.shards).resolve()),
                              "data.images": str(pathlib.Path(cfg.data.images).resolve())})
    load_reid_data(cfg)  # fail fast on bad data, before a run directory or Ray exists
    resume = resolve_resume(cfg.resume, KIND)
    run_dir = (pathlib.Path(cfg.out_dir) / (cfg.name or default_run_name())).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    loop_config = {"config": config_to_dict(cfg), "run_dir": str(run_dir), "resume": resume}
    fit(reid_worker, loop_config, run_dir=run_dir,
        scaling=ScalingSpec(cfg.ray.num_workers, cfg.ray.use_gpu, cfg.ray.cpus_per_worker),
        max_failures=cfg.ray.max_failures)
    return run_dir
