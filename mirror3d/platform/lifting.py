"""The lifting job on Ray Data: the missing shards lifted by an actor pool.

One row per missing shard → ``map_batches(LiftActor, batch_size=1,
compute=ActorPoolStrategy(...), num_cpus=…, num_gpus=…)``: each actor holds one
:class:`~mirror3d.lifting.lifter.ShardLifter` (its reconstructor built once) and lifts one shard
per call, writing ``<out>/<shard>.parquet`` and ``<out>/_meta/<shard>.json`` itself. Everything
else — plan, resume, summary, bad-image list, pictures — is the core driver
:func:`mirror3d.lifting.run.lift_dataset`, which also runs the whole job in one process
(``run_lift(cfg, use_ray=False)``). The layering is in docs/architecture.md.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import ray

from mirror3d.lifting.config import LiftConfig
from mirror3d.lifting.lifter import ShardLifter
from mirror3d.lifting.plan import ShardJob
from mirror3d.lifting.run import LiftReport, lift_dataset
from mirror3d.platform.cluster import ensure_ray

__all__ = ["LiftActor", "lift_with_ray", "run_lift"]


class LiftActor:
    """The callable class of the actor pool: a batch ``{"job": [ShardJob JSON]}`` in, one meta
    (JSON) per shard out as ``{"summary": [...]}``."""

    def __init__(self, cfg: LiftConfig) -> None:
        self.lifter = ShardLifter(cfg, set_threads=True)

    def __call__(self, batch: dict) -> dict:
        metas = [self.lifter.lift_job(ShardJob.from_json(str(j))) for j in batch["job"]]
        return {"summary": np.array([json.dumps(m) for m in metas], dtype=object)}


def lift_with_ray(cfg: LiftConfig, jobs: Sequence[ShardJob]) -> list[dict]:
    """Lift ``jobs`` in a Ray Data actor pool of ``cfg.actors`` (up to ``cfg.max_actors``)
    actors; returns the shards' metas."""
    ensure_ray()
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = bool(cfg.progress)
    if cfg.max_actors:
        compute = ray.data.ActorPoolStrategy(min_size=cfg.actors, max_size=cfg.max_actors)
    else:
        compute = ray.data.ActorPoolStrategy(size=cfg.actors)
    ds = ray.data.from_items([{"job": j.to_json()} for j in jobs], override_num_blocks=len(jobs))
    ds = ds.map_batches(
        LiftActor,
        batch_size=1,
        batch_format="numpy",
        compute=compute,
        fn_constructor_kwargs={"cfg": cfg},
        num_cpus=cfg.cpus_per_actor,
        num_gpus=cfg.gpus_per_actor or None,
    )
    return [json.loads(row["summary"]) for row in ds.iter_rows()]


def run_lift(cfg: LiftConfig, use_ray: bool = True, run_dir: bool = True) -> LiftReport:
    """Lift ``cfg.root`` into shards under ``cfg.out_dir()`` (resuming), then write the summary,
    bad-image list and pictures into ``runs/lift/<name>`` (when ``run_dir``).

    Args:
        use_ray: lift in a Ray Data actor pool; False (or ``cfg.no_ray``) lifts in this process,
            one shard after another.
    Raises:
        ValueError: see :func:`mirror3d.lifting.run.lift_dataset`.
    """
    return lift_dataset(cfg, lift_with_ray if use_ray and not cfg.no_ray else None, run_dir)
