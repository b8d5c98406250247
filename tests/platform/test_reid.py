"""The re-id Ray Train driver (mirror3d/platform/reid.py): a smoke run through Ray Train, resume,
fail-fast on bad data; the automatic CPU share of the workers."""

import json

import pytest
from mlflow.tracking import MlflowClient

from mirror3d.engine.reid_train import load_reid_model
from mirror3d.jobs import resolve_config
from mirror3d.platform import train as rt
from mirror3d.platform.reid import train_reid
from mirror3d.utils.checkpoint import latest_checkpoint
from mirror3d.utils.config import load_config, update_config
from reid_fixtures import market_and_shards


def _cfg(tmp_path, shards, images, **extra):
    over = {"data.shards": str(shards), "data.images": str(images),
            "out_dir": str(tmp_path / "runs"), "optim.batch_size": 6, "optim.instances": 2,
            "ray.cpus_per_worker": 1}
    over.update(extra)
    return update_config(resolve_config("train-reid", "smoke"), over)


@pytest.fixture
def market(tmp_path):
    return market_and_shards(tmp_path)


def test_ognet_smoke_through_ray_train_then_resume(ray_session, tmp_path, market, mlflow_store):
    root, shards = market
    cfg = _cfg(tmp_path, shards, root, name="smoke")
    run = train_reid(cfg)
    assert run == tmp_path / "runs" / "smoke"
    res = json.loads((run / "eval.json").read_text())
    assert res["num_queries"] == 4 and res["num_gallery"] == 11
    assert 0.0 <= res["rank1"] <= 1.0 and 0.0 <= res["map_trapezoid"] <= 1.0
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [0, 1]
    assert {m["torch_threads"] for m in lines} == {1}  # --ray.cpus_per_worker 1
    ck = latest_checkpoint(run)
    assert ck is not None and ck.parent.name == "epoch_0001"
    assert (run / "ranked.png").exists() and (run / "model_final.pt").exists()
    # config.yaml: the config the workers ran, with absolute data paths
    saved = load_config(type(cfg), run / "config.yaml")
    assert saved.data.shards == str(shards.resolve()) and saved.optim == cfg.optim
    # the MLflow store resolved on the driver (the session's, tests/conftest.py), and the
    # worker's run is in it with its per-epoch metrics
    assert saved.tracking.uri == mlflow_store.as_uri()
    client = MlflowClient(tracking_uri=saved.tracking.uri)
    exp = client.get_experiment_by_name("train-reid")
    found = client.search_runs([exp.experiment_id],
                               filter_string="attributes.run_name = 'smoke'")
    assert found and len(client.get_metric_history(found[0].info.run_id, "loss")) == 2
    model, loaded_cfg = load_reid_model(run)
    assert loaded_cfg.model.name == "og-net-small"
    # resume: one more epoch starts at epoch 2 from the saved optimiser state
    cfg2 = update_config(cfg, {"optim.epochs": 3, "resume": str(run), "name": "resumed",
                               "tracking.mlflow": False})  # MLflow: checked above
    run2 = train_reid(cfg2)
    lines2 = [json.loads(x) for x in (run2 / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines2] == [2]


def test_bad_data_fails_before_any_run_directory(tmp_path, market):
    root, shards = market
    with pytest.raises(FileNotFoundError):
        train_reid(_cfg(tmp_path, tmp_path / "nope", root, name="bad"))
    with pytest.raises(FileNotFoundError, match="resume"):
        train_reid(_cfg(tmp_path, shards, root, name="bad", resume=str(tmp_path)))
    with pytest.raises(ValueError, match="unknown model name"):
        train_reid(_cfg(tmp_path, shards, root, name="bad", **{"model.name": "og-nett"}))
    assert not (tmp_path / "runs").exists()


def test_auto_cpus_per_worker_shares_the_cluster(ray_session):
    # the test session's Ray has 2 CPUs on one node
    assert rt.resolve_cpus_per_worker(0, 1) == 2.0
    assert rt.resolve_cpus_per_worker(0, 2) == 1.0
    assert rt.resolve_cpus_per_worker(0, 8) == 1.0  # never below one CPU
    assert rt.resolve_cpus_per_worker(0.5, 1) == 0.5  # explicit values are kept
