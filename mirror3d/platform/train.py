"""Ray Train glue shared by the CASL and OG-Net trainers: the engine's loops
(:mod:`mirror3d.engine`) run inside Ray Train workers through :func:`fit`.

Driver side: :func:`fit` (a V2 ``TorchTrainer`` with ``ScalingConfig``, ``RunConfig`` storage
under the run directory, ``CheckpointConfig`` and ``FailureConfig``) and :func:`worker_error`
(a worker's exception out of Ray's wrappers). Worker side: :func:`worker_device` (Ray Train's
assigned GPU, else CPU) and :func:`ray_report` (the engine's per-epoch report hook: metrics and
the checkpoint directory to ``ray.train.report``). When Ray Train restarts the worker group
after a failure, the workers resume from its last checkpoint (:func:`resume_after_failure`); the
run directory records which node ran each rank (:data:`WORKERS_FILE`).

DDP runs gloo on CPU and nccl on GPU (Ray's TorchConfig default for ``use_gpu``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from mirror3d.engine.progress import PROGRESS_FILE
from mirror3d.platform.cluster import ensure_ray, link_ray_logs, verbose
from mirror3d.utils.checkpoint import CHECKPOINT_FILE, resolve_resume
from mirror3d.utils import storage
from mirror3d.utils.config import config_to_dict, save_config, update_config
from mirror3d.utils.errors import RemoteFailed, one_line, unwrap_error
from mirror3d.utils.rundir import claim_run, default_run_name

log = logging.getLogger(__name__)

__all__ = ["ScalingSpec", "fit", "train_run", "stage_inputs", "use_run_location", "sync_run_dir",
           "worker_device", "ray_report", "resume_after_failure", "record_worker", "WORKERS_FILE",
           "TrainingFailed", "worker_error", "resolve_cpus_per_worker"]


@dataclass
class ScalingSpec:
    """How many Ray Train workers, and what each gets."""

    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 0.0  # 0 = auto (:func:`resolve_cpus_per_worker`)
    placement_strategy: str = "PACK"  # Ray placement group strategy: PACK, SPREAD, STRICT_*
    torch_threads: int = 0  # torch intra-op threads per worker; 0 = its CPUs


def resolve_cpus_per_worker(requested: float, num_workers: int) -> float:
    """CPUs per Ray Train worker. ``requested > 0`` is taken as given; ``0`` means as many as
    fit: the Ray cluster's CPUs shared among the workers, at most the largest node's CPUs, at
    least 1. (Ray sizes a worker's thread pools by its CPU share: one CPU = one torch thread,
    which on a 2-core machine leaves half of it idle.)"""
    if requested > 0:
        return float(requested)
    total = float(ray.cluster_resources().get("CPU", 1.0))
    per_node = [float(n.get("Resources", {}).get("CPU", 0.0)) for n in ray.nodes() if n.get("Alive")]
    largest = max(per_node) if per_node else total
    return float(max(1, int(min(total / max(1, num_workers), largest))))


def _with_threads(loop_config: dict) -> None:
    """Worker entry: torch intra-op threads = this worker's CPUs, the run's location, Ray
    Train's checkpoint when the group was restarted (:func:`resume_after_failure`), a record
    of where each rank runs (:func:`record_worker`), then the user's loop."""
    threads = int(loop_config.get("_torch_threads") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    use_run_location(loop_config)
    try:
        with resume_after_failure(loop_config) as loop_config:
            record_worker(loop_config)
            loop_config["_train_loop"](loop_config)
    finally:
        sync_run_dir()  # what the loop made (also after a failure: a resume starts from it)


# ------------------------------------------------------------------------------ driver side
def fit(
    train_loop: Callable[[dict], None],
    loop_config: dict,
    *,
    run_dir: str | os.PathLike,
    scaling: ScalingSpec,
    max_failures: int = 0,
    num_to_keep: int | None = 2,
    name: str = "ray",
    callbacks: Sequence[Any] = (),
    location: str | None = None,
):
    """Run ``train_loop(loop_config)`` on ``scaling.num_workers`` Ray Train workers.

    Ray's own storage (its checkpoints and result files) goes to ``<run_dir>/<name>``, or to
    ``<location>/<name>`` when the run lives at a storage URI (``location``, whose local stage is
    ``run_dir``: :mod:`mirror3d.utils.storage`); our ``checkpoint.pt`` files are written by the
    loop itself (see :func:`ray_report`). The console
    shows the loop's own progress lines; Ray Train's internal logs are kept at WARNING unless
    ``MIRROR3D_VERBOSE`` is set (``--debug``), and ``<run_dir>/ray_logs`` links to the Ray
    session's log folder. ``callbacks``: Ray Train callbacks of the run (``RunConfig(callbacks)``;
    inside a Tune trial, ``TuneReportCallback`` passes each report on to Tune). Returns the
    ``ray.train.Result``; raises the training error if the run failed.
    """
    ensure_ray()
    run_dir = pathlib.Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    link_ray_logs(run_dir)
    cpus = resolve_cpus_per_worker(scaling.cpus_per_worker, scaling.num_workers)
    log.info("Ray Train: %d worker(s) x %g CPU (%d torch thread(s) each)", scaling.num_workers,
             cpus, scaling.torch_threads or max(1, int(cpus)))
    trainer = TorchTrainer(
        _with_threads,
        train_loop_config={**loop_config, "_train_loop": train_loop,
                           "_torch_threads": scaling.torch_threads or max(1, int(cpus))},
        scaling_config=ScalingConfig(
            num_workers=scaling.num_workers, use_gpu=scaling.use_gpu,
            resources_per_worker={"CPU": cpus,
                                  **({"GPU": 1} if scaling.use_gpu else {})},
            placement_strategy=scaling.placement_strategy),
        run_config=RunConfig(
            name=name,
            storage_path=location if location and storage.is_uri(location) else str(run_dir),
            checkpoint_config=CheckpointConfig(num_to_keep=num_to_keep),
            failure_config=FailureConfig(max_failures=max_failures),
            logging_config=LoggingConfig(log_level="INFO" if verbose() else "WARNING"),
            callbacks=list(callbacks)),
    )
    try:
        with show_progress(run_dir / PROGRESS_FILE, enabled=not worker_output_on_console()):
            result = trainer.fit()
    except Exception as exc:
        raise worker_error(exc) from exc
    if getattr(result, "error", None) is not None:
        raise worker_error(result.error) from result.error
    return result


def worker_output_on_console() -> bool:
    """Whether the workers' own stdout reaches this console (Ray's ``log_to_driver``: the driver
    then runs Ray's log-printing thread)."""
    return getattr(ray._private.worker.global_worker, "logger_thread", None) is not None


@contextlib.contextmanager
def show_progress(path: pathlib.Path, enabled: bool, interval: float = 1.0) -> Iterator[None]:
    """While the block runs, print the lines appended to ``path`` (the loop's progress log) on
    this console: the driver's view of the rank-0 progress lines when worker output is off it."""
    if not enabled:
        yield
        return
    stop = threading.Event()
    offset = path.stat().st_size if path.exists() else 0

    def follow() -> None:
        nonlocal offset
        while True:
            done = stop.is_set()
            if path.exists():
                with open(path, encoding="utf-8") as fh:
                    fh.seek(offset)
                    chunk = fh.read()
                    offset = fh.tell()
                if chunk:
                    print(chunk, end="", flush=True)
            if done:
                return
            stop.wait(interval)

    thread = threading.Thread(target=follow, name="mirror3d-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def train_run(worker: Callable[[dict], None], cfg: Any, kind: str,
              callbacks: Sequence[Any] = (), inputs: dict[str, str] | None = None) -> pathlib.Path:
    """The driver side of a trainer, after its data was checked: the resume checkpoint validated
    (before any worker starts), the run directory ``<cfg.out_dir>/<cfg.name or timestamp>``
    created with ``config.yaml``, then :func:`fit` of ``worker`` on ``cfg.ray``'s scaling.
    ``cfg`` is a trainer config with ``resume``, ``out_dir``, ``name`` and a ``ray`` section
    (:class:`mirror3d.engine.scaling.RayConfig`); ``callbacks`` go to :func:`fit`; ``inputs``:
    ``{config key: URI}`` of :func:`stage_inputs`. ``out_dir`` and ``resume`` may be storage URIs
    (:mod:`mirror3d.utils.storage`): the run then lives at ``<out_dir>/<name>`` in the store,
    worked on in each node's stage. Returns the run directory (on this node).

    An existing run ``<out_dir>/<name>`` (:func:`mirror3d.utils.rundir.claim_run`) is continued
    in place only when ``resume`` points into it (its ``eval/`` of the older model removed),
    replaced only with ``cfg.overwrite`` (every old file removed first), and refused otherwise
    (:class:`~mirror3d.utils.rundir.RunExistsError`, before anything is written or Ray starts).
    """
    if cfg.resume and storage.is_uri(cfg.resume):
        storage.pull(cfg.resume)  # a run (or checkpoint) in the store: resume from its stage
        cfg = update_config(cfg, {"resume": str(storage.local_path(cfg.resume))})
    resume = resolve_resume(cfg.resume, kind)
    location = storage.join(cfg.out_dir, cfg.name or default_run_name())
    run_dir = storage.local_path(location)
    in_place = bool(resume) and _is_inside(resume, run_dir)
    continuing = claim_run(location, resume=in_place, overwrite=bool(getattr(cfg, "overwrite", False)),
                           resume_hint=f"--resume {storage.describe(location)}")
    if continuing:
        storage.remove(storage.join(location, "eval"))  # evaluated an older model
    storage.pull(location)  # an existing run in the store continues in its stage
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    storage.push(location)
    loop_config = {"config": config_to_dict(cfg), "run_dir": str(run_dir), "resume": resume,
                   "run_location": location, "inputs": dict(inputs or {})}
    fit(worker, loop_config, run_dir=run_dir, location=location,
        scaling=ScalingSpec(cfg.ray.num_workers, cfg.ray.use_gpu, cfg.ray.cpus_per_worker,
                            cfg.ray.placement_strategy, cfg.ray.torch_threads),
        max_failures=cfg.ray.max_failures, callbacks=callbacks)
    storage.pull(location)  # what rank 0 made on its node, for the driver's summary
    return run_dir


def _is_inside(path: str | os.PathLike, folder: pathlib.Path) -> bool:
    """True when ``path`` is ``folder`` or lies under it (both resolved)."""
    p, f = pathlib.Path(path).resolve(), folder.resolve()
    return p == f or f in p.parents


class TrainingFailed(RemoteFailed):
    """A Ray Train run failed for a reason that is not a user error (one line naming the rank
    and the error; the worker's traceback in ``remote_traceback``, which ``--debug`` prints)."""


def worker_error(exc: BaseException) -> BaseException:
    """The exception a worker raised, out of Ray Train's wrappers (``WorkerGroupError`` →
    per-rank failures → ``RayTaskError`` → cause): a user error (:mod:`mirror3d.utils.errors`:
    a ``UserError``, ``ValueError``, ``FileNotFoundError``, ``FloatingPointError`` — a NaN loss —
    or an environment ``OSError``) of the lowest rank that has one, as it was raised; else
    :class:`TrainingFailed` naming the lowest failed rank's error; ``exc`` itself when it is no
    worker failure."""
    found = unwrap_error(exc)
    if found is not exc:
        return found
    failures = getattr(exc, "worker_failures", None)
    if not failures:
        return exc
    rank = sorted(failures)[0]
    cause, remote = failures[rank], ""
    while getattr(cause, "cause", None) is not None and cause.cause is not cause:
        # a RayTaskError: its message is the worker's traceback
        remote = remote or str(getattr(cause, "traceback_str", "") or "") or str(cause)
        cause = cause.cause
    return TrainingFailed(f"training failed on worker {rank}: {type(cause).__name__}: "
                          f"{one_line(cause, 500)}", remote_traceback=remote)


# ------------------------------------------------------------------------------ worker side
def worker_device() -> torch.device:
    """The worker's device: Ray Train's assigned GPU when there is one, else CPU."""
    if torch.cuda.is_available():
        try:
            return ray.train.torch.get_device()
        except Exception:
            return torch.device("cuda", 0)
    return torch.device("cpu")


def ray_report(metrics: dict[str, Any], checkpoint_file: pathlib.Path | None) -> None:
    """The engine's report hook inside Ray Train: every rank calls it once per epoch (it is a
    barrier); rank 0 passes the checkpoint file it has just written, whose directory becomes the
    Ray checkpoint."""
    ckpt = (ray.train.Checkpoint.from_directory(str(pathlib.Path(checkpoint_file).parent))
            if checkpoint_file else None)
    if checkpoint_file:
        sync_run_dir()  # rank 0: the run directory to its storage location with each checkpoint
    ray.train.report({k: v for k, v in metrics.items() if _is_scalar(v)}, checkpoint=ckpt)


def stage_inputs(cfg: Any, keys: Sequence[str]) -> tuple[Any, dict[str, str]]:
    """Driver side: the config values at the dotted ``keys`` that are storage URIs (a dataset, the
    shards of a lifting job) pulled into this node's stage, and ``cfg`` with their local paths;
    local values made absolute (workers run in their own directories). Returns the new config and
    ``{key: URI}``, which :func:`train_run` hands to the workers so that each node pulls them too."""
    uris: dict[str, str] = {}
    updates: dict[str, str] = {}
    for key in keys:
        value = str(_get_dotted(config_to_dict(cfg), key) or "")
        if not value:
            continue
        if storage.is_uri(value):
            storage.pull(value)
            uris[key] = value
        updates[key] = str(storage.local_path(value))
    return (update_config(cfg, updates) if updates else cfg), uris


def _get_dotted(tree: dict, key: str) -> Any:
    for part in key.split("."):
        tree = tree[part]
    return tree


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    *head, last = key.split(".")
    for part in head:
        tree = tree[part]
    tree[last] = value


#: The storage location of the run this worker process trains (set by the worker entry).
_RUN_LOCATION: dict[str, str] = {}


def use_run_location(loop_config: dict) -> None:
    """Worker side, before the loop: the run's storage location (``loop_config["run_location"]``,
    set by :func:`train_run`) becomes this worker's; on a URI the run directory is the node's
    stage of it (``loop_config["run_dir"]`` is rewritten), and rank 0 first pulls what the store
    holds (a worker restarted on another node continues the run's metrics and checkpoints)."""
    for key, uri in (loop_config.get("inputs") or {}).items():
        storage.pull(uri)  # this node's copy of a URI input (idempotent)
        _set_dotted(loop_config["config"], key, str(storage.local_path(uri)))
    location = loop_config.get("run_location")
    if not location:
        return
    _RUN_LOCATION["run"] = location
    if storage.is_uri(location):
        loop_config["run_dir"] = str(storage.local_path(location))
        if ray.train.get_context().get_world_rank() == 0:
            storage.pull(location)


def sync_run_dir() -> None:
    """Worker side: rank 0 pushes the run directory's new files to the run's storage location
    (nothing to do for a local location)."""
    location = _RUN_LOCATION.get("run")
    if location and storage.is_uri(location) and ray.train.get_context().get_world_rank() == 0:
        storage.push(location)


#: The run directory's record of the Ray Train workers: one JSON line per worker and start of
#: the worker group (rank, world size, Ray node id, host, the checkpoint it started from).
WORKERS_FILE = "ray_workers.jsonl"


@contextlib.contextmanager
def resume_after_failure(loop_config: dict) -> Iterator[dict]:
    """Worker side: ``loop_config`` resuming from Ray Train's checkpoint of this run, if any.

    When Ray Train restarts the worker group after a worker or its node failed
    (``FailureConfig(max_failures)``), or the run is started again into the same run directory,
    ``ray.train.get_checkpoint()`` is the last checkpoint rank 0 reported (:func:`ray_report`:
    a directory holding our ``checkpoint.pt``). The loop must continue from it, not from the
    start or from the run's original ``resume``: the block gets ``loop_config`` with ``resume``
    set to that file (and ``resume_epoch`` to its epoch), which stays readable until the block
    ends (Ray's own storage folder when it is local, else a temporary download:
    ``Checkpoint.as_directory``). Without a checkpoint the block gets ``loop_config`` as it is. Logs one line (and rank 0 writes it to the progress
    log that the driver shows)."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        yield loop_config
        return
    with checkpoint.as_directory() as folder:
        resume = pathlib.Path(folder) / CHECKPOINT_FILE
        if not resume.is_file():
            raise FileNotFoundError(f"Ray Train checkpoint {checkpoint.path} has no "
                                    f"{CHECKPOINT_FILE}: cannot resume the restarted workers")
        epoch = _checkpoint_epoch(resume)
        line = (f"[ray-train] worker group (re)started with a checkpoint of this run: resuming "
                f"after epoch {epoch} from {checkpoint.path}")
        log.warning(line)
        if ray.train.get_context().get_world_rank() == 0:
            run_dir = pathlib.Path(loop_config["run_dir"])
            run_dir.mkdir(parents=True, exist_ok=True)
            with open(run_dir / PROGRESS_FILE, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
        yield {**loop_config, "resume": str(resume), "resume_epoch": epoch}


def _checkpoint_epoch(path: pathlib.Path) -> int | None:
    """The ``epoch`` a checkpoint file holds (None when unreadable; the loop's own load then
    raises the real error). Memory-mapped: nothing but the one value is read."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"])
    except Exception:
        return None


