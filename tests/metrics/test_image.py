"""Image metrics: mask IoU and SSIM against hand cases and a plain loop, Fréchet distances against
closed forms, extractor naming (FID only when the extractor says so)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mirror3d.metrics.image import (FDResult, RandomCNNExtractor, TorchModuleExtractor,
                                    extract_features, fd_metric_name, fd_score,
                                    feature_statistics, frechet_distance, gaussian_window,
                                    mask_iou, ssim)


# ------------------------------------------------------------------------------ mask IoU
def test_mask_iou_hand_case():
    pred = torch.tensor([[[1.0, 0.5], [0.0, 0.25]]])
    gt = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    # inter = 1 + 0.5 = 1.5; union = (1+1-1) + (0.5+1-0.5) + 0 + 0.25 = 2.25
    assert mask_iou(pred, gt).item() == pytest.approx(1.5 / 2.25)


def test_mask_iou_batch_identical_disjoint_empty():
    a = torch.zeros(3, 4, 4)
    a[0, :2] = 1
    b = a.clone()
    a[1, :2] = 1
    b[1, 2:] = 1
    out = mask_iou(a, b.bool())
    assert out.tolist() == [1.0, 0.0, 1.0]  # identical, disjoint, both empty


@pytest.mark.parametrize("bad", [torch.full((1, 2, 2), 1.5), torch.full((1, 2, 2), float("nan")),
                                 torch.zeros(2, 2)])
def test_mask_iou_rejects_bad_input(bad):
    with pytest.raises(ValueError, match="pred"):
        mask_iou(bad, torch.zeros_like(bad))


# ------------------------------------------------------------------------------ SSIM
def ssim_loop(x: np.ndarray, y: np.ndarray, data_range=1.0, win=11, sigma=1.5, k1=0.01, k2=0.03):
    """Plain numpy loop: per channel, per valid window position, Gaussian-weighted moments."""
    g = np.exp(-((np.arange(win) - win // 2) ** 2) / (2 * sigma ** 2))
    g /= g.sum()
    w = np.outer(g, g)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    vals = []
    for c in range(x.shape[0]):
        maps = []
        for i in range(x.shape[1] - win + 1):
            for j in range(x.shape[2] - win + 1):
                px, py = x[c, i:i + win, j:j + win], y[c, i:i + win, j:j + win]
                mx, my = (w * px).sum(), (w * py).sum()
                vx = (w * px * px).sum() - mx * mx
                vy = (w * py * py).sum() - my * my
                cxy = (w * px * py).sum() - mx * my
                maps.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2)))
        vals.append(np.mean(maps))
    return float(np.mean(vals))


def test_ssim_matches_plain_loop():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 15, 13, generator=g, dtype=torch.float64)
    y = (x + 0.2 * torch.rand(2, 3, 15, 13, generator=g, dtype=torch.float64)).clamp(0, 1)
    out = ssim(x, y)
    for b in range(2):
        assert out[b].item() == pytest.approx(ssim_loop(x[b].numpy(), y[b].numpy()), abs=1e-10)


def test_ssim_parameters_are_used():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 16, 16, generator=g, dtype=torch.float64)
    y = torch.rand(1, 3, 16, 16, generator=g, dtype=torch.float64)
    ref = ssim_loop(x[0].numpy(), y[0].numpy(), data_range=255.0, win=7, sigma=1.0)
    assert ssim(x, y, data_range=255.0, window=7, sigma=1.0).item() == pytest.approx(ref, abs=1e-10)
    assert abs(ssim(x, y).item() - ref) > 1e-3  # the pinned defaults give another value


def test_ssim_identical_is_one_and_constant_hand_case():
    x = torch.rand(2, 3, 12, 20)
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-6)
    a, b = 0.8, 0.3
    c1 = 0.01 ** 2
    out = ssim(torch.full((1, 3, 11, 11), a), torch.full((1, 3, 11, 11), b))
    assert out.item() == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-5)


def test_ssim_rejects_small_or_mismatched():
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.rand(1, 3, 10, 20), torch.rand(1, 3, 10, 20))
    with pytest.raises(ValueError, match="equal shapes"):
        ssim(torch.rand(1, 3, 12, 12), torch.rand(1, 3, 12, 13))


def test_gaussian_window_normalised_and_centred():
    g = gaussian_window(11, 1.5)
    assert g.sum().item() == pytest.approx(1.0)
    assert int(g.argmax()) == 5
    assert g[4].item() == pytest.approx(g[5].item() * math.exp(-1 / (2 * 1.5 ** 2)))


# ------------------------------------------------------------------------------ Fréchet
def test_frechet_one_dimensional_hand_case():
    # N(0, 4) vs N(3, 1): 3² + 4 + 1 − 2·sqrt(4·1) = 10
    assert frechet_distance([0.0], [[4.0]], [3.0], [[1.0]]) == pytest.approx(10.0)


def test_frechet_diagonal_and_general_against_eigen_formula():
    # diagonal: Σ (μ1−μ2)² + Σ (s1 − s2)² with s the standard deviations
    s1, s2 = np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 0.5])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    want = ((mu1 - mu2) ** 2).sum() + ((s1 - s2) ** 2).sum()
    assert frechet_distance(mu1, np.diag(s1 ** 2), mu2, np.diag(s2 ** 2)) == pytest.approx(want)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    sa, sb = a @ a.T, b @ b.T
    # Tr((ΣaΣb)^½) = Σ sqrt(eig(Σa Σb)) (the eigenvalues of a product of SPD matrices are > 0)
    tr = np.sqrt(np.linalg.eigvals(sa @ sb).real).sum()
    want = 4.0 + np.trace(sa) + np.trace(sb) - 2 * tr
    got = frechet_distance(np.zeros(5), sa, np.full(5, 2.0 / math.sqrt(5)), sb)
    assert got == pytest.approx(want, rel=1e-8)


def test_frechet_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="one D"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_feature_statistics_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2"):
        feature_statistics(np.zeros((1, 4)))


# ------------------------------------------------------------------------------ FD scores
def _images(n, seed, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return (0.3 + 0.4 * torch.rand(n, 3, 32, 16, generator=g) + shift).clamp(0, 1)


def test_fd_of_a_set_with_itself_is_zero_and_grows_with_shift():
    ext = RandomCNNExtractor()
    a = _images(24, 0)
    same = fd_score(a, a, ext)
    assert isinstance(same, FDResult)
    assert abs(same.value) < 1e-6
    assert (same.name, same.n_a, same.n_b, same.dims) == ("FD_randcnn", 24, 24, 128)
    d = [fd_score(a, _images(24, 1, s), ext).value for s in (0.0, 0.1, 0.25)]
    assert d[0] < d[1] < d[2]


def test_fd_reports_both_set_sizes_and_accepts_batches():
    ext = RandomCNNExtractor()
    a = _images(6, 0)
    b = _images(10, 2)
    r = fd_score([a[:4], a[4:]], b, ext, batch_size=3)
    assert (r.n_a, r.n_b) == (6, 10)
    assert r.value == pytest.approx(fd_score(a, b, ext).value, rel=1e-6)


def test_random_cnn_is_deterministic_and_seeded():
    x = _images(3, 5)
    f1 = RandomCNNExtractor(seed=0)(x)
    f2 = RandomCNNExtractor(seed=0)(x)
    f3 = RandomCNNExtractor(seed=1)(x)
    assert f1.shape == (3, 128)
    assert torch.equal(f1, f2)
    assert not torch.allclose(f1, f3)


class _Recorder(torch.nn.Module):
    """A stand-in network: records its input and returns per-channel means as features."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.seen = None

    def forward(self, x):
        self.seen = x.detach().clone()
        return (x.mean(dim=(2, 3)) * self.scale)[:, :, None, None]


