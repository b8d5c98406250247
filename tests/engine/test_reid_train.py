"""The re-id engine (mirror3d/engine/reid_train.py): the loop in one process without Ray, the
report hook, resume, evaluation and model loading."""

import json
import logging
import socket

import pytest
import torch

from mlflow.tracking import MlflowClient

from mirror3d.data.datasets import PointCloudDataset
from mirror3d.engine.reid_train import (ReidTrainConfig, ThinnedPoints, build_model,
                                        embed_dataset, evaluate_model, input_kind,
                                        load_reid_data, load_reid_model, train_reid_loop)
from mirror3d.engine.runtime import TrainingClock
from mirror3d.jobs import resolve_config
from mirror3d.models import registry
from mirror3d.models.registry import register_model
from mirror3d.utils.checkpoint import CheckpointError, latest_checkpoint, save_checkpoint
from mirror3d.utils.config import ConfigError, config_to_dict, update_config
from reid_fixtures import market_and_shards


def _cfg(tmp_path, shards, images, **extra):
    """The smoke preset (configs/train-reid/smoke.yaml) on the tiny tree, batches of 3 x 2."""
    over = {"data.shards": str(shards), "data.images": str(images),
            "out_dir": str(tmp_path / "runs"), "optim.batch_size": 6, "optim.instances": 2}
    over.update(extra)
    return update_config(resolve_config("train-reid", "smoke"), over)


@pytest.fixture
def market(tmp_path):
    return market_and_shards(tmp_path)


def _lines(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_ognet_loop_in_one_process_reports_every_epoch_then_resumes(tmp_path, market, capsys):
    root, shards = market
    cfg = _cfg(tmp_path, shards, root)
    run = tmp_path / "runs" / "plain"
    calls = []
    res = train_reid_loop(cfg, run, report=lambda m, ck: calls.append((m["epoch"], ck)))
    # one report per epoch; smoke checkpoints every epoch
    assert [e for e, _ in calls] == [0, 1]
    assert [ck.parent.name for _, ck in calls] == ["epoch_0000", "epoch_0001"]
    assert all(ck.exists() for _, ck in calls)
    assert res == json.loads((run / "eval.json").read_text())
    assert res["model"] == "og-net-small" and res["num_queries"] == 4 and res["num_gallery"] == 11
    assert 0.0 <= res["rank1"] <= 1.0 and 0.0 <= res["map_trapezoid"] <= 1.0
    lines = _lines(run)
    assert [m["epoch"] for m in lines] == [0, 1]
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in lines)
    assert {"loss", "ce", "circle", "triplet", "acc", "lr", "steps", "torch_threads",
            "epoch_seconds", "elapsed_seconds"} <= set(lines[0])
    assert (run / "ranked.png").exists() and (run / "model_final.pt").exists()
    # one readable progress line per epoch: loss and train accuracy
    out = [x for x in capsys.readouterr().out.splitlines() if x.startswith("train-reid")]
    assert len(out) == 2 and "epoch 1/2" in out[0] and "epoch 2/2" in out[1]
    assert all("loss " in x and "train_acc " in x and "ETA" in x for x in out)

    model, loaded = load_reid_model(run)
    assert loaded == cfg and not model.training
    # resume from the run directory: the third epoch only, from the saved optimiser state
    run2 = tmp_path / "runs" / "resumed"
    train_reid_loop(update_config(cfg, {"optim.epochs": 3}), run2, resume=str(run))
    assert [m["epoch"] for m in _lines(run2)] == [2]
    assert latest_checkpoint(run2).parent.name == "epoch_0002"


def test_2d_baseline_trains_with_the_same_loop(tmp_path, market):
    root, shards = market
    cfg = _cfg(tmp_path, shards, root, **{"model.name": "cnn2d-small", "data.image_size": (16, 32)})
    run = tmp_path / "runs" / "cnn"
    train_reid_loop(cfg, run)
    res = json.loads((run / "eval.json").read_text())
    assert res["model"] == "cnn2d-small" and res["num_gallery"] == 11
    model, _ = load_reid_model(run / "model_final.pt")
    assert type(model).__name__ == "CNN2D"


