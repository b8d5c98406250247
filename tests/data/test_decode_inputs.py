"""Inputs of the Python API and of the lifting job (issue #16, class 1 "silent wrong results"):
``reconstruct`` refuses NaN / inf and undeclared 0..255 floats, takes declared ones, takes 0/1
and 0/255 masks and refuses soft ones; ``lift_image`` and the demo take masks by the same rule;
the lifting job counts a mask of another size than its image (never resizes it unless asked),
an image over the pixel cap and a 1×1 image as bad input with their reasons, and lifts a 16-bit
image in its own colours (not white)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import dataset_fixtures as fx
from lifting.lift_fixtures import lift_cfg
from mirror3d.data.masks import binary_mask_array
from mirror3d.engine.casl_train import CaslTrainConfig
from mirror3d.engine.demo_inputs import InputError, resolve_mask
from mirror3d.lifting.lifter import META_DIR, ShardLifter
from mirror3d.lifting.modes import LiftParams, lift_image
from mirror3d.lifting.plan import ShardJob
from mirror3d.lifting.reconstructors import build_reconstructor
from mirror3d.lifting.shards import read_shards
from mirror3d.models.casl import CaslPredictor, MaskError
from mirror3d.models.casl.step import build_model
from mirror3d.utils.config import update_config


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    cfg = update_config(CaslTrainConfig(), {"data.image_size": (16, 32), "data.bg": True})
    return CaslPredictor(build_model(cfg)[0], cfg)


def _inputs():
    img = (np.random.default_rng(0).random((32, 16, 3)) * 255).astype(np.uint8)
    mask = np.zeros((32, 16), bool)
    mask[4:28, 4:12] = True
    return img, mask


# ------------------------------------------------------------------------ reconstruct
def test_nan_inf_and_undeclared_0_255_floats_are_refused(predictor):
    img, mask = _inputs()
    f = img.astype(np.float32)
    for bad, words in [(np.where(img > 128, np.nan, f / 255), "finite"),
                       (np.where(img > 128, np.inf, f / 255), "finite"),
                       (f, r"in \[0, 1\].*float_range='0\.\.255'"),
                       (torch.from_numpy(f), r"in \[0, 1\]")]:
        with pytest.raises(ValueError, match=f"^image: .*{words}") as ei:
            predictor.reconstruct(bad, mask)
        assert "\n" not in str(ei.value)
    with pytest.raises(ValueError, match=r"^image: expected float values in \[0, 255\]"):
        predictor.reconstruct(f * 2, mask, float_range="0..255")  # declared, still checked
    with pytest.raises(ValueError, match="^float_range"):
        predictor.reconstruct(f, mask, float_range="0..65535")


def test_declared_0_255_floats_equal_uint8(predictor):
    img, mask = _inputs()
    ref = predictor.prepare(img, mask)
    assert torch.equal(predictor.prepare(img.astype(np.float32), mask, float_range="0..255"), ref)
    a = predictor.reconstruct(img.astype(np.float64), mask, float_range="0..255")
    assert torch.equal(a.vertices, predictor.reconstruct(img, mask).vertices)


def test_masks_0_1_and_0_255_of_any_dtype_are_masks_soft_ones_refused(predictor):
    img, mask = _inputs()
    ref = predictor.prepare(img, mask)
    for m in (mask.astype(np.uint8), mask.astype(np.uint8) * 255, mask.astype(np.int64),
              mask * 255.0, mask.astype(np.float32), torch.from_numpy(mask.astype(np.uint8)),
              Image.fromarray(mask.astype(np.uint8)), Image.fromarray(mask)):
        assert torch.equal(predictor.prepare(img, m), ref)
    soft = np.where(mask, 200, 30).astype(np.uint8)
    with pytest.raises(ValueError, match=r"^mask: .*0/1 or 0/255, got values \{30, 200\}"):
        predictor.reconstruct(img, soft)
    with pytest.raises(MaskError, match="^mask: empty"):
        predictor.reconstruct(img, np.zeros((32, 16), np.uint8))
    with pytest.raises(ValueError, match="one-channel PIL mask"):
        predictor.reconstruct(img, Image.fromarray(np.dstack([mask.astype(np.uint8)] * 3)))


def test_pil_images_go_through_the_one_decoder(predictor):
    img, mask = _inputs()
    v16 = (img[..., 0].astype(np.uint16) * 257)  # 16-bit grey of the red channel
    want = np.repeat(img[..., :1], 3, axis=2)
    assert torch.equal(predictor.prepare(Image.fromarray(v16), mask), predictor.prepare(want, mask))
    rgba = np.dstack([img, np.zeros((32, 16), np.uint8)])  # fully transparent: white
    white = np.full_like(img, 255)
    assert torch.equal(predictor.prepare(Image.fromarray(rgba, "RGBA"), mask),
                       predictor.prepare(white, mask))
    with pytest.raises(ValueError, match="^image: 32-bit float"):
        predictor.prepare(Image.fromarray(img[..., 0].astype(np.float32)), mask)


# ------------------------------------------------------------------------ lift_image, masks
def test_lift_image_takes_0_255_masks_like_bool_ones():
    img, mask = _inputs()
    params = LiftParams(num_points=64, min_points=0)
    rec = build_reconstructor("oracle-template")
    a = lift_image(img, mask, "casl-visible+bg", rec, params, seed=3)
    b = lift_image(img, mask.astype(np.uint8) * 255, "casl-visible+bg", rec, params, seed=3)
    np.testing.assert_array_equal(a.points, b.points)
    with pytest.raises(ValueError, match="^mask: expected a bool mask or values 0/1 or 0/255"):
        lift_image(img, mask * 0.5, "casl-visible+bg", rec, params, seed=3)
    assert binary_mask_array(mask.astype(np.uint8)).sum() == mask.sum()  # 0/1 uint8: not empty


# ------------------------------------------------------------------------ the lifting job
def test_lifting_counts_mismatched_masks_huge_and_tiny_images_with_reasons(tmp_path):
    root = tmp_path / "data"
    image, mask = fx.person_pair(16, 32, (0.5, 0.7), seed=1)
    grey16 = np.arange(32 * 16, dtype=np.uint16).reshape(32, 16) * 100 + 10000
    files = {
        "good": (fx.write_rgb(root / "good.png", array=image), mask),
        "wide_mask": (fx.write_rgb(root / "wide.png", array=image), np.pad(mask, ((0, 0), (0, 2)))),
        "one": (root / "one.png", np.ones((1, 1), bool)),
        "big": (root / "big.png", np.ones((8, 8), bool)),
        "grey16": (root / "grey16.png", mask),
    }
    Image.new("RGB", (1, 1), (5, 5, 5)).save(files["one"][0])
    Image.new("L", (3000, 2000), 77).save(files["big"][0])  # 6 M pixels, over a 5 M cap
    Image.fromarray(grey16).save(files["grey16"][0])
    paths = [str(p) for p, _ in files.values()]
    masks = [str(fx.write_mask(root / f"{name}_mask.png", m.astype(np.uint8) * 255))
             for name, (_, m) in files.items()]
    cfg = lift_cfg({"root": str(root), "masks": str(root)}, tmp_path, image_size=None,
                   num_points=4096, min_points=0, max_pixels=5_000_000)  # default 25 M
    job = ShardJob("train-00000", "train", paths, masks, [f"k{i}" for i in range(len(paths))],
                   [1] * len(paths), [1] * len(paths))
    meta = ShardLifter(cfg).lift_job(job)
    reasons = dict(meta["bad"])
    assert meta["images"] == 5 and meta["rows"] == 2 and len(reasons) == 3
    assert reasons[paths[1]] == f"mask {masks[1]} is 18x32 but the image is 16x32 (W x H)"
    assert reasons[paths[2]] == (f"image {paths[2]}: 1x1 pixels, smaller than the 8-pixel "
                                 f"minimum side (min_side)")
    assert reasons[paths[3]] == (f"image {paths[3]}: 3000x2000 pixels, more than the "
                                 f"5,000,000-pixel limit (max_pixels)")
    rows = read_shards(cfg.out_dir() / "train-00000.parquet")
    assert list(rows.path) == [paths[0], paths[4]]
    colours = rows.points[1][:, 3:6]  # the 16-bit image's points: its greys, not white
    grey8 = np.round(grey16.astype(np.float64) * 255 / 65535) / 255
    assert np.array_equal(colours[:, 0], colours[:, 1]) and np.array_equal(colours[:, 0], colours[:, 2])
    assert grey8.min() - 1e-6 <= colours.min() and colours.max() <= grey8.max() + 1e-6 < 0.95
    assert (cfg.out_dir() / META_DIR / "train-00000.json").exists()


def test_the_demo_takes_masks_by_the_same_rule():
    img, mask = _inputs()
    for m in (mask, mask.astype(np.uint8), mask.astype(np.uint8) * 255, mask * 1.0):
        assert np.array_equal(resolve_mask(img, m)[0], mask)
    with pytest.raises(InputError, match=r"^mask: expected a bool mask or values 0/1 or 0/255"):
        resolve_mask(img, np.where(mask, 180, 20).astype(np.uint8))