def test_torch_module_extractor_resizes_scales_and_names():
    net = _Recorder()
    ext = TorchModuleExtractor(net, resize=(299, 299), name="inception", reports_fid=True)
    x = torch.zeros(2, 3, 20, 10)
    x[:, 0] = 1.0
    f = ext(x)
    assert net.seen.shape == (2, 3, 299, 299)
    assert net.seen[:, 0].min().item() == pytest.approx(1.0)  # 1 -> +1
    assert net.seen[:, 1].max().item() == pytest.approx(-1.0)  # 0 -> -1
    assert f.shape == (2, 3) and ext.dims == 3
    assert fd_metric_name(ext) == "FID"
    plain = TorchModuleExtractor(_Recorder(), resize=(8, 8), name="mynet")
    assert fd_metric_name(plain) == "FD_mynet"
    assert fd_score(_images(4, 0), _images(4, 1), plain).name == "FD_mynet"
    assert fd_metric_name(RandomCNNExtractor()) == "FD_randcnn"


def test_extractors_reject_bad_images():
    with pytest.raises(ValueError, match="3 channels"):
        RandomCNNExtractor()(torch.rand(1, 4, 16, 16))
    with pytest.raises(ValueError, match="NaN"):
        extract_features(torch.full((2, 3, 8, 8), float("nan")), RandomCNNExtractor())
