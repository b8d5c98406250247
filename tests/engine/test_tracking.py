"""MLflow tracking of the trainers' runs (mirror3d/engine/tracking.py): where the store is, what
a run records, FINISHED / FAILED, resume, and failures that never stop training. The trainers'
own tracked runs are tested in test_reid_train.py and test_casl_train.py."""

import json
import logging
import urllib.request
import pathlib
import socket

import pytest
from mlflow.tracking import MlflowClient

from mirror3d.engine.reid_train import ReidTrainConfig
from mirror3d.engine.tracking import (RUN_FILE, TrackingConfig, resolve_tracking, start_tracking,
                                      track_run, tracking_uri)
from mirror3d.utils.config import update_config


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _only_run(store: pathlib.Path, experiment: str):
    client = MlflowClient(tracking_uri=store.as_uri())
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def _tracking_warnings(caplog):
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and r.name.startswith(("mirror3d", "mlflow", "urllib3"))]


def test_tracking_uri_defaults_to_the_env_then_runs_mlflow_and_is_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracker:5000")
    assert tracking_uri("") == "http://tracker:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking_uri("") == (tmp_path / "runs" / "mlflow").as_uri()
    # a worker elsewhere (Ray's directory) finds the store by the runs/ folder of its run dir
    monkeypatch.chdir(tmp_path / "..")
    assert tracking_uri("", tmp_path / "runs" / "pipeline" / "p" / "reid" / "flat") == \
        (tmp_path / "runs" / "mlflow").as_uri()
    assert tracking_uri("", tmp_path / "out" / "r") == (tmp_path / ".." / "runs" / "mlflow").resolve().as_uri()
    monkeypatch.chdir(tmp_path)
    assert tracking_uri("store") == (tmp_path / "store").as_uri()
    assert tracking_uri("file:store") == (tmp_path / "store").as_uri()
    assert tracking_uri("file:///abs/store") == "file:///abs/store"
    assert tracking_uri("sqlite:///m.db") == f"sqlite:///{tmp_path / 'm.db'}"
    assert tracking_uri("sqlite:////abs/m.db") == "sqlite:////abs/m.db"
    assert tracking_uri("https://mlflow.example.org") == "https://mlflow.example.org"
    # a driver resolves it before shipping the config to workers in other directories
    cfg = resolve_tracking(ReidTrainConfig())
    assert cfg.tracking.uri == (tmp_path / "runs" / "mlflow").as_uri()
    off = update_config(ReidTrainConfig(), {"tracking.mlflow": False})
    assert resolve_tracking(off) is off


def test_a_run_records_params_metrics_artifacts_and_finishes(tmp_path):
    store, run_dir = tmp_path / "store", tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / "pic.png").write_bytes(b"png")
    settings = TrackingConfig(uri=str(store))
    params = {"optim.lr": 1e-3, "data.image_size": (64, 128), "name": ""}
    with track_run(settings, "train-x", run_dir, params, config_text="a: 1\n") as tracker:
        assert tracker.active
        tracker.log_metrics({"epoch": 0, "loss": 2.0, "flag": True, "note": "x", "bad key!": 1},
                            step=0)
        tracker.log_metrics({"epoch": 1, "loss": 1.5}, step=1)
        tracker.log_metrics({"rank1": 0.5, "densities": {"0.5": {"rank1": 0.25}}}, step=1)
        tracker.log_artifacts([run_dir / "pic.png", run_dir / "missing.png"])
    client, run = _only_run(store, "train-x")  # the experiment is the job name by default
    assert run.info.status == "FINISHED" and run.info.run_name == "r1"
    assert run.data.params == {"optim.lr": "0.001", "data.image_size": "64,128", "name": ""}
    assert run.data.tags["mirror3d.job"] == "train-x"
    assert run.data.tags["mirror3d.run_dir"] == str(run_dir)
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")] == \
        [(0, 2.0), (1, 1.5)]
    # real numbers only (no bools, no text, the epoch is the step); nested keys with slashes
    assert set(run.data.metrics) == {"loss", "bad key_", "rank1", "densities/0.5/rank1"}
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"config.yaml", "pic.png"}
    assert json.loads((run_dir / RUN_FILE).read_text()) == {
        "tracking_uri": store.as_uri(), "run_id": run.info.run_id}


