"""load_casl / CaslPredictor: a model rebuilt from the config its checkpoint holds, without the
trainer (nothing in mirror3d.models imports mirror3d.engine or mirror3d.platform)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

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


# ------------------------------------------------------------------------------ bad inputs
@pytest.fixture(scope="module")
def predictor(run):
    return load_casl(run[0])


def _bad_cases():
    img, mask = _inputs()
    f = img.astype(np.float32) / 255.0
    nan_img = f.copy()
    nan_img[3, 4, 1] = np.nan
    inf_img = f.copy()
    inf_img[5, 6, 0] = np.inf
    return [
        ("empty mask", img, np.zeros_like(mask), "mask", "empty"),
        ("full mask", img, np.ones_like(mask), "mask", "whole image"),
        ("mask size", img, np.ones((32, 16), bool), "mask", r"expected shape \(64, 32\)"),
        ("transposed mask", img, mask.T, "mask", r"expected shape \(64, 32\)"),
        ("gray image", img[..., 0], mask, "image", "H×W×3"),
        ("rgba image", np.dstack([img, np.full((64, 32), 255, np.uint8)]), mask, "image", "4 channels"),
        ("int16 image", img.astype(np.int16), mask, "image", "dtype int16"),
        ("int64 tensor", torch.from_numpy(img.astype(np.int64)), mask, "image", "dtype int64"),
        ("nan image", nan_img, mask, "image", "finite"),
        ("inf image", inf_img, mask, "image", "finite"),
        ("nan tensor", torch.from_numpy(nan_img), mask, "image", "finite"),
        ("0..255 floats", img.astype(np.float32), mask, "image", r"in \[0, 1\].*0\.\.255"),
        ("negative floats", f - 0.5, mask, "image", r"in \[0, 1\]"),
        ("0..255 float tensor", torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1), mask,
         "image", r"in \[0, 1\]"),
        ("nan mask", img, np.where(mask, np.nan, 0.0), "mask", "finite"),
        ("mask floats in (0, 1)", img, mask * 0.7, "mask", r"0/1 or 0/255, got values \{0, 0\.7\}"),
        ("mask ints over 255", img, mask.astype(np.int32) * 1000, "mask", "0/1 or 0/255"),
        ("soft uint8 mask", img, (mask * 200).astype(np.uint8), "mask", "threshold it first"),
        ("rgb PIL mask", img, Image.fromarray(np.repeat(mask[..., None], 3, 2).astype(np.uint8) * 255),
         "mask", "one-channel PIL mask"),
    ]


@pytest.mark.parametrize("case", _bad_cases(), ids=lambda c: c[0])
def test_bad_inputs_raise_one_clear_value_error(predictor, tmp_path, monkeypatch, case):
    _, img, mask, arg, what = case
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=f"^{arg}: .*{what}"):
        predictor.reconstruct(img, mask)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_refine_steps_must_be_a_count(predictor):
    img, mask = _inputs()
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="refine_steps"):
            predictor.reconstruct(img, mask, refine_steps=bad)


def test_accepted_forms_of_image_and_mask_agree(predictor):
    """uint8, [0, 1] floats (array or CHW tensor) and PIL images give the same input; bool,
    0/1 uint8 (not "empty"), 0/255 uint8, [0, 1] floats, an H×W×1 mask and a PIL mask too."""
    img, mask = _inputs()
    ref = predictor.prepare(img, mask)
    f = img.astype(np.float64) / 255.0
    for im in (f, f.astype(np.float32), torch.from_numpy(f).permute(2, 0, 1),
               Image.fromarray(img)):
        assert torch.equal(predictor.prepare(im, mask), ref)
    for m in (mask.astype(np.uint8), mask.astype(np.uint8) * 255, mask.astype(np.float32),
              mask[..., None], torch.from_numpy(mask), Image.fromarray(mask.astype(np.uint8) * 255),
              Image.fromarray(mask.astype(np.uint8))):
        assert torch.equal(predictor.prepare(img, m), ref)
    # a PIL gray image is converted to RGB on purpose (the channels replicated)
    gray = Image.fromarray(img[..., 0])
    assert torch.equal(predictor.prepare(gray, mask),
                       predictor.prepare(np.repeat(img[..., :1], 3, axis=2), mask))
    # a 0/1 uint8 mask reconstructs like the bool mask
    a = predictor.reconstruct(img, mask.astype(np.uint8))
    b = predictor.reconstruct(img, mask)
    assert torch.equal(a.vertices, b.vertices)


def test_a_mask_too_small_for_the_model_size_is_refused(predictor):
    img = (np.random.default_rng(1).random((640, 320, 3)) * 255).astype(np.uint8)
    mask = np.zeros((640, 320), bool)
    mask[3, 3] = True  # one pixel: nothing survives the nearest resize to 32x64
    with pytest.raises(ValueError, match="^mask: no foreground pixel left"):
        predictor.reconstruct(img, mask)
