"""The numpy point-cloud augmentation against the previous torch one (``call_reference``):
bit-identical clouds and the same generator draws, per sample and through the dataset."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mirror3d.data.datasets import PointCloudDataset, sample_generator
from mirror3d.data.transforms import PointCloudAugment, _even, _even_np, blank_mask, blank_mask_np


def _cloud(n: int, seed: int = 0, blank_frac: float = 0.2, dtype=np.float32) -> np.ndarray:
    """(n, 6) xyz + rgb with about ``blank_frac`` white (blank) points and a few near-white ones
    at the blank test's tolerance."""
    rng = np.random.default_rng(seed)
    xyz = rng.normal(size=(n, 3)) * [0.3, 0.8, 0.2] + [1.5, -2.0, 0.7]
    rgb = rng.random((n, 3)) * 0.95
    rgb[rng.random(n) < blank_frac] = 1.0
    near = rng.random(n) < 0.05
    rgb[near] = 1.0 - rng.choice([0.5e-5, 1e-5, 1.5e-5], size=(int(near.sum()), 1))
    return np.concatenate([xyz, rgb], axis=1).astype(dtype)


def _same(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Same dtype, shape and bits (so -0.0 vs 0.0 would count as a difference)."""
    if x.dtype != y.dtype or x.shape != y.shape:
        return False
    as_int = {torch.float16: torch.int16, torch.float32: torch.int32, torch.float64: torch.int64}[x.dtype]
    return torch.equal(x.contiguous().view(as_int), y.contiguous().view(as_int))


def _both(aug: PointCloudAugment, points, seed: int, epoch: int, index: int):
    g_new, g_ref = sample_generator(seed, epoch, index), sample_generator(seed, epoch, index)
    new = aug(points, g_new, name="c")
    ref = aug.call_reference(points, g_ref, name="c")
    # the same number of draws: the generators end in the same state
    assert torch.equal(g_new.get_state(), g_ref.get_state())
    return new, ref


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("num_points", [64, 300, None])
def test_numpy_augment_equals_reference(train, num_points):
    aug = PointCloudAugment(train=train, num_points=num_points, short="repeat")
    flips = subsets = 0
    for n, blank_frac in ((40, 0.1), (300, 0.3), (700, 0.8), (2048, 0.2)):
        cloud = _cloud(n, seed=n, blank_frac=blank_frac)
        for seed in (0, 3):
            for epoch in (0, 1, 7):
                new, ref = _both(aug, torch.from_numpy(cloud), seed, epoch, n)
                assert _same(new, ref), (n, seed, epoch)
                if train:
                    g = sample_generator(seed, epoch, n)
                    flips += float(torch.rand((), generator=g)) < 0.5
                    subsets += float(torch.rand((), generator=g)) < 0.5
    if train:  # both branches of the flip and of the subset were compared
        assert 0 < flips < 24 and 0 < subsets < 24


def test_numpy_augment_short_clouds_repeat_and_error():
    aug = PointCloudAugment(train=True, num_points=128, short="repeat")
    for n in (1, 7, 127):
        for epoch in range(3):
            new, ref = _both(aug, torch.from_numpy(_cloud(n, seed=n)), 5, epoch, n)
            assert new.shape == (128, 6) and _same(new, ref)
    strict = PointCloudAugment(train=True, num_points=128, short="error")
    with pytest.raises(ValueError, match="walker_3: has 20 points, fewer than the 128"):
        strict(_cloud(20), sample_generator(0, 0, 0), name="walker_3")


def test_numpy_augment_input_kinds():
    """numpy or torch input, float64, integer, non-contiguous layouts: as the reference."""
    cloud = _cloud(500, seed=11)
    aug = PointCloudAugment(train=True, num_points=200)
    kinds = {
        "numpy": cloud,
        "float64": torch.from_numpy(cloud.astype(np.float64)),
        "fortran": np.asfortranarray(cloud),
        "strided": torch.from_numpy(cloud)[::2],
        "int": torch.from_numpy((cloud * 10).astype(np.int64)),
        "half": torch.from_numpy(cloud).half(),  # handled by the reference path
    }
    for kind, pts in kinds.items():
        for epoch in range(4):
            new, ref = _both(aug, pts, 1, epoch, 9)
            assert _same(new, ref), kind
    assert aug(kinds["float64"], sample_generator(0, 0, 0)).dtype == torch.float64


def test_numpy_augment_nan_and_shape_errors_name_the_sample():
    aug = PointCloudAugment(train=True, num_points=16)
    bad = _cloud(50)
    bad[7, 1] = np.nan
    bad[9, 4] = np.inf
    for pts in (bad, torch.from_numpy(bad)):
        with pytest.raises(ValueError, match=r"person_0007: 2 point\(s\) contain NaN or inf"):
            aug(pts, sample_generator(0, 0, 0), name="person_0007")
    with pytest.raises(ValueError, match=r"person_0008: points must have shape \(N, 6\)"):
        aug(np.zeros((5, 3), np.float32), name="person_0008")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blank_mask_np_is_blank_mask_bit_for_bit(dtype):
    rng = np.random.default_rng(2)
    for n in (1, 3, 17, 4096):
        for rgb in (rng.random((n, 3)),  # ordinary colours
                    np.round(rng.random((n, 3)) * 255) / 255,  # 8-bit colours, exact whites
                    1 - rng.random((n, 3)) * rng.choice([1e-4, 2e-5, 1e-5, 3e-6], size=(n, 1)),
                    rng.normal(size=(n, 3)) * 10.0 ** rng.integers(-8, 8, size=(n, 3))):
            pts = np.concatenate([rng.normal(size=(n, 3)), rgb], axis=1).astype(dtype)
            expected = blank_mask(torch.from_numpy(pts)).numpy()
            assert np.array_equal(blank_mask_np(pts), expected)
    near = np.ones((3, 6), dtype)
    near[:, 3:] -= np.array([[0.5e-5], [0.99e-5], [2e-5]], dtype)
    assert blank_mask_np(near).tolist() == [True, True, False]


def test_even_np_is_torch_linspace():
    for n in (1, 2, 7, 100, 2047, 2048, 4096):
        for k in (1, 2, 3, 511, 512, 1000):
            assert np.array_equal(_even_np(n, k), _even(n, k, "cpu").numpy()), (n, k)


def test_dataset_batches_equal_reference_backend():
    clouds = [_cloud(n, seed=i) for i, n in enumerate((2048, 900, 300, 2048, 60, 1500))]
    kw = dict(pids=[0, 1, 2, 0, 1, 2], num_points=256, seed=4, short="repeat")
    for train in (True, False):
        new = PointCloudDataset(clouds, train=train, **kw)
        ref = PointCloudDataset(clouds, train=train, backend="reference", **kw)
        for epoch in (0, 2):
            new.set_epoch(epoch)
            ref.set_epoch(epoch)
            for a, b in zip(DataLoader(new, batch_size=3), DataLoader(ref, batch_size=3)):
                assert a["points"].shape == (3, 256, 6) and _same(a["points"], b["points"])
                assert torch.equal(a["pid"], b["pid"]) and torch.equal(a["index"], b["index"])
    with pytest.raises(ValueError, match="backend"):
        PointCloudDataset(clouds, train=True, backend="fast", **kw)
