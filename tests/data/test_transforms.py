"""Reconstruction image+mask augmentations and OG-Net point-cloud augmentations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mirror3d.data.transforms import (
    AtrAugment,
    CubAugment,
    MarketAugment,
    PointCloudAugment,
    ResizeOnly,
    blank_mask,
    build_recon_transform,
    center_xyz,
    check_points,
    enlarged_bbox,
    reference_random_crop_box,
    resize_pair,
    scale_and_jitter,
    select_points,
    to_four_channel,
)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _blobby(w, h, seed=0):
    """Random bright/dark blocks; the mask is derived from the image itself (red > 127)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(h // 4, w // 4, 3), dtype=np.uint8)
    image = np.kron(coarse, np.ones((4, 4, 1), np.uint8))
    image[..., 0] = np.where(image[..., 0] > 127, 220, 30)
    return image, image[..., 0] > 127


# ---------------------------------------------------------------------------- Market style


def test_market_aug_matches_naive_pad_crop_flip():
    image, mask = _blobby(64, 128)
    aug = MarketAugment((64, 128), resample="nearest")
    for seed in range(12):
        out = aug(image, mask, _gen(seed))
        dx, dy = out.params["offset"]
        padded = np.zeros((148, 84, 3), np.uint8)
        padded[10:138, 10:74] = image
        expected = padded[dy:dy + 128, dx:dx + 64]
        if out.params["flipped"]:
            expected = expected[:, ::-1]
        np.testing.assert_array_equal(out.image, expected)
        # image and mask stay aligned: the mask equals the thresholded transformed image
        np.testing.assert_array_equal(out.mask, out.image[..., 0] > 127)


def test_market_aug_offsets_in_range_and_flip_rate():
    image, mask = _blobby(16, 32)
    aug = MarketAugment((16, 32))
    g = _gen(123)
    offsets, flips = [], []
    for _ in range(2000):
        out = aug(image, mask, g)
        offsets.append(out.params["offset"])
        flips.append(out.params["flipped"])
        assert out.image.shape == (32, 16, 3) and out.mask.shape == (32, 16)
    offsets = np.array(offsets)
    assert offsets.min() == 0 and offsets.max() == 20
    assert set(np.unique(offsets[:, 0])) == set(range(21))
    assert 0.45 < np.mean(flips) < 0.55


def test_market_aug_reproducible_and_eval_is_resize():
    image, mask = _blobby(32, 64, seed=1)
    aug = MarketAugment((16, 32))
    a, b = aug(image, mask, _gen(5)), aug(image, mask, _gen(5))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.params == b.params
    ev = MarketAugment((16, 32), train=False)(image, mask, _gen(5))
    ref_img, ref_mask = resize_pair(image, mask, (16, 32))
    np.testing.assert_array_equal(ev.image, ref_img)
    np.testing.assert_array_equal(ev.mask, ref_mask)
    none = build_recon_transform(None, (16, 32))(image, mask)
    np.testing.assert_array_equal(none.image, ref_img)


# ---------------------------------------------------------------------------- ATR / CUB style


def test_reference_crop_box_bounds():
    g = _gen(0)
    W, H = 116, 180  # a 96x160 image padded by 10
    for _ in range(500):
        left, upper, right, lower = reference_random_crop_box(W, H, g)
        assert 0 <= left <= W - int(0.95 * W) and 0 <= upper <= H - int(0.95 * H)
        assert right <= W and lower <= H
        assert right >= int(0.95 * W) - left and lower >= int(0.95 * H) - upper
        assert 0.8 * W <= right - left <= W and 0.8 * H <= lower - upper <= H


def test_atr_aug_keeps_alignment_and_size():
    image, mask = _blobby(48, 80, seed=2)
    aug = AtrAugment((24, 40), resample="nearest")
    flips = 0
    for seed in range(40):
        out = aug(image, mask, _gen(seed))
        assert out.image.shape == (40, 24, 3)
        np.testing.assert_array_equal(out.mask, out.image[..., 0] > 127)
        flips += out.params["flipped"]
    assert 0 < flips < 40


def test_cub_eval_pads_to_centred_square():
    image = np.full((10, 20, 3), 255, np.uint8)  # W = 20, H = 10
    mask = np.ones((10, 20), bool)
    out = CubAugment((20, 20), train=False, resample="nearest")(image, mask)
    assert out.image.shape == (20, 20, 3)
    np.testing.assert_array_equal(out.mask[:5], False)
    np.testing.assert_array_equal(out.mask[5:15], True)
    np.testing.assert_array_equal(out.mask[15:], False)
    np.testing.assert_array_equal(out.image[..., 1] > 127, out.mask)


def test_cub_train_output_is_square_and_aligned():
    image, mask = _blobby(40, 28, seed=3)
    for seed in range(10):
        out = CubAugment((16, 16), resample="nearest")(image, mask, _gen(seed))
        assert out.image.shape == (16, 16, 3)
        np.testing.assert_array_equal(out.mask, out.image[..., 0] > 127)


def test_enlarged_bbox():
    assert enlarged_bbox((10, 5, 20, 20), 40, 30) == (8, 3, 32, 27)
    assert enlarged_bbox((30, 20, 12, 12), 40, 30) == (28, 18, 40, 30)
    with pytest.raises(ValueError, match="bbox"):
        enlarged_bbox((0, 0, 0, 5), 40, 30)


def test_to_four_channel_and_white_background():
    image = np.full((4, 3, 3), 51, np.uint8)
    mask = np.zeros((4, 3), bool)
    mask[1:3, 1] = True
    x = to_four_channel(image, mask, bg=True)
    assert x.shape == (4, 4, 3) and x.dtype == torch.float32
    assert torch.allclose(x[:3], torch.full((3, 4, 3), 0.2))
    assert torch.equal(x[3], torch.from_numpy(mask).float())
    white = to_four_channel(image, mask, bg=False)
    assert torch.allclose(white[:3, ~torch.from_numpy(mask)], torch.ones(1))
    assert torch.allclose(white[:3, torch.from_numpy(mask)], torch.full((1,), 0.2))


def test_transform_input_checks():
    with pytest.raises(ValueError, match="does not match"):
        ResizeOnly((8, 8))(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match="uint8"):
        ResizeOnly((8, 8))(np.zeros((4, 4, 3), np.float32), None)
    with pytest.raises(ValueError, match="aug"):
        build_recon_transform("lsp", (8, 8))


# ---------------------------------------------------------------------------- point clouds


def _cloud(n, seed=0, blank=()):
    g = _gen(seed)
    pts = torch.cat([torch.randn(n, 3, generator=g) + 2.0, torch.rand(n, 3, generator=g) * 0.9], dim=1)
    for i in blank:
        pts[i, 3:] = 1.0
    return pts


def test_center_and_blank():
    pts = _cloud(20, blank=(3, 7))
    c = center_xyz(pts)
    assert torch.allclose(c[:, :3].mean(0), torch.zeros(3), atol=1e-6)
    assert torch.equal(c[:, 3:], pts[:, 3:])
    assert blank_mask(pts).nonzero().flatten().tolist() == [3, 7]


def test_select_points_evenly_spaced_and_blank_fill():
    pts = _cloud(10)
    assert select_points(pts, 4).tolist() == [0, 3, 6, 9]  # int(linspace(0, 9, 4))
    pts = _cloud(10, blank=(0, 1, 2, 3, 4, 5, 6))  # 3 non-blank: 7, 8, 9
    idx = select_points(pts, 5).tolist()
    # all non-blank plus 2 evenly spaced blank points (blank indices 0..6 -> positions 0 and 6)
    assert idx == [0, 6, 7, 8, 9]
    rnd = select_points(_cloud(10), 6, random_subset=True, generator=_gen(1))
    assert rnd.tolist() == sorted(set(rnd.tolist())) and len(rnd) == 6


def test_select_points_short_cloud():
    pts = _cloud(3)
    with pytest.raises(ValueError, match="sample_42"):
        select_points(pts, 5, name="sample_42")
    assert select_points(pts, 7, short="repeat").tolist() == [0, 0, 0, 1, 1, 2, 2]


def test_scale_and_jitter_ranges():
    pts = _cloud(500, seed=3)
    g = _gen(0)
    jit = scale_and_jitter(pts, g, scale_range=(1.0, 1.0))
    assert (jit[:, :3] - pts[:, :3]).abs().max() <= 0.01 + 1e-6
    assert (jit[:, :3] - pts[:, :3]).abs().max() > 0.005
    assert torch.equal(jit[:, 3:], pts[:, 3:])
    scaled = scale_and_jitter(pts, g, sigma=0.0)
    ratio = scaled[:, :3] / pts[:, :3]
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), atol=1e-5)  # one factor per axis
    assert ((ratio[0] >= 0.75) & (ratio[0] <= 1.33)).all()


