"""Ray Train glue shared by the CASL and OG-Net trainers: the engine's loops
(:mod:`mirror3d.engine`) run inside Ray Train workers through :func:`fit`.

Driver side: :func:`fit` (a V2 ``TorchTrainer`` with ``ScalingConfig``, ``RunConfig`` storage
under the run directory, ``CheckpointConfig`` and ``FailureConfig``) and :func:`worker_error`
(a worker's exception out of Ray's wrappers). Worker side: :func:`worker_device` (Ray Train's
assigned GPU, else CPU) and :func:`ray_report` (the engine's per-epoch report hook: metrics and
the checkpoint directory to ``ray.train.report``).

DDP runs gloo on CPU and nccl on GPU (Ray's TorchConfig default for ``use_gpu``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import threading
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
from mirror3d.utils.checkpoint import resolve_resume
from mirror3d.utils.config import config_to_dict, save_config
from mirror3d.utils.errors import JobFailed
from mirror3d.utils.rundir import default_run_name

log = logging.getLogger(__name__)

__all__ = ["ScalingSpec", "fit", "train_run", "worker_device", "ray_report",
           "TrainingFailed", "worker_error", "resolve_cpus_per_worker"]


@dataclass
class ScalingSpec:
    """How many Ray Train workers, and what each gets."""

    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 0.0  # 0 = auto (:func:`resolve_cpus_per_worker`)


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
    """Worker entry: torch intra-op threads = this worker's CPUs, then the user's loop."""
    threads = int(loop_config.get("_torch_threads") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    loop_config["_train_loop"](loop_config)


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
):
    """Run ``train_loop(loop_config)`` on ``scaling.num_workers`` Ray Train workers.

    Ray's own storage (its checkpoints and result files) goes to ``<run_dir>/<name>``; our
    ``checkpoint.pt`` files are written by the loop itself (see :func:`ray_report`). The console
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
    log.info("Ray Train: %d worker(s) x %g CPU", scaling.num_workers, cpus)
    trainer = TorchTrainer(
        _with_threads,
        train_loop_config={**loop_config, "_train_loop": train_loop,
                           "_torch_threads": max(1, int(cpus))},
        scaling_config=ScalingConfig(
            num_workers=scaling.num_workers, use_gpu=scaling.use_gpu,
            resources_per_worker={"CPU": cpus,
                                  **({"GPU": 1} if scaling.use_gpu else {})}),
        run_config=RunConfig(
            name=name, storage_path=str(run_dir),
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
              callbacks: Sequence[Any] = ()) -> pathlib.Path:
    """The driver side of a trainer, after its data was checked: the resume checkpoint validated
    (before any worker starts), the run directory ``<cfg.out_dir>/<cfg.name or timestamp>``
    created with ``config.yaml``, then :func:`fit` of ``worker`` on ``cfg.ray``'s scaling.
    ``cfg`` is a trainer config with ``resume``, ``out_dir``, ``name`` and a ``ray`` section
    (:class:`mirror3d.engine.scaling.RayConfig`); ``callbacks`` go to :func:`fit`. Returns the
    run directory."""
    resume = resolve_resume(cfg.resume, kind)
    run_dir = (pathlib.Path(cfg.out_dir) / (cfg.name or default_run_name())).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    loop_config = {"config": config_to_dict(cfg), "run_dir": str(run_dir), "resume": resume}
    fit(worker, loop_config, run_dir=run_dir,
        scaling=ScalingSpec(cfg.ray.num_workers, cfg.ray.use_gpu, cfg.ray.cpus_per_worker),
        max_failures=cfg.ray.max_failures, callbacks=callbacks)
    return run_dir


class TrainingFailed(JobFailed):
    """A Ray Train run failed for a reason other than the ones re-raised by type."""


#: Worker exceptions re-raised with their own type (the CLI turns them into one error line).
_PASS_THROUGH = (FloatingPointError, ValueError, FileNotFoundError, KeyError, TypeError)


def worker_error(exc: BaseException) -> BaseException:
    """The exception a worker raised, out of Ray Train's wrappers (``WorkerGroupError`` →
    per-rank failures → ``RayTaskError`` → cause): the same type for the common errors (a NaN
    loss is a ``FloatingPointError``), else :class:`TrainingFailed` naming the cause."""
    failures = getattr(exc, "worker_failures", None)
    if failures:
        rank = sorted(failures)[0]
        cause = failures[rank]
        while getattr(cause, "cause", None) is not None and cause.cause is not cause:
            cause = cause.cause
        if isinstance(cause, _PASS_THROUGH):
            return type(cause)(*cause.args) if cause.args else cause
        return TrainingFailed(f"training failed on worker {rank}: {type(cause).__name__}: "
                              f"{' '.join(str(cause).split())[:500]}")
    return exc


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
    ray.train.report({k: v for k, v in metrics.items() if _is_scalar(v)}, checkpoint=ckpt)


def _is_scalar(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool)) or (isinstance(v, torch.Tensor) and v.numel() == 1)
