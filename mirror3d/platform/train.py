"""Ray Train glue shared by the CASL and OG-Net trainers.

Driver side: :func:`ensure_ray` (local loopback instance, or the cluster of ``RAY_ADDRESS`` /
``ray job submit``) and :func:`fit` (a V2 ``TorchTrainer`` with ``ScalingConfig``, ``RunConfig``
storage under the run directory, ``CheckpointConfig`` and ``FailureConfig``).

Worker side: :func:`world` (rank / world size, also outside Ray), :func:`device`,
:func:`save_checkpoint` / :func:`load_checkpoint` (one ``.pt`` file, loaded with
``weights_only=True`` and checked for our format tag), :func:`report` (metrics every epoch, a
checkpoint from rank 0 every N epochs), :func:`all_reduce_sum`.

DDP runs gloo on CPU and nccl on GPU (Ray's TorchConfig default for ``use_gpu``).
"""

from __future__ import annotations

import logging
import os
import pathlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

__all__ = ["ScalingSpec", "ensure_ray", "fit", "world", "device", "in_ray_train",
           "save_checkpoint", "load_checkpoint", "report", "all_reduce_sum", "CheckpointError",
           "latest_checkpoint", "resolve_resume", "reestimate_bn", "TrainingClock"]

CHECKPOINT_FILE = "checkpoint.pt"


class CheckpointError(ValueError):
    """A checkpoint that is not ours, of the wrong kind, or unreadable."""


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
    import ray

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
def ensure_ray(num_cpus: int | None = None) -> None:
    """Connect to Ray: the cluster in ``RAY_ADDRESS`` (set by ``ray job submit``), else a local
    single-node instance on 127.0.0.1."""
    import ray

    from mirror3d.platform.local_env import apply_local_env, local_ray_init_kwargs

    if ray.is_initialized():
        return
    apply_local_env()
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], logging_level="WARNING")
    else:
        ray.init(**local_ray_init_kwargs(num_cpus))


def fit(
    train_loop: Callable[[dict], None],
    loop_config: dict,
    *,
    run_dir: str | os.PathLike,
    scaling: ScalingSpec,
    max_failures: int = 0,
    num_to_keep: int | None = 2,
    name: str = "ray",
):
    """Run ``train_loop(loop_config)`` on ``scaling.num_workers`` Ray Train workers.

    Ray's own storage (its checkpoints and result files) goes to ``<run_dir>/<name>``; our
    ``checkpoint.pt`` files are written by the loop itself (see :func:`report`). Returns the
    ``ray.train.Result``; raises the training error if the run failed.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ensure_ray()
    run_dir = pathlib.Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
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
            failure_config=FailureConfig(max_failures=max_failures)),
    )
    try:
        result = trainer.fit()
    except Exception as exc:
        raise worker_error(exc) from exc
    if getattr(result, "error", None) is not None:
        raise worker_error(result.error) from result.error
    return result


def non_finite_loss(what: str, epoch: int, step: int, run_dir, resume: str | None = None
                    ) -> FloatingPointError:
    """The error that stops a run on a NaN/inf loss: where, and the last good checkpoint (the
    newest in ``run_dir``, else the one the run resumed from) with how to resume."""
    good = latest_checkpoint(run_dir) or resume or None
    return FloatingPointError(
        f"non-finite {what} loss at epoch {epoch}, step {step}: training stopped; "
        f"last good checkpoint: {good or 'none yet'}"
        + (f" (resume with --resume {good} after lowering optim.lr or fixing the data)"
           if good else ""))


class TrainingFailed(RuntimeError):
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
def in_ray_train() -> bool:
    """True inside a Ray Train worker."""
    try:
        import ray.train

        ray.train.get_context().get_world_size()
        return True
    except Exception:
        return False


def world() -> tuple[int, int]:
    """(rank, world_size); (0, 1) outside Ray Train / torch.distributed."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def device() -> torch.device:
    """The worker's device: Ray Train's assigned GPU when there is one, else CPU."""
    if torch.cuda.is_available():
        try:
            import ray.train.torch

            return ray.train.torch.get_device()
        except Exception:
            return torch.device("cuda", 0)
    return torch.device("cpu")


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all workers (identity with one worker)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_world_size() > 1:
        t = t.clone()
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return t


