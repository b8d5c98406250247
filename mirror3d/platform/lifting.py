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
from mirror3d.lifting.lifter import META_DIR, ShardLifter
from mirror3d.lifting.plan import ShardJob
from mirror3d.lifting.run import LiftReport, lift_dataset
from mirror3d.platform.cluster import ensure_ray
from mirror3d.utils import storage
from mirror3d.utils.config import update_config

__all__ = ["LiftActor", "lift_with_ray", "run_lift", "stage_lift_inputs"]


class LiftActor:
    """The callable class of the actor pool: a batch ``{"job": [ShardJob JSON]}`` in, one meta
    (JSON) per shard out as ``{"summary": [...]}``. Each meta records the Ray node id of the
    actor's node (``node``), so a multi-node run shows which node lifted which shard."""

    def __init__(self, cfg: LiftConfig, inputs: dict[str, str] | None = None) -> None:
        for uri in (inputs or {}).values():
            storage.pull(uri)  # this node's copy of a dataset / mask tree / checkpoint in a store
        self.location = cfg.out_location()
        self.lifter = ShardLifter(cfg, set_threads=True,
                                  worker_info={"node": ray.get_runtime_context().get_node_id()})

    def __call__(self, batch: dict) -> dict:
        metas = []
        for j in batch["job"]:
            meta = self.lifter.lift_job(ShardJob.from_json(str(j)))
            if storage.is_uri(self.location):  # the shard, then its meta (= "done"), to the store
                storage.push(self.location, f"{meta['shard']}.parquet")
                storage.push(self.location, f"{META_DIR}/{meta['shard']}.json")
            metas.append(meta)
        return {"summary": np.array([json.dumps(m) for m in metas], dtype=object)}


def lift_with_ray(cfg: LiftConfig, jobs: Sequence[ShardJob],
                  inputs: dict[str, str] | None = None) -> list[dict]:
    """Lift ``jobs`` in a Ray Data actor pool of ``cfg.actors`` (up to ``cfg.max_actors``)
    actors; returns the shards' metas. ``inputs``: ``{config key: URI}`` of inputs in a store,
    which every actor pulls onto its node first (:func:`stage_lift_inputs`)."""
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
        fn_constructor_kwargs={"cfg": cfg, "inputs": inputs},
        num_cpus=cfg.cpus_per_actor,
        num_gpus=cfg.gpus_per_actor or None,
        # node loss: Ray Data gives pool actors max_restarts=-1 and max_task_retries=-1 (passing
        # them here is deprecated in Ray 2.60), so an actor of a lost node is restarted elsewhere
        # and its shards retried; a retried shard rewrites the same files atomically, so every
        # row is there once (tests/platform/test_multinode_data.py)
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
    cfg, inputs = stage_lift_inputs(cfg)
    runner = None
    if use_ray and not cfg.no_ray:
        def runner(c: LiftConfig, jobs: Sequence[ShardJob]) -> list[dict]:
            return lift_with_ray(c, jobs, inputs)
    return lift_dataset(cfg, runner, run_dir)


#: The inputs of a lifting job that may be storage URIs.
INPUT_KEYS = ("root", "mask_dir", "checkpoint")


def stage_lift_inputs(cfg: LiftConfig) -> tuple[LiftConfig, dict[str, str]]:
    """The inputs of ``cfg`` that are storage URIs (dataset, mask tree, CASL checkpoint) pulled
    into this node's stage, and ``cfg`` pointing at the staged copies (the same path on every
    node with the same ``$MIRROR3D_STAGE``). Returns the config and ``{key: URI}``."""
    inputs = {k: getattr(cfg, k) for k in INPUT_KEYS if storage.is_uri(getattr(cfg, k))}
    for uri in inputs.values():
        storage.pull(uri)
    if not inputs:
        return cfg, inputs
    return update_config(cfg, {k: str(storage.local_path(u)) for k, u in inputs.items()}), inputs