def test_a_failing_run_ends_failed_and_a_resume_continues_it(tmp_path):
    store, run_dir = tmp_path / "store", tmp_path / "run"
    run_dir.mkdir()
    settings = TrackingConfig(uri=str(store), experiment="exp", run_name="named")
    with pytest.raises(RuntimeError, match="boom"):
        with track_run(settings, "train-x", run_dir, {"a": 1}) as tracker:
            tracker.log_metrics({"loss": 3.0}, step=0)
            raise RuntimeError("boom\nsecond line")
    client, run = _only_run(store, "exp")
    assert (run.info.status, run.info.run_name) == ("FAILED", "named")
    assert run.data.tags["mirror3d.error"] == "RuntimeError: boom second line"
    # resume into the same run directory: the same MLflow run goes on (params not re-logged)
    with track_run(settings, "train-x", run_dir, {"a": 2}, resume=True) as tracker:
        assert client.get_run(tracker.run_id).info.status == "RUNNING"
        tracker.log_metrics({"loss": 2.0}, step=1)
    _, again = _only_run(store, "exp")
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    assert again.data.params == {"a": "1"}
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [0, 1]
    # a fresh start in that directory is a new run; rank > 0 and mlflow off track nothing
    with track_run(settings, "train-x", run_dir, {"a": 3}):
        pass
    with track_run(settings, "train-x", run_dir, {"a": 4}, enabled=False) as tracker:
        assert not tracker.active
    with track_run(TrackingConfig(mlflow=False, uri=str(store)), "x", run_dir, {}) as tracker:
        assert not tracker.active
    assert len(client.search_runs([run.info.experiment_id])) == 2


def test_an_unreachable_server_is_one_warning_and_no_tracking(tmp_path, caplog, monkeypatch):
    uri = f"http://127.0.0.1:{_closed_port()}"
    probes = []
    real_urlopen = urllib.request.urlopen

    def counting_urlopen(*args, **kwargs):
        probes.append(args[0])
        return real_urlopen(*args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", counting_urlopen)
    with caplog.at_level(logging.WARNING):
        tracker = start_tracking(TrackingConfig(uri=uri), "train-x", tmp_path, {"a": 1})
        tracker.log_metrics({"loss": 1.0}, step=0)
        tracker.log_artifacts([tmp_path])
        tracker.end("FINISHED")
    assert probes == [f"{uri}/health"]  # one probe, no HTTP retries, nothing sent to MLflow after it
    assert not tracker.active
    assert _tracking_warnings(caplog) == [
        f"MLflow tracking off for this run ({uri}): ConnectionError: no tracking server answers "
        f"at {uri} ([Errno 111] Connection refused)"]


def test_a_store_that_breaks_mid_run_stops_tracking_with_one_warning(tmp_path, caplog):
    bad = tmp_path / "a-file"
    bad.write_text("not a directory")
    with caplog.at_level(logging.WARNING):  # a store that cannot be created
        tracker = start_tracking(TrackingConfig(uri=str(bad / "store")), "x", tmp_path, {})
    assert not tracker.active
    [line] = _tracking_warnings(caplog)
    assert line.startswith(f"MLflow tracking off for this run ({(bad / 'store').as_uri()}): ")
    caplog.clear()

    store, run_dir = tmp_path / "store", tmp_path / "run"
    run_dir.mkdir()
    with caplog.at_level(logging.WARNING):
        with track_run(TrackingConfig(uri=str(store)), "x", run_dir, {}) as tracker:
            tracker.log_metrics({"loss": 1.0}, step=0)
            exp = MlflowClient(tracking_uri=store.as_uri()).get_experiment_by_name("x")
            (store / exp.experiment_id).rename(tmp_path / "moved")  # the run's folder goes
            for step in (1, 2):
                tracker.log_metrics({"loss": 1.0}, step=step)
    assert not tracker.active
    [line] = _tracking_warnings(caplog)
    assert line.startswith(f"MLflow tracking stopped for this run ({store.as_uri()}): ")
