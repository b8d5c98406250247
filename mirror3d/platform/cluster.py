"""Connecting to Ray: the cluster of ``RAY_ADDRESS`` (``ray job submit`` sets it), else a new
local single-node instance on 127.0.0.1 (see :mod:`mirror3d.utils.env` for the variables)."""

from __future__ import annotations

import os

import ray

from mirror3d.utils.env import apply_local_env

__all__ = ["ensure_ray", "local_ray_init_kwargs"]


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
        "log_to_driver": True,
        "configure_logging": True,
        "logging_level": "WARNING",
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