def test_time_budget_stops_between_steps_not_at_the_epoch_end(tmp_path, market):
    # a budget spent after the first step: one partial epoch of one step, then evaluation
    root, shards = market
    cfg = _cfg(tmp_path, shards, root, **{"optim.max_minutes": 1e-9, "optim.epochs": 5})
    run = tmp_path / "runs" / "budget"
    train_reid_loop(cfg, run)
    assert [(m["epoch"], m["steps"]) for m in _lines(run)] == [(0, 1)]
    assert (run / "eval.json").exists() and (run / "model_final.pt").exists()


@pytest.fixture
def extra_models():
    added = []
    yield added
    for name in added:
        registry._REGISTRY.pop(name, None)
        registry._INFO.pop(name, None)


def test_input_kind_comes_from_the_registry_not_the_name(tmp_path, market, extra_models):
    root, shards = market
    assert input_kind("og-net-deep") == "points" and input_kind("cnn2d-small") == "image"
    extra_models += ["zz-pictures", "zz-undeclared"]

    # a model whose name says nothing: its registry entry decides which data it gets
    @register_model("zz-pictures", input_kind="image", input_size=(16, 32))
    def pictures(num_classes=751):
        return None

    @register_model("zz-undeclared")
    def undeclared(num_classes=751):
        return None

    data = load_reid_data(_cfg(tmp_path, tmp_path / "no-shards", root,
                               **{"model.name": "zz-pictures"}))
    assert "image" in data.query[0] and len(data.gallery) == 11
    with pytest.raises(ValueError, match="declares no input_kind"):
        load_reid_data(_cfg(tmp_path, shards, root, **{"model.name": "zz-undeclared"}))
    with pytest.raises(ValueError, match="unknown model name 'og-nett'"):
        load_reid_data(_cfg(tmp_path, shards, root, **{"model.name": "og-nett"}))


def test_embed_dataset_uses_each_kinds_test_time_augmentation(tmp_path, market):
    root, shards = market

    class Probe(torch.nn.Module):  # feature = the mean input, so the augmentation shows
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, *x):
            f = torch.cat([t.flatten(1).mean(1, keepdim=True) for t in x] + [x[0].flatten(1)[:, :1]], 1)
            return type("Out", (), {"feature": f * self.w})

    cfg = _cfg(tmp_path, shards, root)
    data = load_reid_data(cfg)
    f = embed_dataset(Probe(), data.query, "points", batch_size=3)
    assert f.shape == (4, 3) and torch.allclose(f.norm(dim=1), torch.ones(4), atol=1e-4)
    pts = data.query[0]["points"][None]
    xyz, rgb = pts[..., :3], pts[..., 3:]
    probe = Probe()
    want = probe(xyz, rgb).feature + probe(1.1 * xyz, rgb).feature
    assert torch.allclose(f[0], (want / want.norm())[0], atol=1e-5)

    icfg = update_config(cfg, {"model.name": "cnn2d-small", "data.image_size": (16, 32)})
    idata = load_reid_data(icfg)
    g = embed_dataset(Probe(), idata.gallery, "image", batch_size=4)
    img = idata.gallery[0]["image"][None]
    want = probe(img).feature + probe(torch.flip(img, dims=[3])).feature
    assert g.shape == (11, 2) and torch.allclose(g[0], (want / want.norm())[0], atol=1e-5)


