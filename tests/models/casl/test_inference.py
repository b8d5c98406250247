"""load_casl / CaslPredictor: a model rebuilt from the config its checkpoint holds, without the
trainer (nothing in mirror3d.models imports mirror3d.engine or mirror3d.platform)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from mirror3d.engine.casl_train import CaslTrainConfig
from mirror3d.models.casl import CaslPredictor, load_casl
from mirror3d.models.casl.step import build_model
from mirror3d.utils.checkpoint import CheckpointError, save_checkpoint
from mirror3d.utils.config import config_to_dict, update_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run directory with an untrained 32x64 model_final.pt (the loader does not care)."""
    torch.manual_seed(0)
    cfg = update_config(CaslTrainConfig(), {"data.image_size": (32, 64), "data.bg": False})
    model, _ = build_model(cfg)
    with torch.no_grad():
        model.template.mul_(1.1)  # a learned template must come back from the checkpoint
    run = tmp_path_factory.mktemp("casl_run")
    save_checkpoint(run / "model_final.pt", "casl", {"model": model.state_dict(),
                                                     "config": config_to_dict(cfg)})
    return run, model


def _inputs():
    img = (np.random.default_rng(0).random((64, 32, 3)) * 255).astype(np.uint8)
    mask = np.zeros((64, 32), bool)
    mask[8:56, 8:24] = True
    return img, mask


def test_load_from_run_dir_and_reconstruct(run):
    path, model = run
    pred = load_casl(path)
    assert isinstance(pred.config, dict) and pred.config["data"]["image_size"] == [32, 64]
    assert torch.equal(pred.model.template, model.template) and not pred.model.training
    assert not pred.keeps_background
    img, mask = _inputs()
    x = pred.prepare(img, mask)
    assert x.shape == (1, 4, 64, 32)
    assert torch.all(x[0, :3][:, ~torch.from_numpy(mask)] == 1.0)  # trained on white: bg dropped
    rec = pred.reconstruct(img, mask)
    assert rec.vertices.shape == (642, 3) and -180 <= rec.camera.azimuth <= 180
    assert rec.render(azimuth=90.0).shape == (64, 32, 3)
    assert load_casl(path / "model_final.pt").image_size == (32, 64)


def test_predictor_takes_a_config_object_too():
    cfg = update_config(CaslTrainConfig(), {"data.image_size": (32, 64)})
    pred = CaslPredictor(build_model(cfg)[0], cfg)
    assert pred.config == config_to_dict(cfg) and pred.keeps_background


def test_foreign_and_mismatched_checkpoints(tmp_path, run):
    torch.save({"x": 1}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError):
        load_casl(tmp_path / "foreign.pt")
    with pytest.raises(FileNotFoundError):
        load_casl(tmp_path / "missing.pt")
    path, model = run
    cfg = update_config(CaslTrainConfig(), {"data.image_size": (32, 64), "net.shape_hidden": 32})
    save_checkpoint(tmp_path / "mismatch.pt", "casl", {"model": model.state_dict(),
                                                       "config": config_to_dict(cfg)})
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_casl(tmp_path / "mismatch.pt")


def test_inference_does_not_import_the_trainer():
    code = ("import sys, mirror3d.models.casl, mirror3d.models.casl.viz; "
            "bad = [m for m in sys.modules if m.startswith(('mirror3d.engine', 'mirror3d.platform', "
            "'mirror3d.jobs', 'ray'))]; print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