def test_point_augment_train_and_eval():
    pts = _cloud(40, seed=4, blank=(0, 5))
    ev = PointCloudAugment(train=False)(pts)
    assert ev.shape == (20, 6)  # round(40 * 0.5)
    assert ev[:, 3:].min() >= -0.5 and ev[:, 3:].max() <= 0.5
    # evenly spaced over the 38 non-blank points, centred on all 40 points
    keep = torch.tensor([i for i in range(40) if i not in (0, 5)])
    expected = center_xyz(pts)[keep[torch.linspace(0, 37, 20, dtype=torch.float64).long()]]
    assert torch.allclose(ev[:, :3], expected[:, :3])
    assert torch.allclose(ev[:, 3:], expected[:, 3:] - 0.5)
    aug = PointCloudAugment(train=True, num_points=16)
    a, b = aug(pts, _gen(9)), aug(pts, _gen(9))
    assert torch.equal(a, b) and a.shape == (16, 6)
    # the blank points keep colour 0.5 -> 0 after centring when they are selected
    full = PointCloudAugment(train=False, num_points=40)(pts)
    assert torch.equal(full[0, 3:], torch.zeros(3)) and torch.equal(full[5, 3:], torch.zeros(3))


def test_point_augment_flip_rate():
    pts = _cloud(30, seed=5)
    aug = PointCloudAugment(train=True, num_points=30, scale_range=(1.0, 1.0), sigma=0.0, subset_p=0.0)
    ref = center_xyz(pts)[:, 0]
    g = _gen(0)
    flips = sum(bool(torch.allclose(aug(pts, g)[:, 0], -ref, atol=1e-6)) for _ in range(1000))
    assert 450 < flips < 550


def test_point_checks_name_sample():
    pts = _cloud(8)
    pts[2, 1] = float("nan")
    with pytest.raises(ValueError, match="person_0007"):
        PointCloudAugment(train=False)(pts, name="person_0007")
    inf = _cloud(8)
    inf[0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        check_points(inf)
    with pytest.raises(ValueError, match=r"\(N, 6\)"):
        check_points(torch.zeros(4, 3))