def test_load_reid_model_rejects_foreign_and_truncated_checkpoints(tmp_path):
    torch.save({"state": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="expected format 'mirror3d/reid'"):
        load_reid_model(tmp_path / "foreign.pt")
    save_checkpoint(tmp_path / "casl.pt", "casl", {"model": {}})
    with pytest.raises(CheckpointError, match="got 'mirror3d/casl'"):
        load_reid_model(tmp_path / "casl.pt")
    save_checkpoint(tmp_path / "ok.pt", "reid", {"model": {"w": torch.ones(3)}, "epoch": 1})
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_reid_model(tmp_path / "cut.pt")
    with pytest.raises(FileNotFoundError):
        load_reid_model(tmp_path / "nope.pt")


def test_batch_size_must_be_a_multiple_of_instances():
    with pytest.raises(ValueError, match="multiple of optim.instances"):
        update_config(ReidTrainConfig(), {"optim.batch_size": 7, "optim.instances": 2})


def test_training_clock_budget_and_schedule():
    # the clock behind the loop's cosine schedule and time budget (mirror3d/engine/runtime.py)
    clock = TrainingClock(epochs=10, max_minutes=0.0)
    assert not clock.out_of_time() and not clock.out_of_time_all()
    assert clock.progress(5) == 0.5 and clock.cosine(0, 0.01) == pytest.approx(1.0)
    spent = TrainingClock(epochs=10, max_minutes=1e-9)
    assert spent.out_of_time_all() and spent.progress(0) == 1.0
    assert spent.cosine(0, 0.01) == pytest.approx(0.01)


# ------------------------------------------------------------------ the last graph, densities
def test_checkpoints_of_older_runs_load_with_the_new_keys_at_their_defaults(tmp_path):
    """A run saved before ``model.last_graph``, ``eval_densities`` and ``tracking`` existed."""
    cfg = update_config(resolve_config("train-reid", "smoke"), {"model.init_points": 64})
    old = config_to_dict(cfg)
    del old["model"]["last_graph"], old["eval_densities"], old["tracking"]
    model = build_model(cfg, 3)
    save_checkpoint(tmp_path / "model_final.pt", "reid",
                    {"model": model.state_dict(), "epoch": 1, "num_classes": 3, "config": old})
    loaded, lcfg = load_reid_model(tmp_path)
    assert lcfg == cfg and lcfg.model.last_graph == "position+appearance"
    assert [l.feature_graph for l in loaded.layers] == [False, False, False, True]
    position = build_model(update_config(cfg, {"model.last_graph": "position"}), 3)
    assert not position.layers[-1].feature_graph
    position.load_state_dict(model.state_dict())  # the switch changes no parameter


def test_eval_densities_thin_the_points_the_plain_evaluation_sees(tmp_path, market):
    """OG-Net Fig. 8: density 1.0 is the plain evaluation exactly; 0.5 and 0.25 feed the model
    half and a quarter of data.num_points (256 in the smoke preset)."""
    root, shards = market
    cfg = _cfg(tmp_path, shards, root, eval_densities=(0.25, 0.5, 1.0))
    data = load_reid_data(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, data.num_classes).eval()
    seen = []
    hook = model.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    res = evaluate_model(model, data, cfg, tmp_path / "ev")
    hook.remove()
    assert res == json.loads((tmp_path / "ev" / "eval.json").read_text())
    # query (4) and gallery (11) in one batch each, two passes each (the 1.1 xyz TTA)
    assert seen == [256] * 4 + [64] * 4 + [128] * 4 + [256] * 4
    assert list(res["densities"]) == ["0.25", "0.5", "1.0"]
    assert [res["densities"][d]["num_points"] for d in res["densities"]] == [64, 128, 256]
    names = ("rank1", "rank5", "rank10", "map_trapezoid", "map_mean_precision",
             "num_queries_without_positive")
    assert {k: res["densities"]["1.0"][k] for k in names} == {k: res[k] for k in names}
    # (this tiny gallery ranks perfectly at every density: the features show the difference)
    plain = embed_dataset(model, data.gallery, "points", 16)
    assert torch.equal(embed_dataset(model, ThinnedPoints(data.gallery, 1.0), "points", 16), plain)
    assert not torch.allclose(embed_dataset(model, ThinnedPoints(data.gallery, 0.5), "points", 16),
                              plain, atol=1e-3)


def test_thinned_points_are_a_seeded_ordered_subset_of_the_evaluation_points():
    g = torch.Generator().manual_seed(0)
    clouds = [torch.rand(300, 6, generator=g) for _ in range(3)]  # distinct points
    base = PointCloudDataset(clouds, [0, 1, 2], num_points=200, train=False)
    full = base[1]["points"]
    half, quarter = ThinnedPoints(base, 0.5)[1]["points"], ThinnedPoints(base, 0.25)[1]["points"]
    assert half.shape == (100, 6) and quarter.shape == (50, 6)
    where = [int((full == p).all(1).nonzero()) for p in half]  # each row once in the cloud
    assert where == sorted(where) and len(set(where)) == 100  # in the cloud's order
    in_half = [bool((half == p).all(1).any()) for p in quarter]
    assert all(in_half)  # a smaller density keeps a subset of a larger one's points
    assert torch.equal(ThinnedPoints(base, 0.5)[1]["points"], half)  # deterministic
    assert not torch.equal(ThinnedPoints(base, 0.5, seed=1)[1]["points"], half)
    assert torch.equal(ThinnedPoints(base, 1.0)[1]["points"], full)
    assert ThinnedPoints(base, 0.5)[1]["pid"] == 1 and len(ThinnedPoints(base, 0.5)) == 3
    with pytest.raises(ValueError, match=r"density must be in \(0, 1\], got 0"):
        ThinnedPoints(base, 0)


def test_eval_densities_are_checked_before_training():
    smoke = resolve_config("train-reid", "smoke")  # 256 points, first FPS level 64
    for bad, why in (((0.0, 0.5), r"every element must be in \(0, 1\], got 0,0.5"),
                     ((1.5,), r"every element must be in \(0, 1\], got 1.5"),
                     ((0.5, 0.5), "expected distinct fractions, got 0.5,0.5"),
                     ((0.2,), r"0.2 of data.num_points 256 leaves 51 points, fewer than "
                              r"model.init_points 64 \(OG-Net's first FPS level\); use a "
                              r"density >= 0.25")):
        with pytest.raises(ConfigError, match="^eval_densities: " + why + "$"):
            update_config(smoke, {"eval_densities": bad})
    assert update_config(smoke, {"eval_densities": "0.25,1"}).eval_densities == (0.25, 1.0)


# ------------------------------------------------------------------ MLflow tracking
def test_training_run_logs_its_config_epochs_evaluation_and_pictures_to_mlflow(tmp_path, market):
    root, shards = market
    store = tmp_path / "mlflow"
    cfg = _cfg(tmp_path, shards, root, **{
        "tracking.uri": str(store), "tracking.experiment": "reid-test",
        "model.last_graph": "position", "eval_densities": (0.5, 1.0)})
    run = tmp_path / "runs" / "tracked"
    res = train_reid_loop(cfg, run)
    client = MlflowClient(tracking_uri=store.as_uri())
    [tracked] = client.search_runs([client.get_experiment_by_name("reid-test").experiment_id])
    assert (tracked.info.run_name, tracked.info.status) == ("tracked", "FINISHED")
    params = tracked.data.params
    assert (params["optim.epochs"], params["model.last_graph"], params["eval_densities"],
            params["data.shards"]) == ("2", "position", "0.5,1.0", str(shards))
    lines = _lines(run)
    for key in ("loss", "acc", "lr"):
        history = client.get_metric_history(tracked.info.run_id, key)
        assert [(m.step, m.value) for m in history] == [(x["epoch"], x[key]) for x in lines]
    metrics = tracked.data.metrics
    assert metrics["rank1"] == res["rank1"] and metrics["map_trapezoid"] == res["map_trapezoid"]
    assert metrics["densities/0.5/rank1"] == res["densities"]["0.5"]["rank1"]
    assert metrics["densities/1.0/num_points"] == 256
    assert {a.path for a in client.list_artifacts(tracked.info.run_id)} == {
        "config.yaml", "eval.json", "ranked.png"}


def test_an_unreachable_tracking_server_costs_one_warning_not_the_run(tmp_path, market, caplog):
    root, shards = market
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends
    cfg = _cfg(tmp_path, shards, root, **{"tracking.uri": f"http://127.0.0.1:{port}",
                                          "optim.max_minutes": 1e-9, "optim.epochs": 5})
    run = tmp_path / "runs" / "offline"
    with caplog.at_level(logging.WARNING):
        res = train_reid_loop(cfg, run)
    assert res == json.loads((run / "eval.json").read_text()) and (run / "model_final.pt").exists()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"MLflow tracking off for this run (http://127.0.0.1:{port}): "
                                  f"ConnectionError: no tracking server answers")
