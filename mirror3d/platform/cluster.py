"""Connecting to Ray: the cluster of ``RAY_ADDRESS`` (``ray job submit`` sets it), else a new
local single-node instance on 127.0.0.1 (see :mod:`mirror3d.utils.env` for the variables)."""

from __future__ import annotations

import os
import pathlib

import ray

from mirror3d.utils.env import apply_local_env

__all__ = ["ensure_ray", "local_ray_init_kwargs", "verbose", "ray_logs_dir", "link_ray_logs"]

#: Set (to anything but "" or "0") for Ray's own INFO logs on the console; ``--debug`` sets it.
VERBOSE_ENV = "MIRROR3D_VERBOSE"


def verbose() -> bool:
    """Whether Ray's own log lines should reach the console (``MIRROR3D_VERBOSE``)."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def local_ray_init_kwargs(num_cpus: int | None = None) -> dict:
    """Keyword arguments for ``ray.init`` on one machine: a new local instance (``address=
    "local"``, even when a ``ray start`` cluster is running), loopback only. The dashboard runs
    (on 127.0.0.1): Ray Train's placement-group cleaner polls the state API it serves and warns
    about once a second without it."""
    kw: dict = {
        "address": "local",
        "include_dashboard": True,
        "dashboard_host": "127.0.0.1",
        "_node_ip_address": "127.0.0.1",
        # workers' stdout/stderr stay in the session logs (<run dir>/ray_logs) unless verbose;
        # the trainers' progress lines reach the console through platform.train.fit instead
        "log_to_driver": verbose(),
        "configure_logging": True,
        "logging_level": "INFO" if verbose() else "WARNING",
    }
    if num_cpus is not None:
        kw["num_cpus"] = num_cpus
    return kw


def ensure_ray(num_cpus: int | None = None) -> None:
    """Connect to Ray: the cluster in ``RAY_ADDRESS`` (set by ``ray job submit``), else a local
    single-node instance on 127.0.0.1."""
    if ray.is_initialized():
        return
    apply_local_env()
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], logging_level="WARNING")
    else:
        ray.init(**local_ray_init_kwargs(num_cpus))


def ray_logs_dir() -> pathlib.Path | None:
    """The log folder of the Ray session this process is connected to (None when unknown)."""
    try:
        return pathlib.Path(ray._private.worker.global_worker.node.get_logs_dir_path())
    except Exception:  # a client connection or an older Ray: no local log folder to point at
        return None


def link_ray_logs(run_dir: str | os.PathLike) -> None:
    """``<run_dir>/ray_logs`` → the Ray session's log folder (workers' stdout/stderr, Ray's own
    logs), so a run directory shows where to look when the console's one-line error is not enough."""
    logs = ray_logs_dir()
    link = pathlib.Path(run_dir) / "ray_logs"
    if logs is None or not logs.is_dir():
        return
    if link.is_symlink() or link.exists():
        if link.is_symlink():
            link.unlink()
        else:
            return
    try:
        link.symlink_to(logs, target_is_directory=True)
    except OSError:
        (pathlib.Path(run_dir) / "ray_logs.txt").write_text(f"{logs}\n")
