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
import pickle
import traceback
from collections.abc import Sequence

import numpy as np
import ray

from mirror3d.lifting.config import LiftConfig
from mirror3d.lifting.lifter import META_DIR, ShardLifter
from mirror3d.lifting.modes import MODES_NEEDING_MASK
from mirror3d.lifting.plan import ShardJob
from mirror3d.lifting.run import LiftReport, lift_dataset
from mirror3d.platform.cluster import ensure_ray
from mirror3d.utils import storage
from mirror3d.utils.config import update_config
from mirror3d.utils.errors import RemoteFailed, is_user_error, one_line
from mirror3d.utils.preflight import check_checkpoint, check_input, check_output

__all__ = ["LiftActor", "lift_with_ray", "preflight_lift", "run_lift", "stage_lift_inputs"]


class LiftActor:
    """The callable class of the actor pool: a batch ``{"job": [ShardJob JSON]}`` in, one meta
    (JSON) per shard out as ``{"summary": [...], "error": [...]}``. Each meta records the Ray
    node id of the actor's node (``node``), so a multi-node run shows which node lifted which
    shard.

    An error (building the reconstructor, lifting a shard) is returned as data, not raised:
    Ray Data would wrap it in its own exceptions (whose message is the whole remote traceback
    and whose type is lost), so the actor sends the pickled exception with its traceback
    (:func:`_error_row`) and the driver raises it as it was (:func:`_raise_actor_error`)."""

    def __init__(self, cfg: LiftConfig, inputs: dict[str, str] | None = None) -> None:
        self.lifter, self.init_error = None, b""
        try:
            for uri in (inputs or {}).values():
                storage.pull(uri)  # this node's copy of a dataset / mask tree / checkpoint in a store
            self.location = cfg.out_location()
            self.lifter = ShardLifter(cfg, set_threads=True,
                                      worker_info={"node": ray.get_runtime_context().get_node_id()})
        except Exception as exc:  # raised in the driver with the first batch's result
            self.init_error = _error_row(exc, "starting a lifting actor")

    def __call__(self, batch: dict) -> dict:
        metas, errors = [], []
        for j in batch["job"]:
            error = self.init_error
            meta: dict = {}
            if not error:
                job = ShardJob.from_json(str(j))
                try:
                    meta = self.lifter.lift_job(job)
                    if storage.is_uri(self.location):  # the shard, then its meta (= "done")
                        storage.push(self.location, f"{meta['shard']}.parquet")
                        storage.push(self.location, f"{META_DIR}/{meta['shard']}.json")
                except Exception as exc:
                    error = _error_row(exc, f"lifting shard {job.name}")
            metas.append(json.dumps(meta))
            errors.append(error)
        return {"summary": np.array(metas, dtype=object), "error": np.array(errors, dtype=object)}


def _error_row(exc: BaseException, doing: str) -> bytes:
    """An actor's exception as bytes for the driver: the pickled exception (when it pickles),
    what the actor was doing, its type, message and traceback."""
    try:
        pickled = pickle.dumps(exc)
        pickle.loads(pickled)
    except Exception:
        pickled = b""
    return pickle.dumps({"doing": doing, "type": type(exc).__name__, "message": one_line(exc),
                         "traceback": "".join(traceback.format_exception(exc)),
                         "exception": pickled})


def _raise_actor_error(row: bytes) -> None:
    """Raise the error an actor returned (:func:`_error_row`): a user error as its own type
    (the CLI prints its line), else :class:`~mirror3d.utils.errors.RemoteFailed` naming it;
    either way with the actor's traceback in ``remote_traceback``."""
    info = pickle.loads(row)
    exc: BaseException | None = None
    if info["exception"]:
        try:
            exc = pickle.loads(info["exception"])
        except Exception:
            exc = None
    if exc is None or not is_user_error(exc):
        exc = RemoteFailed(f"lift: {info['doing']} failed: {info['type']}: {info['message']}",
                           info["traceback"])
    try:
        exc.remote_traceback = info["traceback"]  # type: ignore[attr-defined]
    except AttributeError:
        pass
    raise exc


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
    metas = []
    for row in ds.iter_rows():
        if row["error"]:
            _raise_actor_error(row["error"])
        metas.append(json.loads(row["summary"]))
    return metas


def run_lift(cfg: LiftConfig, use_ray: bool = True, run_dir: bool = True) -> LiftReport:
    """Lift ``cfg.root`` into shards under ``cfg.out_dir()`` (resuming), then write the summary,
    bad-image list and pictures into ``runs/lift/<name>`` (when ``run_dir``).

    Args:
        use_ray: lift in a Ray Data actor pool; False (or ``cfg.no_ray``) lifts in this process,
            one shard after another.
    Raises:
        mirror3d.utils.errors.UserError: a missing input, an unusable output location or a
            checkpoint that is not a CASL one (:func:`preflight_lift`, before Ray starts); an
            actor's user error as it was raised.
        ValueError: see :func:`mirror3d.lifting.run.lift_dataset`.
    """
    cfg, inputs = stage_lift_inputs(cfg)
    preflight_lift(cfg, run_dir)
    runner = None
    if use_ray and not cfg.no_ray:
        def runner(c: LiftConfig, jobs: Sequence[ShardJob]) -> list[dict]:
            return lift_with_ray(c, jobs, inputs)
    return lift_dataset(cfg, runner, run_dir)


def preflight_lift(cfg: LiftConfig, run_dir: bool = True) -> None:
    """The driver's checks before Ray starts (:mod:`mirror3d.utils.preflight`): ``root`` and
    ``mask_dir`` are folders, the ``casl`` reconstructor's ``checkpoint`` is a CASL checkpoint
    with its config (a re-id checkpoint is named as one), and ``out`` and the run directory's
    folder (``runs_root``/lift) can be written.

    Raises:
        mirror3d.utils.errors.UserError: one line naming the key.
    """
    check_input(cfg.root, "root", what="dataset")
    if cfg.mask_dir:
        check_input(cfg.mask_dir, "mask_dir", what="mask tree")
    if cfg.mode in MODES_NEEDING_MASK and cfg.reconstructor == "casl" and cfg.checkpoint:
        check_checkpoint(cfg.checkpoint, "casl", "checkpoint")
    check_output(cfg.out_location(), "out")
    if run_dir:
        check_output(storage.join(cfg.runs_root, "lift"), "runs_root")


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
