"""Injected faults for the fault tests (tests/faults/): a process killed (SIGKILL, as the kernel's
OOM killer or a lost machine would) at a chosen point, once per run, and writers that hit a full
disk.

Ray Train workers and Ray Data actors run in other processes, so what they must do is shipped to
them: this module is pickled *by value* (:func:`ship_to_ray`), and each fault is armed once per
test by a marker file (the first process to create it is the one that dies; the processes Ray
starts in its place find it and run normally).
"""

from __future__ import annotations

import errno
import importlib
import io
import json
import os
import pathlib
import signal
import sys
import time
from collections.abc import Callable

__all__ = ["ship_to_ray", "claim_once", "kill_this_process", "wait_for_ray_checkpoint",
           "killed_once_at_call", "killing_lift_actor", "small_disk"]


def ship_to_ray() -> None:
    """Make Ray pickle this module's functions and classes by value (the workers cannot import
    tests/ modules)."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def claim_once(marker: str | os.PathLike, note: dict) -> bool:
    """True for exactly one caller across processes: the one that creates ``marker`` (O_EXCL);
    it writes ``note`` (JSON) into it."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        json.dump({**note, "pid": os.getpid()}, fh)
    return True


def kill_this_process() -> None:
    """SIGKILL this process: no exception, no ``finally``, no flush — as a machine failure."""
    os.kill(os.getpid(), signal.SIGKILL)


def wait_for_ray_checkpoint(run_dir: pathlib.Path, deadline_s: float = 300.0) -> bool:
    """Wait until Ray Train's controller has registered a checkpoint of the run (its checkpoint
    manager's snapshot in ``<run_dir>/ray`` names a latest one): from then on a restarted worker
    group resumes from a checkpoint. A condition, not a duration: returns as soon as it holds
    (False if it never did within ``deadline_s``: the test's assertions then fail)."""
    snapshot = run_dir / "ray" / "checkpoint_manager_snapshot.json"
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            if json.loads(snapshot.read_text()).get("latest_checkpoint_result") is not None:
                return True
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    return False


def killed_once_at_call(worker: Callable[[dict], None], module: str, function: str, call: int,
                        marker: str) -> Callable[[dict], None]:
    """A Ray Train worker entry that runs ``worker``, but whose first process to get there is
    killed in its ``call``-th call of ``module.function`` (a function the training loop looks up
    in its module at every step, e.g. ``mirror3d.engine.casl_train.casl_step``): before the
    call's work, once Ray holds a checkpoint of the run, so the kill lands mid-epoch with
    epochs to redo. ``marker`` (a file) records the kill; later processes run ``worker`` as
    it is."""

    def entry(loop_config: dict) -> None:
        if not pathlib.Path(marker).exists():
            mod = importlib.import_module(module)
            real = getattr(mod, function)
            calls = [0]
            run_dir = pathlib.Path(loop_config["run_dir"])

            def counted(*args, **kwargs):
                calls[0] += 1
                if calls[0] == call:
                    registered = wait_for_ray_checkpoint(run_dir)
                    if claim_once(marker, {"call": call, "ray_checkpoint": registered}):
                        kill_this_process()
                return real(*args, **kwargs)

            setattr(mod, function, counted)
        worker(loop_config)

    return entry


def killing_lift_actor(marker: str) -> type:
    """A :class:`mirror3d.platform.lifting.LiftActor` subclass whose first process to write a
    shard is killed right after the shard's parquet file is in place and before its meta (the
    "done" record) is written: the worst point mid-shard, a shard on disk that the job does not
    count as done. ``marker`` (a file) records the kill; restarted actors lift normally."""
    from mirror3d.platform.lifting import LiftActor

    class KillingLiftActor(LiftActor):
        def __init__(self, cfg, inputs=None) -> None:
            super().__init__(cfg, inputs)
            if pathlib.Path(marker).exists():
                return
            import mirror3d.lifting.lifter as lifter

            real = lifter.write_shard

            def write_then_die(path, *args, **kwargs):
                out = real(path, *args, **kwargs)
                if claim_once(marker, {"shard": pathlib.Path(path).name}):
                    kill_this_process()
                return out

            lifter.write_shard = write_then_die

    return KillingLiftActor


class _SmallDiskFile(io.FileIO):
    """A file on a disk with ``room`` bytes left (shared by all files of one :func:`small_disk`)."""

    def __init__(self, path, mode: str, left: list[int]) -> None:
        super().__init__(path, mode)
        self._left = left

    def write(self, data) -> int:
        data = bytes(data)
        if self._left[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = super().write(data[: self._left[0]])
        self._left[0] -= n
        return n  # a short write: the buffered writer above writes the rest, and fails


def small_disk(room: int) -> Callable:
    """An ``open`` for binary writing onto a disk with ``room`` bytes free: a write beyond it
    raises ``OSError(ENOSPC)``, as a full file system does (what fitted is on disk)."""
    left = [room]

    def open_(path, mode="r", *args, **kwargs):
        if "b" not in mode or not any(c in mode for c in "wax+"):
            return open(path, mode, *args, **kwargs)
        return io.BufferedWriter(_SmallDiskFile(path, mode.replace("b", ""), left))

    return open_
