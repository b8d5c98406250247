"""SynthPeople generation with Ray: the shards of :mod:`mirror3d.data.synth.writer` as Ray tasks.

Each task runs :func:`~mirror3d.data.synth.writer.write_shard` on one shard with one torch
thread; at most ``cfg.workers`` tasks run at a time, spread over the cluster's nodes (Ray's
``SPREAD`` scheduling strategy; on one machine it changes nothing). The files do not depend on how
the shards were run (a person depends only on the seed and its recipe id), so this writes exactly
what the plain loop writes (``cfg.no_ray``, or :func:`mirror3d.data.synth.writer.generate_dataset`).
Which node wrote which shard is kept in ``.synth/ray_nodes.json`` (:data:`NODES_FILE`; the state
folder, which is not part of the dataset's files).
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable
from typing import Any

import ray

from mirror3d.data.synth import writer
from mirror3d.data.synth.config import SynthConfig
from mirror3d.data.synth.writer import Unit, write_shard, write_shards_in_process
from mirror3d.platform.cluster import local_ray_init_kwargs
from mirror3d.utils.config import config_to_dict
from mirror3d.utils.errors import unwrap_error
from mirror3d.utils.files import atomic_write
from mirror3d.utils.preflight import check_output

__all__ = ["NODES_FILE", "generate_dataset", "write_shards_with_ray"]

#: shard number → Ray node id of the task that wrote it (relative to the dataset root)
NODES_FILE = ".synth/ray_nodes.json"


def _write_shard_task(cfg: dict, k: int, units: list[Unit], root: str, threads: int) -> dict:
    """The Ray task: :func:`~mirror3d.data.synth.writer.write_shard`, plus the node it ran on."""
    return {**write_shard(cfg, k, units, root, threads),
            "node": ray.get_runtime_context().get_node_id()}


def write_shards_with_ray(cfg: SynthConfig, root: pathlib.Path, shards: list[list[Unit]],
                          todo: list[int], advance: Callable[[int], Any]) -> None:
    """Write the shards numbered ``todo`` as Ray tasks, ``cfg.workers`` at a time (a
    :data:`~mirror3d.data.synth.writer.ShardWriter`). Starts a local Ray instance with
    ``cfg.workers`` CPUs when Ray is not running yet, and shuts it down afterwards."""
    started = False
    if not ray.is_initialized():
        ray.init(**local_ray_init_kwargs(cfg.workers))
        started = True
    try:
        task = ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(_write_shard_task)
        cfg_dict = config_to_dict(cfg)
        nodes_file = pathlib.Path(root) / NODES_FILE
        nodes = json.loads(nodes_file.read_text()) if nodes_file.is_file() else {}
        queue, pending = list(todo), []
        while queue or pending:
            while queue and len(pending) < cfg.workers:
                k = queue.pop(0)
                pending.append(task.remote(cfg_dict, k, shards[k], str(root), 1))
            done, pending = ray.wait(pending, num_returns=1)
            try:
                results = ray.get(done)
            except Exception as exc:  # a task's user error as it was raised, not Ray's wrapper
                error = unwrap_error(exc)
                if error is exc:
                    raise
                raise error from None
            for result in results:
                nodes[str(result["shard"])] = result["node"]
            atomic_write(nodes_file, json.dumps(nodes, indent=1, sort_keys=True))
            advance(len(done))
    finally:
        if started:
            ray.shutdown()


def generate_dataset(cfg: SynthConfig) -> dict[str, Any]:
    """Generate (or resume) the dataset of ``cfg`` into ``cfg.out``: with Ray tasks, or in a
    plain loop in this process when ``cfg.no_ray``. Returns the summary of
    :func:`mirror3d.data.synth.writer.generate_dataset`.

    Raises:
        mirror3d.utils.errors.OutputPathError: ``out`` is a file, under a file or not writable.
        mirror3d.utils.errors.UserError: a shard task's user error, as it was raised."""
    check_output(cfg.out, "out")  # before Ray or any file: not a file, not under one, writable
    return writer.generate_dataset(
        cfg, write_shards_in_process if cfg.no_ray else write_shards_with_ray)
