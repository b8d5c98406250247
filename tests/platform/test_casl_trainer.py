import json

import numpy as np
import pytest
import torch

from mirror3d.utils.config import config_to_dict, load_config, update_config
from mirror3d.models.casl import load_casl
from mirror3d.platform import train as rt
from mirror3d.platform.casl_trainer import (CaslTrainConfig, casl_step, smoke_config,
                                            train_casl)


@pytest.fixture
def hq(tmp_path, data_fixtures):
    return data_fixtures.make_market_hq(tmp_path / "d", size=(32, 64))


def _cfg(tmp_path, root, **extra):
    over = ["--data.root", str(root), "--data.ratio_range", "0.0,1.0",
            "--data.clean_range", "0.0,1.0", "--out_dir", str(tmp_path / "runs")]
    for k, v in extra.items():
        over += [f"--{k}", str(v)]
    return smoke_config(load_config(CaslTrainConfig, overrides=over))


def test_smoke_training_through_ray_train_and_resume(ray_session, tmp_path, hq):
    cfg = _cfg(tmp_path, hq, name="smoke")
    run = train_casl(cfg)
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["epochs_run"] == 2 and 0.0 <= summary["held_out_mask_iou"] <= 100.0
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [0, 1]
    assert all(np.isfinite(m["loss"]) for m in lines)
    # the prototype loop runs every epoch in the smoke config until weight averaging starts
    # (the last epoch of two), and exports the template at each update
    assert sorted(p.name for p in (run / "templates").glob("*.obj")) == ["epoch_0000.obj"]
    assert "prototype_move" in lines[0] and "prototype_move" not in lines[1]
    state = rt.load_checkpoint(run, "casl")
    assert state["epoch"] == 1 and "template" in state["model"]
    assert not torch.equal(state["model"]["template"], state["model"]["template_init"])
    # inference API on the trained run
    pred = load_casl(run)
    img = (np.random.default_rng(0).random((64, 32, 3)) * 255).astype(np.uint8)
    mask = np.zeros((64, 32), bool)
    mask[8:56, 8:24] = True
    rec = pred.reconstruct(img, mask)
    assert rec.vertices.shape == (642, 3) and -180 <= rec.camera.azimuth <= 180
    assert rec.render(azimuth=90.0).shape == (64, 32, 3)
    # resume for one more epoch
    cfg2 = update_config(cfg, {"optim.epochs": 3, "resume": str(run), "name": "resumed"})
    run2 = train_casl(cfg2)
    lines2 = [json.loads(x) for x in (run2 / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines2] == [2]
    # a NaN loss stops training with a message naming the last good checkpoint, kept intact
    good = rt.latest_checkpoint(run2)
    before = good.read_bytes()
    cfg3 = update_config(cfg, {"optim.epochs": 5, "resume": str(run2), "name": "nan",
                               "loss.iou": float("inf")})
    with pytest.raises(FloatingPointError, match=r"non-finite CASL loss at epoch 3, step \d+"
                                                 r".*last good checkpoint: .*epoch_0002"):
        train_casl(cfg3)
    assert good.read_bytes() == before
    assert not (run.parent / "nan" / "model_final.pt").exists()


def test_frozen_groups_get_no_reconstruction_gradient(tmp_path, hq):
    from mirror3d.platform.casl_trainer import build_model
    cfg = _cfg(tmp_path, hq)
    cfg = update_config(cfg, {"optim.gan": False, "loss.ic": 0.0, "loss.flip": 0.0})
    model, disc = build_model(cfg)
    opt_e = torch.optim.SGD(model.parameters(), lr=0.0)
    opt_d = torch.optim.SGD(disc.parameters(), lr=0.0)
    x = torch.rand(4, 4, 64, 32)
    x[:, 3] = 0
    x[:, 3, 10:50, 8:24] = 1
    casl_step(model, disc, opt_e, opt_d, x, cfg, {"camera", "texture"}, 1.0)
    # opt.zero_grad(set_to_none) ran before backward, so .grad shows this step only
    cam = [p.grad for p in model.encoder.camera.parameters()]
    shape = [p.grad for p in model.encoder.shape.parameters()]
    assert all(g is None or g.abs().sum() == 0 for g in cam)
    assert any(g is not None and g.abs().sum() > 0 for g in shape)


def test_bad_inputs_fail_before_any_run(tmp_path, hq):
    with pytest.raises(FileNotFoundError):
        train_casl(_cfg(tmp_path, tmp_path / "missing"))
    cfg = update_config(_cfg(tmp_path, hq), {"optim.batch_size": 64})
    with pytest.raises(ValueError, match="optim.batch_size"):
        train_casl(cfg)
    torch.save({"x": 1}, tmp_path / "foreign.pt")
    with pytest.raises(rt.CheckpointError):
        train_casl(update_config(_cfg(tmp_path, hq), {"resume": str(tmp_path / "foreign.pt")}))
    with pytest.raises(rt.CheckpointError):
        load_casl(tmp_path / "foreign.pt")
    assert not (tmp_path / "runs").exists()


def test_worker_errors_come_out_of_ray_trains_wrappers():
    class RayTaskError(Exception):  # the shape of ray.exceptions.RayTaskError
        def __init__(self, cause):
            super().__init__(f"wrapped: {cause}")
            self.cause = cause

    class WorkerGroupError(Exception):
        def __init__(self, failures):
            super().__init__("Training failed due to worker errors: ...")
            self.worker_failures = failures

    e = rt.worker_error(WorkerGroupError({1: RayTaskError(ValueError("x")),
                                          0: RayTaskError(FloatingPointError("nan at step 3"))}))
    assert type(e) is FloatingPointError and str(e) == "nan at step 3"
    e = rt.worker_error(WorkerGroupError({0: RayTaskError(OSError("disk full"))}))
    assert isinstance(e, rt.TrainingFailed) and "worker 0: OSError: disk full" in str(e)
    plain = RuntimeError("controller")
    assert rt.worker_error(plain) is plain
