"""Mask loading, binarisation, ratios, ratio filter and GrabCut mask estimation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from mirror3d.data.masks import (
    check_nonempty,
    estimate_mask,
    foreground_ratio,
    keep_by_ratio,
    load_binary_mask,
    load_rgb,
    mask_name_with_ratio,
    ratio_from_filename,
    strip_ratio_suffix,
)
from mirror3d.data.records import ReconRecord


def _write_l(path, values):
    Image.fromarray(np.asarray(values, np.uint8)).save(path)
    return path


def test_load_binary_mask_thresholds(tmp_path):
    values = np.array([[0, 1, 100], [160, 161, 255]], np.uint8)
    path = _write_l(tmp_path / "m.png", values)
    np.testing.assert_array_equal(load_binary_mask(path, 0), values > 0)
    np.testing.assert_array_equal(load_binary_mask(path, 160), [[False, False, False], [False, True, True]])
    with pytest.raises(ValueError, match="threshold"):
        load_binary_mask(path, 300)


def test_load_binary_mask_palette_uses_label_indices(tmp_path):
    labels = np.array([[0, 3], [17, 0]], np.uint8)
    img = Image.frombytes("P", (2, 2), labels.tobytes())
    img.putpalette([0, 0, 0] * 256)  # every label black
    img.save(tmp_path / "p.png")
    np.testing.assert_array_equal(load_binary_mask(tmp_path / "p.png", 0), labels > 0)


def test_load_rgb_corrupt_and_missing(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        load_rgb(bad)
    with pytest.raises(FileNotFoundError, match="nothere.png"):
        load_binary_mask(tmp_path / "nothere.png")


def test_foreground_ratio():
    mask = np.zeros((4, 5), bool)
    mask[1:3, 1:4] = True
    assert foreground_ratio(mask) == pytest.approx(6 / 20)
    assert foreground_ratio(torch.from_numpy(mask.astype(np.uint8))) == pytest.approx(6 / 20)
    with pytest.raises(ValueError, match="0 and 1"):
        foreground_ratio(np.full((2, 2), 3))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        foreground_ratio(np.zeros((2, 2, 2), bool))


def test_ratio_from_filename():
    assert ratio_from_filename("0002_c1s1_000451_03.jpg_0.45.png") == pytest.approx(0.45)
    assert ratio_from_filename("/a/b/dataset10k_1848_0.20.png") == pytest.approx(0.20)
    assert strip_ratio_suffix("dataset10k_1848_0.20.png") == "dataset10k_1848"
    assert mask_name_with_ratio("img.jpg", 0.4512) == "img.jpg_0.45.png"
    with pytest.raises(ValueError, match="img.jpg.png"):
        ratio_from_filename("img.jpg.png")
    with pytest.raises(ValueError, match="outside"):
        ratio_from_filename("img.jpg_1.50.png")


def _rec(ratio):
    return ReconRecord(image_path=f"img_{ratio}.png", mask_path="m.png", mask_estimated=False,
                       split="train", fg_ratio=ratio, dataset="t")


def test_keep_by_ratio_is_strict():
    records = [_rec(r) for r in (0.09, 0.0901, 0.36, 0.6399, 0.64, 0.8)]
    kept = keep_by_ratio(records, 0.09, 0.64)
    assert [r.fg_ratio for r in kept] == [0.0901, 0.36, 0.6399]
    with pytest.raises(ValueError, match="lo < hi"):
        keep_by_ratio(records, 0.5, 0.5)
    with pytest.raises(ValueError, match="img_none.png"):
        keep_by_ratio([dataclasses.replace(_rec(0.3), fg_ratio=None, image_path="img_none.png")], 0.1, 0.5)


def test_check_nonempty_names_file():
    check_nonempty(np.ones((2, 2), bool), "ok.png")
    with pytest.raises(ValueError, match="empty_mask.png"):
        check_nonempty(np.zeros((2, 2), bool), "empty_mask.png")


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize("size,blob", [((48, 96), (20, 60)), ((64, 64), (30, 30))])
def test_estimate_mask_covers_centred_blob(size, blob):
    w, h = size
    rng = np.random.default_rng(0)
    image = np.zeros((h, w, 3), np.uint8) + np.array([190, 200, 205], np.uint8)
    image += rng.integers(0, 8, size=image.shape, dtype=np.uint8)  # mild noise
    truth = np.zeros((h, w), bool)
    x0, y0 = (w - blob[0]) // 2, (h - blob[1]) // 2
    truth[y0:y0 + blob[1], x0:x0 + blob[0]] = True
    image[truth] = np.array([40, 70, 150], np.uint8)
    mask = estimate_mask(image)
    assert mask.shape == (h, w) and mask.dtype == bool
    assert _iou(mask, truth) > 0.7
    np.testing.assert_array_equal(mask, estimate_mask(image))  # deterministic


def test_estimate_mask_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        estimate_mask(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="box_fraction"):
        estimate_mask(np.zeros((10, 10, 3), np.uint8), box_fraction=(0.0, 1.0))
