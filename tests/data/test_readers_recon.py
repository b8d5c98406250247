"""Reconstruction readers on tiny trees in the Market-HQ / ATR / CUB / generic layouts."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mirror3d.data.masks import load_binary_mask
from mirror3d.data.readers.recon import (
    market_hq_image_path,
    read_atr,
    read_cub,
    read_image_folder,
    read_market_hq,
    read_recon,
)


import dataset_fixtures as fx  # noqa: E402


# ---------------------------------------------------------------------------- Market-HQ


def test_market_hq_image_path_derivation():
    mask = Path("/d/Market/hq/seg_hmr/train_all/0002/0002_c1s1_000451_03.jpg_0.45.png")
    assert market_hq_image_path(mask) == Path("/d/Market/hq/pytorch/train_all/0002/0002_c1s1_000451_03.jpg.png")
    with pytest.raises(ValueError, match="<img>.jpg_<r.rr>.png"):
        market_hq_image_path("/d/hq/seg_hmr/query/0002/0002_c1s1_000451_03.jpg.png")


def test_market_hq_counts_paths_and_ratios(tmp_path):
    root = fx.make_market_hq(tmp_path)
    records, summary = read_market_hq(root)
    assert (summary.splits["train"].images, summary.splits["train"].ids) == (5, 2)
    assert (summary.splits["test"].images, summary.splits["test"].ids) == (2, 2)
    for r in records:
        mask_name = Path(r.mask_path).name
        assert Path(r.image_path).name == mask_name[: mask_name.rindex("_")] + ".png"
        assert "/pytorch/" in r.image_path and "/seg_hmr/" in r.mask_path
        assert Path(r.image_path).is_file()
        # the ratio in the name is the mask's own foreground fraction, 2 decimals
        assert r.fg_ratio == pytest.approx(load_binary_mask(r.mask_path, 0).mean(), abs=0.005)
        assert r.pid == int(Path(r.mask_path).parent.name)
        assert not r.mask_estimated
    assert {r.split for r in records if "/train_all/" in r.mask_path} == {"train"}
    assert {r.split for r in records if "/query/" in r.mask_path} == {"test"}


def test_market_hq_bad_mask_name(tmp_path, caplog):
    root = fx.make_market_hq(tmp_path, bad_name=True)
    with pytest.raises(ValueError) as err:
        read_market_hq(root)
    assert "0002_c1s1_009999_01.jpg.png" in str(err.value) and "<r.rr>" in str(err.value)
    with caplog.at_level(logging.WARNING):
        records, summary = read_market_hq(root, skip_bad=True)
    assert summary.skipped == 1 and len(records) == 7
    assert any("skipped 1" in r.getMessage() for r in caplog.records)


def test_market_hq_missing_rgb_names_both_paths(tmp_path):
    root = fx.make_market_hq(tmp_path, missing_rgb=True)
    with pytest.raises(FileNotFoundError) as err:
        read_market_hq(root)
    msg = str(err.value)
    assert "pytorch/train_all/0007/0007_c1s1_001000_01.jpg.png" in msg
    assert "seg_hmr/train_all/0007/0007_c1s1_001000_01.jpg_" in msg
    _, summary = read_market_hq(root, skip_bad=True)
    assert summary.skipped == 1 and summary.splits["train"].images == 4


def test_market_hq_missing_split_folder(tmp_path):
    root = fx.make_market_hq(tmp_path, missing="query")
    with pytest.raises(FileNotFoundError) as err:
        read_market_hq(root)
    assert str(root / "seg_hmr" / "query") in str(err.value)
    assert "seg_hmr/<split>/<pid>" in str(err.value)
    records, _ = read_market_hq(root, splits=("train_all",))
    assert len(records) == 5


# ---------------------------------------------------------------------------- ATR


def test_atr_label_greater_than_zero_rule(tmp_path):
    """Labels 1..17 in a palette PNG whose palette is all black: foreground = raw label > 0."""
    root = fx.make_atr(tmp_path, with_lists=False)
    records, summary = read_atr(root)
    assert summary.splits["all"].images == 4
    by_name = {Path(r.image_path).stem: r for r in records}
    for name in fx.ATR_NAMES:
        truth = fx.atr_labels(name) > 0
        rec = by_name[name]
        assert rec.split == "all"
        assert rec.fg_ratio == pytest.approx(truth.mean())
        np.testing.assert_array_equal(load_binary_mask(rec.mask_path, rec.mask_threshold), truth)
    # the palette maps every label to black: a grey conversion would see no person at all
    grey = np.asarray(Image.open(by_name["997_2"].mask_path).convert("L"))
    assert grey.max() == 0


def test_atr_split_lists_and_prepared_seg(tmp_path):
    root = fx.make_atr(tmp_path, with_seg=("997_2",))
    records, summary = read_atr(root, {"train": tmp_path / "ATR_train.txt", "test": tmp_path / "ATR_test.txt"})
    assert summary.splits["train"].images == 3 and summary.splits["test"].images == 1
    by_name = {Path(r.image_path).stem: r for r in records}
    assert by_name["4565_40"].split == "test"
    # the prepared Seg/<name>_<ratio>.png wins and its ratio is read from the name
    assert Path(by_name["997_2"].mask_path).parent.name == "Seg"
    assert by_name["997_2"].fg_ratio == pytest.approx(16 * 8 / 240, abs=0.005)
    # list ratios (2 decimals) are used for the others
    assert by_name["fash_3"].fg_ratio == pytest.approx((fx.atr_labels("fash_3") > 0).mean(), abs=0.005)
    assert Path(by_name["fash_3"].mask_path).parent.name == "SegmentationClassAug"


def test_atr_missing_folder_and_list(tmp_path):
    root = fx.make_atr(tmp_path, missing="SegmentationClassAug")
    with pytest.raises(FileNotFoundError, match="SegmentationClassAug"):
        read_atr(root)
    root2 = fx.make_atr(tmp_path / "b")
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_atr(root2, {"train": tmp_path / "nope.txt"})


# ---------------------------------------------------------------------------- CUB


def test_cub_split_bbox_class_and_ratio(tmp_path):
    root = fx.make_cub(tmp_path)
    records, summary = read_cub(root)
    assert summary.splits["train"].images == 2 and summary.splits["test"].images == 2
    assert len(records) == 4
    for image_id, rec in zip(sorted(fx.CUB_TABLE), records):
        cls, is_train, bbox = fx.CUB_TABLE[image_id]
        assert rec.split == ("train" if is_train else "test")
        assert rec.pid == cls
        assert rec.bbox == bbox
        assert rec.mask_threshold == 160
        assert Path(rec.mask_path).suffix == ".png" and Path(rec.mask_path).parent.parent.name == "segmentations"
    # id 1: bbox (10, 5, 20, 20) enlarged by 2 px per side -> [8, 32) x [3, 27), 24 x 24 = 576 pixels;
    # the mask is > 0 on [9, 31) x [4, 26) = 22 x 22 = 484 of them.
    assert records[0].fg_ratio == pytest.approx(484 / 576)
    # id 4: bbox (30, 20, 12, 12) clamped at the image border -> [28, 40) x [18, 30) = 144 pixels,
    # mask > 0 on [29, 40) x [19, 30) = 121.
    assert records[3].fg_ratio == pytest.approx(121 / 144)


def test_cub_soft_mask_threshold_160(tmp_path):
    root = fx.make_cub(tmp_path)
    records, _ = read_cub(root)
    mask = load_binary_mask(records[0].mask_path, records[0].mask_threshold)
    np.testing.assert_array_equal(mask, fx.cub_mask(1) > 160)
    assert mask.sum() < (fx.cub_mask(1) > 0).sum()


def test_cub_missing_table(tmp_path):
    root = fx.make_cub(tmp_path, missing="bounding_boxes.txt")
    with pytest.raises(FileNotFoundError) as err:
        read_cub(root)
    assert str(root / "bounding_boxes.txt") in str(err.value) and "train_test_split.txt" in str(err.value)


# ---------------------------------------------------------------------------- generic folder


def test_folder_with_masks(tmp_path):
    image_dir, mask_dir = fx.make_image_folder(tmp_path)
    records, summary = read_image_folder(image_dir, mask_dir, split="train")
    assert summary.splits["train"].images == 3 and summary.estimated_masks == 0
    for r in records:
        assert not r.mask_estimated and Path(r.mask_path).name == Path(r.image_path).name
        assert r.fg_ratio == pytest.approx(load_binary_mask(r.mask_path, 127).mean())


def test_folder_without_masks_is_estimated(tmp_path):
    image_dir, _ = fx.make_image_folder(tmp_path, with_masks=False)
    records, summary = read_recon("folder", image_dir)
    assert summary.estimated_masks == 3
    assert all(r.mask_estimated and r.mask_path is None and r.fg_ratio is None for r in records)


def test_folder_missing_mask(tmp_path):
    image_dir, mask_dir = fx.make_image_folder(tmp_path)
    (mask_dir / "img1.png").unlink()
    with pytest.raises(FileNotFoundError) as err:
        read_image_folder(image_dir, mask_dir)
    assert str(image_dir / "img1.png") in str(err.value) and str(mask_dir / "img1.png") in str(err.value)
    records, summary = read_image_folder(image_dir, mask_dir, estimate_missing=True)
    assert [r.mask_estimated for r in records] == [False, True, False]
    assert summary.estimated_masks == 1


def test_folder_size_mismatch_checked(tmp_path):
    image_dir, mask_dir = fx.make_image_folder(tmp_path, mismatched=True)
    with pytest.raises(ValueError) as err:
        read_image_folder(image_dir, mask_dir, check_sizes=True)
    assert "img0.png" in str(err.value) and "32x48" in str(err.value) and "33x48" in str(err.value)
