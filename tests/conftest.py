"""Shared test fixtures. Ray is started at most once per test session, on loopback."""

from __future__ import annotations

from mirror3d.utils.env import apply_local_env

apply_local_env()  # first: the local Ray/OpenMP environment, before torch or Ray load


import pytest
import torch


torch.set_num_threads(2)


@pytest.fixture(scope="session", autouse=True)
def mlflow_store(tmp_path_factory):
    """Every training run of the session tracks into one temporary MLflow file store (the
    trainers' default ``tracking.uri`` '' reads $MLFLOW_TRACKING_URI), never into runs/mlflow.
    Set before any Ray instance starts, so Ray workers inherit it too."""
    store = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", store.as_uri())
        mp.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        yield store


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole test session (cold start is ~6 s)."""
    import ray

    from mirror3d.platform.cluster import local_ray_init_kwargs

    if not ray.is_initialized():
        ray.init(num_cpus=2, **local_ray_init_kwargs())
    yield ray
    ray.shutdown()
