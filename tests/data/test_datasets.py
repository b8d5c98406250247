"""Torch datasets: reconstruction (4-channel), 2D re-id images, in-memory point clouds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mirror3d.data.datasets import (
    PointCloudDataset,
    ReconstructionDataset,
    ReidImageDataset,
    sample_generator,
)
from mirror3d.data.masks import load_binary_mask
from mirror3d.data.readers.recon import read_cub, read_image_folder, read_market_hq
from mirror3d.data.readers.reid import read_market1501


import dataset_fixtures as fx  # noqa: E402


@pytest.fixture
def market_hq(tmp_path):
    records, _ = read_market_hq(fx.make_market_hq(tmp_path))
    return records


# ---------------------------------------------------------------------------- reconstruction


def test_recon_item_format(market_hq):
    ds = ReconstructionDataset(market_hq, image_size=(16, 32), aug="market")
    assert len(ds) == 7
    item = ds[0]
    x = item["image"]
    assert x.shape == (4, 32, 16) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert set(x[3].unique().tolist()) <= {0.0, 1.0}
    assert item["fg_ratio"] == market_hq[0].fg_ratio
    assert item["path"] == market_hq[0].image_path and item["mask_estimated"] is False
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 4, 32, 16) and batch["index"].tolist() == [0, 1, 2]


def test_recon_reproducible_per_seed_and_epoch(market_hq):
    a = ReconstructionDataset(market_hq, image_size=(16, 32), seed=3)
    b = ReconstructionDataset(market_hq, image_size=(16, 32), seed=3)
    for i in range(len(a)):
        assert torch.equal(a[i]["image"], b[i]["image"])
    b.set_epoch(1)
    assert any(not torch.equal(a[i]["image"], b[i]["image"]) for i in range(len(a)))


def test_recon_mask_matches_file_without_aug(market_hq):
    ds = ReconstructionDataset(market_hq, image_size=(16, 32), aug=None)
    for i, rec in enumerate(market_hq):
        truth = torch.from_numpy(load_binary_mask(rec.mask_path, 0)).float()
        assert torch.equal(ds[i]["image"][3], truth)


def test_recon_white_background(market_hq):
    ds = ReconstructionDataset(market_hq, image_size=(16, 32), aug=None, bg=False)
    x = ds[2]["image"]
    bg = x[3] == 0
    assert bg.any() and torch.allclose(x[:3, bg], torch.ones(1))
    kept = ReconstructionDataset(market_hq, image_size=(16, 32), aug=None, bg=True)[2]["image"]
    assert not torch.allclose(kept[:3, bg], torch.ones(1))


def test_recon_ratio_range_and_clean_subset(market_hq):
    ratios = sorted(r.fg_ratio for r in market_hq)
    lo, hi = ratios[1], ratios[-1]
    ds = ReconstructionDataset(market_hq, image_size=(16, 32), ratio_range=(lo, hi))
    # strict on both ends: the two records at lo and hi (and the one below lo) are dropped
    assert len(ds) == sum(lo < r < hi for r in ratios) == len(ratios) - 3
    clean = ds.clean_subset(0.2, 0.4)
    assert [r.fg_ratio for r in clean.records] == [r.fg_ratio for r in ds.records if 0.2 < r.fg_ratio < 0.4]
    assert len(clean) >= 1 and clean.train is False
    resize_only = ReconstructionDataset(clean.records, image_size=(16, 32), aug=None)
    for i in range(len(clean)):
        assert torch.equal(clean[i]["image"], resize_only[i]["image"])  # no augmentation


def test_recon_estimated_mask_flagged_and_covers_blob(tmp_path):
    image_dir, _ = fx.make_image_folder(tmp_path, with_masks=False)
    records, _ = read_image_folder(image_dir)
    ds = ReconstructionDataset(records, image_size=(32, 48), aug=None)
    for i in range(len(ds)):
        item = ds[i]
        assert item["mask_estimated"] is True and item["mask_path"] == ""
        image = np.asarray(Image.open(records[i].image_path).convert("RGB"))
        truth = torch.from_numpy(image[..., 0] < 150)  # the fixture blob is dark on light grey
        est = item["image"][3].bool()
        iou = (est & truth).sum() / (est | truth).sum()
        assert iou > 0.7
        assert item["fg_ratio"] == pytest.approx(est.float().mean().item())
    filtered = ReconstructionDataset(records, image_size=(32, 48), aug=None, ratio_range=(0.0, 0.26))
    assert 1 <= len(filtered) < 3 and all(r.fg_ratio is not None for r in filtered.records)


def test_recon_size_mismatch_names_both(tmp_path):
    image_dir, mask_dir = fx.make_image_folder(tmp_path, mismatched=True)
    records, _ = read_image_folder(image_dir, mask_dir)
    ds = ReconstructionDataset(records, image_size=(16, 24))
    with pytest.raises(ValueError) as err:
        ds[0]
    msg = str(err.value)
    assert str(records[0].image_path) in msg and str(records[0].mask_path) in msg
    assert "32x48" in msg and "33x48" in msg
    assert ds[1]["image"].shape == (4, 24, 16)


def test_recon_corrupt_image_names_path(market_hq):
    Path(market_hq[1].image_path).write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ds = ReconstructionDataset(market_hq, image_size=(16, 32))
    with pytest.raises(ValueError, match=Path(market_hq[1].image_path).name):
        ds[1]


def test_recon_empty_mask_training_only(market_hq):
    rec = market_hq[0]
    Image.fromarray(np.zeros((32, 16), np.uint8)).save(rec.mask_path)
    with pytest.raises(ValueError, match=Path(rec.mask_path).name):
        ReconstructionDataset([rec], image_size=(16, 32))[0]
    item = ReconstructionDataset([rec], image_size=(16, 32), train=False)[0]
    assert item["image"][3].sum() == 0


def test_recon_cub_bbox_crop(tmp_path):
    records, _ = read_cub(fx.make_cub(tmp_path))
    ds = ReconstructionDataset(records, image_size=(16, 16), aug="cub", train=False)
    image, mask = ds.load_pair(records[0])
    assert image.shape == (24, 24, 3) and mask.shape == (24, 24)  # bbox enlarged by 10 % per side
    np.testing.assert_array_equal(mask, fx.cub_mask(1)[3:27, 8:32] > 160)
    assert ds[0]["image"].shape == (4, 16, 16)
    # the 40x30 image with the full-image bbox is padded to a square: top/bottom rows empty
    full = ds[1]["image"]
    assert full[3, 0].sum() == 0 and full[:3, 0].abs().sum() == 0


def test_recon_rejects_wrong_records(tmp_path):
    records, _ = read_market1501(fx.make_market1501(tmp_path))
    with pytest.raises(ValueError, match="ReconRecord"):
        ReconstructionDataset(records)


# ---------------------------------------------------------------------------- 2D re-id


def test_reid_dataset(tmp_path):
    records, _ = read_market1501(fx.make_market1501(tmp_path))
    train = [r for r in records if r.split == "train"]
    ds = ReidImageDataset(train, image_size=(16, 32), train=True)
    item = ds[0]
    assert item["image"].shape == (3, 32, 16) and item["image"].max() <= 1.0
    assert (item["pid"], item["label"], item["camid"]) == (train[0].pid, train[0].label, train[0].camid)
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 32, 16)
    ev = ReidImageDataset([r for r in records if r.split == "gallery"], image_size=(8, 16), train=False)
    a = ev[0]["image"]
    # eval: resize only; the fixture images are solid colours, so every pixel equals the first
    assert torch.allclose(a, a[:, :1, :1].expand_as(a), atol=2 / 255)


# ---------------------------------------------------------------------------- point clouds


def _clouds(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.cat([torch.randn(n, 3, generator=g), torch.rand(n, 3, generator=g) * 0.9], 1) for n in sizes]


def test_point_dataset_fixed_points_and_batches():
    clouds = _clouds([40, 50, 64])
    ds = PointCloudDataset(clouds, pids=[0, 1, 2], camids=[0, 1, 0], num_points=32, seed=1)
    item = ds[1]
    assert item["points"].shape == (32, 6) and item["points"].dtype == torch.float32
    assert (item["pid"], item["camid"]) == (1, 1)
    assert torch.equal(ds[1]["points"], item["points"])  # reproducible
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["points"].shape == (3, 32, 6)
    ev = PointCloudDataset(clouds, pids=[0, 1, 2], num_points=32, train=False)
    assert torch.allclose(ev[0]["points"][:, 3:] + 0.5, clouds[0][torch.linspace(0, 39, 32).long(), 3:])


def test_point_dataset_short_and_nan():
    clouds = _clouds([10, 40])
    with pytest.raises(ValueError, match="walker_a"):
        PointCloudDataset(clouds, [0, 1], num_points=16, names=["walker_a", "walker_b"])[0]
    padded = PointCloudDataset(clouds, [0, 1], num_points=16, short="repeat", train=False)[0]["points"]
    assert padded.shape == (16, 6)
    bad = _clouds([20])
    bad[0][4, 2] = float("nan")
    with pytest.raises(ValueError, match=r"cloud\[0\]"):
        PointCloudDataset(bad, [0], num_points=8)[0]
    with pytest.raises(ValueError, match="same length"):
        PointCloudDataset(clouds, [0])


def test_sample_generator_depends_on_all_parts():
    draws = {(s, e, i): torch.rand(4, generator=sample_generator(s, e, i)) for s in (0, 1) for e in (0, 1) for i in (0, 1)}
    keys = list(draws)
    for a in range(len(keys)):
        for b in range(a + 1, len(keys)):
            assert not torch.equal(draws[keys[a]], draws[keys[b]])
    assert torch.equal(draws[(0, 1, 1)], torch.rand(4, generator=sample_generator(0, 1, 1)))