def save_checkpoint(path: str | os.PathLike, kind: str, state: dict[str, Any]) -> pathlib.Path:
    """Write ``state`` (tensors, state dicts and plain Python values only) to ``path`` atomically,
    tagged ``format = "mirror3d/<kind>"``."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": f"mirror3d/{kind}", "version": 1, **state}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".ckpt-", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: str | os.PathLike, kind: str, map_location="cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``.

    ``path`` may be the file, or a directory holding ``checkpoint.pt`` (a Ray checkpoint dir), or a
    run directory (its newest ``checkpoints/epoch_*/checkpoint.pt``).

    Raises:
        FileNotFoundError: nothing at ``path``.
        CheckpointError: not a mirror3d checkpoint of this kind, or truncated/corrupt.
    """
    p = pathlib.Path(path)
    if p.is_dir():
        direct = p / CHECKPOINT_FILE
        p = direct if direct.exists() else latest_checkpoint(p)
        if p is None:
            raise FileNotFoundError(f"no {CHECKPOINT_FILE} under {path}")
    if not p.exists():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {p}: cannot be read as a mirror3d checkpoint "
                              f"(truncated, corrupt or foreign file: {type(exc).__name__})") from None
    want = f"mirror3d/{kind}"
    got = state.get("format") if isinstance(state, dict) else None
    if got != want:
        raise CheckpointError(f"checkpoint {p}: expected format {want!r}, got {got!r}")
    return state


def latest_checkpoint(run_dir: str | os.PathLike) -> pathlib.Path | None:
    """The newest ``checkpoints/epoch_XXXX/checkpoint.pt`` under a run directory, or None."""
    cands = sorted(pathlib.Path(run_dir).glob(f"checkpoints/epoch_*/{CHECKPOINT_FILE}"))
    return cands[-1] if cands else None


def report(metrics: dict[str, Any], checkpoint_state: Callable[[], dict] | None, kind: str,
           run_dir: str | os.PathLike | None, epoch: int) -> pathlib.Path | None:
    """Report one epoch.

    Rank 0 writes ``<run_dir>/checkpoints/epoch_XXXX/checkpoint.pt`` when ``checkpoint_state`` is
    given (a callable, so other ranks do not build it), then every rank calls ``ray.train.report``
    (a barrier) with the same directory as the Ray checkpoint. Outside Ray Train only the file is
    written. Returns the checkpoint file (rank 0) or None.
    """
    rank, _ = world()
    ckpt_file = None
    if checkpoint_state is not None and rank == 0 and run_dir is not None:
        ckpt_file = save_checkpoint(
            pathlib.Path(run_dir) / "checkpoints" / f"epoch_{epoch:04d}" / CHECKPOINT_FILE,
            kind, checkpoint_state())
    if in_ray_train():
        import ray.train

        ckpt = ray.train.Checkpoint.from_directory(str(ckpt_file.parent)) if ckpt_file else None
        ray.train.report({k: v for k, v in metrics.items() if _is_scalar(v)}, checkpoint=ckpt)
    return ckpt_file


def _is_scalar(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool)) or (isinstance(v, torch.Tensor) and v.numel() == 1)


def resolve_resume(resume: str, kind: str) -> str:
    """The checkpoint file to resume from (a file, a Ray checkpoint dir, or a run dir's newest
    ``checkpoints/epoch_*``), validated before any worker starts. "" stays ""."""
    if not resume:
        return ""
    p = pathlib.Path(resume)
    if p.is_dir() and not (p / CHECKPOINT_FILE).exists():
        ck = latest_checkpoint(p)
        if ck is None:
            raise FileNotFoundError(f"resume: no checkpoint under {p}")
        p = ck
    load_checkpoint(p, kind)
    return str(p.resolve())


@torch.no_grad()
def reestimate_bn(model: torch.nn.Module, loader, forward: Callable[[Any], Any],
                  max_batches: int = 50) -> None:
    """Recompute BatchNorm running statistics as a cumulative average over up to
    ``max_batches`` batches (for weight-averaged models). ``forward(batch)`` runs the model."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = {m: m.momentum for m in bns}
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if i >= max_batches:
                break
            forward(batch)
    for m, mom in saved.items():
        m.momentum = mom


class TrainingClock:
    """Training progress in [0, 1]: the epoch fraction, or the wall-time fraction of a budget
    when that is further along (so schedules finish inside ``max_minutes``)."""

    def __init__(self, epochs: int, max_minutes: float = 0.0) -> None:
        import time

        self.epochs = epochs
        self.budget = max_minutes * 60.0
        self.start = time.time()

    def elapsed(self) -> float:
        import time

        return time.time() - self.start

    def progress(self, epoch: float) -> float:
        p = epoch / self.epochs
        if self.budget > 0:
            p = max(p, self.elapsed() / self.budget)
        return min(p, 1.0)

    def out_of_time(self) -> bool:
        return self.budget > 0 and self.elapsed() >= self.budget

    def out_of_time_all(self, device=None) -> bool:
        """:meth:`out_of_time` agreed by all workers (any worker out of time stops all), so a
        loop can stop between steps without leaving a DDP peer waiting in an all-reduce."""
        stop = self.out_of_time()
        if self.budget > 0 and torch.distributed.is_available() \
                and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            stop = bool(all_reduce_sum(torch.tensor([float(stop)], device=device)).item() > 0)
        return stop

    def cosine(self, epoch: float, floor: float) -> float:
        """Cosine factor from 1 down to ``floor`` over the progress."""
        import math

        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * self.progress(epoch)))
