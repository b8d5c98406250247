"""Shared test fixtures. Ray is started at most once per test session, on loopback."""

from __future__ import annotations

from mirror3d.utils.env import apply_local_env

apply_local_env()  # first: the local Ray/OpenMP environment, before torch or Ray load


import pytest
import torch


torch.set_num_threads(2)


@pytest.fixture(scope="session", autouse=True)
def fast_ray_train_polls():
    """Ray Train's controller polls its worker group every 2 s (Ray's default): a run's end is
    seen ~1 s after it happened, on average. The tests' ~35 Ray Train runs poll every 0.2 s,
    as the fault and node-loss tests already did (Ray Train passes the variable on to its
    controller and workers). Set before any Ray instance starts."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
        yield


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


@pytest.fixture(scope="session", autouse=True)
def storage_environment(tmp_path_factory):
    """The storage variables of the session, set before any Ray instance starts (so Ray workers
    inherit them): the stage of URI locations in a temporary folder (never ~/.cache), and the
    AWS variables of the local S3 server that :func:`s3_server` starts on first use."""
    import s3_fixtures

    port = s3_fixtures.free_port()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIRROR3D_STAGE", str(tmp_path_factory.mktemp("stage")))
        for key, value in s3_fixtures.s3_env(port).items():
            mp.setenv(key, value)
        yield port


@pytest.fixture(scope="session")
def s3_server(storage_environment, tmp_path_factory):
    """moto's S3 API on 127.0.0.1, for the whole session."""
    import s3_fixtures

    server = s3_fixtures.MotoServer(storage_environment,
                                    str(tmp_path_factory.mktemp("moto") / "moto.log"))
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A new empty bucket on the local S3 server: ``s3://<name>``."""
    return s3_server.bucket()


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole test session (cold start is ~6 s)."""
    import ray

    from mirror3d.platform.cluster import local_ray_init_kwargs

    if not ray.is_initialized():
        ray.init(num_cpus=2, **local_ray_init_kwargs())
    yield ray
    ray.shutdown()
