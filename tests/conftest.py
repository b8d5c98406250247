"""Shared test fixtures. Ray is started at most once per test session, on loopback."""

from __future__ import annotations

from mirror3d.utils.env import apply_local_env

apply_local_env()  # first: the local Ray/OpenMP environment, before torch or Ray load


import pytest
import torch


torch.set_num_threads(2)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole test session (cold start is ~6 s)."""
    import ray

    from mirror3d.platform.cluster import local_ray_init_kwargs

    if not ray.is_initialized():
        ray.init(num_cpus=2, **local_ray_init_kwargs())
    yield ray
    ray.shutdown()
