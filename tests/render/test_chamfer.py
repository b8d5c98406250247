"""Tests for mirror3d.render.chamfer against a naive torch.cdist reference and scipy's cKDTree."""

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from mirror3d.render.chamfer import _block_indices, chamfer_distance, nearest_sq_dist


def _naive_chamfer(a, b):
    d = torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist") ** 2  # (B, N, M)
    return d.min(dim=2).values.mean(dim=1) + d.min(dim=1).values.mean(dim=1)


def _kdtree_chamfer(a: np.ndarray, b: np.ndarray) -> float:
    d_ab = cKDTree(b).query(a)[0]
    d_ba = cKDTree(a).query(b)[0]
    return float((d_ab**2).mean() + (d_ba**2).mean())


@pytest.mark.parametrize(
    "n, m, chunk, method",
    [
        (50, 37, 4096, "auto"),  # one block
        (50, 37, 7, "brute"),  # many chunks over N, M and the batch
        (2000, 1800, 4096, "blocks"),  # kd-leaf pruned search (64 x 64 leaves)
        (1500, 2000, 1024, "auto"),  # auto picks blocks (N*M > chunk^2)
    ],
)
def test_chamfer_matches_naive_values_and_gradients(n, m, chunk, method):
    g = torch.Generator().manual_seed(n + m)
    a0 = torch.randn(2, n, 3, generator=g, dtype=torch.float64)
    b0 = torch.rand(2, m, 3, generator=g, dtype=torch.float64) * 2 - 1
    a1, b1 = a0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    a2, b2 = a0.clone().requires_grad_(True), b0.clone().requires_grad_(True)

    got = chamfer_distance(a1, b1, chunk_size=chunk, reduction="none", method=method)
    ref = _naive_chamfer(a2, b2)
    assert got.shape == (2,)
    assert torch.allclose(got, ref, rtol=1e-10, atol=0)
    (got * torch.tensor([1.0, 3.0], dtype=torch.float64)).sum().backward()
    (ref * torch.tensor([1.0, 3.0], dtype=torch.float64)).sum().backward()
    assert torch.allclose(a1.grad, a2.grad, atol=1e-12)
    assert torch.allclose(b1.grad, b2.grad, atol=1e-12)

    mean = chamfer_distance(a0, b0, chunk_size=chunk, method=method)
    assert mean.ndim == 0 and mean.item() == pytest.approx(ref.mean().item(), rel=1e-10)


@pytest.mark.parametrize("method, n, m, chunk", [("brute", 300, 200, 64), ("blocks", 2000, 1500, 4096)])
def test_nearest_sq_dist_matches_argmin(method, n, m, chunk):
    g = torch.Generator().manual_seed(5)
    a = torch.rand(2, n, 3, generator=g)
    b = torch.rand(2, m, 3, generator=g)
    d, idx = nearest_sq_dist(a, b, chunk_size=chunk, return_index=True, method=method)
    full = ((a[:, :, None] - b[:, None]) ** 2).sum(-1)
    assert torch.equal(idx, full.argmin(dim=2))
    assert torch.allclose(d, full.min(dim=2).values, atol=1e-7)
    assert torch.allclose(nearest_sq_dist(a, b, method=method), d)


def test_block_search_widens_until_exact():
    # tiny leaves and K starting at 1: most query leaves fail the bound and are searched again
    g = torch.Generator().manual_seed(6)
    q = torch.randn(1000, 3, generator=g)
    r = torch.rand(800, 3, generator=g) * torch.tensor([4.0, 0.2, 1.0])
    idx = _block_indices(q, r, chunk_size=512, q_block=8, r_block=8, k_start=1)
    assert torch.equal(idx, ((q[:, None] - r[None]) ** 2).sum(-1).argmin(dim=1))


def test_chamfer_of_a_cloud_with_itself_is_zero():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2, 1000, 3, generator=g)
    assert chamfer_distance(a, a).item() == 0.0
    assert chamfer_distance(a, a[:, torch.randperm(1000, generator=g)], method="blocks").item() == 0.0
    assert chamfer_distance(a, a + 0.1).item() > 0


def test_blocks_search_on_uneven_and_distant_clouds_matches_kdtree():
    g = torch.Generator().manual_seed(1)
    sphere = torch.randn(1, 20000, 3, generator=g)
    sphere = sphere / sphere.norm(dim=-1, keepdim=True)  # points on a surface
    blob = torch.randn(1, 15000, 3, generator=g) * torch.tensor([0.05, 2.0, 0.2]) + 3.0  # far away
    got = chamfer_distance(sphere, blob, method="blocks").item()
    ref = _kdtree_chamfer(sphere[0].double().numpy(), blob[0].double().numpy())
    assert got == pytest.approx(ref, rel=1e-5)


def test_chamfer_100k_by_100k_matches_kdtree():
    g = torch.Generator().manual_seed(2)
    a = torch.rand(1, 100_000, 3, generator=g)
    b = torch.rand(1, 100_000, 3, generator=g) * torch.tensor([1.0, 0.5, 2.0])
    got = chamfer_distance(a, b).item()
    ref = _kdtree_chamfer(a[0].double().numpy(), b[0].double().numpy())
    assert got == pytest.approx(ref, rel=1e-5)


def test_chamfer_validates_inputs():
    a = torch.zeros(1, 5, 3)
    with pytest.raises(ValueError, match="a must"):
        chamfer_distance(torch.zeros(5, 3), a)
    with pytest.raises(ValueError, match="b must"):
        chamfer_distance(a, torch.zeros(1, 5, 2))
    with pytest.raises(ValueError, match="b contains NaN"):
        chamfer_distance(a, torch.full((1, 5, 3), float("nan")))
    with pytest.raises(ValueError, match="batch"):
        chamfer_distance(a, torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match="reduction"):
        chamfer_distance(a, a, reduction="sum")
    with pytest.raises(ValueError, match="method"):
        nearest_sq_dist(a, a, method="faiss")
    with pytest.raises(ValueError, match="chunk_size"):
        nearest_sq_dist(a, a, chunk_size=0)