def record_worker(loop_config: dict) -> None:
    """Worker side, every rank (a collective): rank 0 appends one :data:`WORKERS_FILE` line per
    rank — its rank, the world size, the Ray node id and host it runs on, the checkpoint it
    starts from (``resume``) and, after a restart by Ray Train, that checkpoint's epoch
    (``resume_epoch``; else None) and its torch intra-op threads — so a run directory says where its workers trained (and
    that a restarted group moved to other nodes). Gathered to rank 0 because only rank 0's run directory is kept
    (other nodes may not share its file system)."""
    ctx = ray.train.get_context()
    record = {"rank": ctx.get_world_rank(), "world_size": ctx.get_world_size(),
              "node_id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(),
              "pid": os.getpid(), "torch_threads": torch.get_num_threads(),
              "resume": loop_config.get("resume") or "",
              "resume_epoch": loop_config.get("resume_epoch"), "time": round(time.time(), 3)}
    records = [record]
    if ctx.get_world_size() > 1 and torch.distributed.is_initialized():
        gathered: list | None = [None] * ctx.get_world_size() if record["rank"] == 0 else None
        torch.distributed.gather_object(record, gathered, dst=0)
        records = list(gathered or [])
    if record["rank"] != 0:
        return
    run_dir = pathlib.Path(loop_config["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / WORKERS_FILE, "a", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in sorted(records, key=lambda r: r["rank"]))


def _is_scalar(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool)) or (isinstance(v, torch.Tensor) and v.numel() == 1)
