"""Shared test fixtures. Ray is started at most once per test session, on loopback."""

from __future__ import annotations

import mirror3d  # noqa: F401,I001  (first: sets the local Ray/OpenMP environment before torch loads)

import pytest
import torch

from mirror3d.platform.local_env import local_ray_init_kwargs

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole test session (cold start is ~6 s)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, **local_ray_init_kwargs())
    yield ray
    ray.shutdown()
