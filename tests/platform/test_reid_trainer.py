import json

import numpy as np
import pytest
import torch

from mirror3d.utils.config import load_config
from mirror3d.lifting.flat import lift_reid_tree_flat
from mirror3d.platform import train as rt
from mirror3d.platform.reid_trainer import (PKSampler, ReidTrainConfig, batch_hard_triplet,
                                            load_reid_model, smoke_config, train_loop_per_worker,
                                            train_reid)


def _cfg(tmp_path, shards, images, **extra):
    over = ["--data.shards", str(shards), "--data.images", str(images),
            "--out_dir", str(tmp_path / "runs"), "--optim.batch_size", "6",
            "--optim.instances", "2", "--ray.cpus_per_worker", "1"]
    for k, v in extra.items():
        over += [f"--{k}", str(v)]
    cfg = smoke_config(load_config(ReidTrainConfig, overrides=over))
    from mirror3d.utils.config import update_config
    return update_config(cfg, {"optim.batch_size": 6, "optim.instances": 2})


@pytest.fixture
def market(tmp_path, data_fixtures):
    root = data_fixtures.make_market1501(tmp_path / "m")
    shards = tmp_path / "shards"
    lift_reid_tree_flat(root, shards, progress=False)
    return root, shards


def test_ognet_smoke_through_ray_train_then_resume(ray_session, tmp_path, market):
    root, shards = market
    cfg = _cfg(tmp_path, shards, root, name="smoke")
    run = train_reid(cfg)
    res = json.loads((run / "eval.json").read_text())
    assert res["num_queries"] == 4 and res["num_gallery"] == 11
    assert 0.0 <= res["rank1"] <= 1.0 and 0.0 <= res["map_trapezoid"] <= 1.0
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [0, 1] and all(np.isfinite(m["loss"]) for m in lines)
    assert {m["torch_threads"] for m in lines} == {1}  # --ray.cpus_per_worker 1
    ck = rt.latest_checkpoint(run)
    assert ck is not None and ck.parent.name == "epoch_0001"
    assert (run / "ranked.png").exists() and (run / "config.yaml").exists()
    model, loaded_cfg = load_reid_model(run)
    assert loaded_cfg.model.name == "og-net-small"
    # resume: one more epoch starts at epoch 2 from the saved optimiser state
    from mirror3d.utils.config import update_config
    cfg2 = update_config(cfg, {"optim.epochs": 3, "resume": str(run), "name": "resumed"})
    run2 = train_reid(cfg2)
    lines2 = [json.loads(x) for x in (run2 / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines2] == [2]


def test_2d_baseline_trains_with_the_same_loop(tmp_path, market):
    root, shards = market
    cfg = _cfg(tmp_path, shards, root, **{"model.name": "cnn2d-small", "data.image_size": "16,32"})
    run = tmp_path / "runs" / "cnn"
    run.mkdir(parents=True)
    from mirror3d.utils.config import config_to_dict
    train_loop_per_worker({"config": config_to_dict(cfg), "run_dir": str(run), "resume": ""})
    res = json.loads((run / "eval.json").read_text())
    assert res["model"] == "cnn2d-small" and res["num_gallery"] == 11


def test_foreign_and_truncated_checkpoints_are_rejected(tmp_path):
    torch.save({"state": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(rt.CheckpointError, match="expected format 'mirror3d/reid'"):
        rt.load_checkpoint(tmp_path / "foreign.pt", "reid")
    rt.save_checkpoint(tmp_path / "ok.pt", "reid", {"model": {"w": torch.ones(3)}, "epoch": 1})
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(rt.CheckpointError, match="cut.pt"):
        rt.load_checkpoint(tmp_path / "cut.pt", "reid")
    with pytest.raises(rt.CheckpointError, match="mirror3d/casl"):
        rt.load_checkpoint(tmp_path / "ok.pt", "casl")
    assert rt.load_checkpoint(tmp_path / "ok.pt", "reid")["epoch"] == 1
    with pytest.raises(FileNotFoundError):
        rt.load_checkpoint(tmp_path / "nope.pt", "reid")


def test_pk_sampler_balances_identities_and_splits_workers():
    labels = np.repeat(np.arange(10), [5, 1, 3, 4, 6, 2, 7, 3, 4, 5])
    s0 = PKSampler(labels, batch_size=8, instances=2, seed=1, rank=0, world=2)
    s1 = PKSampler(labels, batch_size=8, instances=2, seed=1, rank=1, world=2)
    b0 = np.array(list(s0)).reshape(-1, 8)
    b1 = np.array(list(s1)).reshape(-1, 8)
    assert len(b0) == len(b1) == len(labels) // 8 // 2
    for b in np.concatenate([b0, b1]):
        ids, counts = np.unique(labels[b], return_counts=True)
        assert len(ids) == 4 and set(counts) == {2}
    assert not np.array_equal(b0, b1)
    with pytest.raises(ValueError, match="identities per batch"):
        PKSampler(labels, batch_size=24, instances=2)


def test_batch_hard_triplet_by_hand():
    f = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    y = torch.tensor([0, 0, 1, 1])
    assert batch_hard_triplet(f, y, 0.3).item() == pytest.approx(0.0)
    f2 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    # positives orthogonal (d = √2), negatives identical (d = 0): loss = √2 + 0.3
    assert batch_hard_triplet(f2, y, 0.3).item() == pytest.approx(2 ** 0.5 + 0.3, abs=1e-5)
    assert batch_hard_triplet(f, torch.tensor([0, 1, 2, 3]), 0.3).item() == 0.0


def test_bad_data_fails_before_any_run_directory(tmp_path, market):
    root, shards = market
    cfg = _cfg(tmp_path, tmp_path / "nope", root, name="bad")
    with pytest.raises(FileNotFoundError):
        train_reid(cfg)
    assert not (tmp_path / "runs").exists()


def test_time_budget_stops_between_steps_not_at_the_epoch_end(tmp_path, market):
    # a budget spent after the first step: one partial epoch of one step, then evaluation
    root, shards = market
    cfg = _cfg(tmp_path, shards, root, **{"optim.max_minutes": 1e-9, "optim.epochs": 5})
    run = tmp_path / "runs" / "budget"
    run.mkdir(parents=True)
    from mirror3d.utils.config import config_to_dict
    train_loop_per_worker({"config": config_to_dict(cfg), "run_dir": str(run), "resume": ""})
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(m["epoch"], m["steps"]) for m in lines] == [(0, 1)]
    assert (run / "eval.json").exists() and (run / "model_final.pt").exists()


def test_training_clock_budget_and_schedule():
    clock = rt.TrainingClock(epochs=10, max_minutes=0.0)
    assert not clock.out_of_time() and not clock.out_of_time_all()
    assert clock.progress(5) == 0.5 and clock.cosine(0, 0.01) == pytest.approx(1.0)
    spent = rt.TrainingClock(epochs=10, max_minutes=1e-9)
    assert spent.out_of_time_all() and spent.progress(0) == 1.0
    assert spent.cosine(0, 0.01) == pytest.approx(0.01)


def test_auto_cpus_per_worker_shares_the_cluster(ray_session):
    # the test session's Ray has 2 CPUs on one node
    assert rt.resolve_cpus_per_worker(0, 1) == 2.0
    assert rt.resolve_cpus_per_worker(0, 2) == 1.0
    assert rt.resolve_cpus_per_worker(0, 8) == 1.0  # never below one CPU
    assert rt.resolve_cpus_per_worker(0.5, 1) == 0.5  # explicit values are kept
