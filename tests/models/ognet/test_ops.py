"""Point ops against their plain loop references and hand-made cases."""

import pytest
import torch

from mirror3d.models.ognet.ops import (
    ball_query,
    ball_query_multiscale,
    ball_query_naive,
    farthest_point_sample,
    farthest_point_sample_naive,
    gather_points,
    gather_points_naive,
    knn,
    knn_naive,
    knn_reference,
)


def _cloud(b=2, n=240, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    xyz = (torch.rand(b, n, 3, generator=g, dtype=dtype) - 0.5) * torch.tensor([0.6, 1.6, 0.4], dtype=dtype)
    return xyz


# ---------------------------------------------------------------- farthest point sampling


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fps_matches_naive(dtype):
    xyz = _cloud(dtype=dtype)
    xyz[0, 7] = torch.tensor([0.01, -0.02, 0.005], dtype=dtype)  # |p|² <= 1e-3: never chosen
    xyz[1, 0] = 0.0  # start point inside the skip ball
    got = farthest_point_sample(xyz, 40)
    want = farthest_point_sample_naive(xyz, 40)
    assert got.dtype == torch.long and got.shape == (2, 40)
    assert torch.equal(got, want)
    assert (got[:, 0] == 0).all()
    assert not (got[0] == 7).any()
    assert len(set(got[0].tolist())) == 40  # no repeats while valid points remain


def test_fps_hand_case_on_a_line():
    # start at 0 (x=1), farthest is x=-3 (index 3), then x=... : max of min distance
    x = torch.tensor([1.0, 0.5, 2.0, -3.0, -1.0])
    xyz = torch.stack([x, torch.full_like(x, 0.2), torch.zeros_like(x)], -1)[None]
    # min d² after {0,3}: idx1 0.25, idx2 1.0, idx4 4.0 -> 4; after {0,3,4}: idx1 .25, idx2 1 -> 2
    assert farthest_point_sample(xyz, 4).tolist() == [[0, 3, 4, 2]]


def test_fps_ties_go_to_lowest_index():
    xyz = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]])
    assert farthest_point_sample(xyz, 3).tolist() == [[0, 1, 3]]


def test_fps_only_skipped_points_left_returns_zero():
    xyz = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 0.01], [0.01, 0.0, 0.0]]])
    assert farthest_point_sample(xyz, 3).tolist() == [[0, 0, 0]]


def test_fps_errors():
    with pytest.raises(ValueError, match=r"npoint=10.*N=5"):
        farthest_point_sample(torch.rand(1, 5, 3), 10)
    bad = torch.rand(1, 8, 3)
    bad[0, 3, 1] = float("nan")
    with pytest.raises(ValueError, match="xyz"):
        farthest_point_sample(bad, 2)
    with pytest.raises(ValueError, match="xyz"):
        farthest_point_sample(torch.rand(1, 8, 2), 2)


# ---------------------------------------------------------------- ball query


@pytest.mark.parametrize("radius,nsample", [(0.1, 8), (0.2, 16), (0.4, 32), (0.03, 4)])
def test_ball_query_matches_naive(radius, nsample):
    xyz = _cloud(seed=1)
    centres = gather_points(xyz, farthest_point_sample(xyz, 30))
    centres[1, 0] = torch.tensor([5.0, 5.0, 5.0])  # no hit at all -> zeros
    got = ball_query(radius, nsample, xyz, centres, chunk_size=7)
    want = ball_query_naive(radius, nsample, xyz, centres)
    assert got.shape == (2, 30, nsample)
    assert torch.equal(got, want)
    assert (got[1, 0] == 0).all()


def test_ball_query_multiscale_default_blocks_equal_previous_blocks_and_naive(monkeypatch):
    """The default distance block (1M elements, several blocks here once shrunk) gives the
    indices of the previous single 16M-element block and of the loop reference."""
    import mirror3d.models.ognet.ops as ops_mod

    xyz = _cloud(seed=2)
    centres = gather_points(xyz, farthest_point_sample(xyz, 40))
    radii, nsamples = [0.1, 0.2, 0.4], [8, 16, 32]
    monkeypatch.setattr(ops_mod, "_BALL_QUERY_BLOCK_ELEMENTS", ops_mod._DEFAULT_BLOCK_ELEMENTS)
    previous = ball_query_multiscale(radii, nsamples, xyz, centres)
    monkeypatch.setattr(ops_mod, "_BALL_QUERY_BLOCK_ELEMENTS", 3 * xyz.shape[0] * xyz.shape[1])
    blocked = ball_query_multiscale(radii, nsamples, xyz, centres)  # blocks of 3 centres
    for r, ns, a, b in zip(radii, nsamples, previous, blocked):
        assert torch.equal(a, b)
        assert torch.equal(b, ball_query_naive(r, ns, xyz, centres))


def test_ball_query_strict_radius_first_by_index_and_padding():
    # distances² from the origin: 0.25 (== r², excluded), 0.04, 0.01, 0.09, 0.0
    pts = torch.tensor([[[0.5, 0, 0], [0.2, 0, 0], [0, 0.1, 0], [0, 0, 0.3], [0, 0, 0]]])
    centre = torch.zeros(1, 1, 3)
    assert ball_query(0.5, 6, pts, centre).tolist() == [[[1, 2, 3, 4, 1, 1]]]
    assert ball_query(0.5, 2, pts, centre).tolist() == [[[1, 2]]]  # first by index, not nearest


def test_ball_query_multiscale_equals_single_scale():
    xyz = _cloud(seed=2)
    centres = xyz[:, :20]
    multi = ball_query_multiscale([0.1, 0.2, 0.4], [8, 16, 32], xyz, centres)
    for (r, s), got in zip([(0.1, 8), (0.2, 16), (0.4, 32)], multi):
        assert torch.equal(got, ball_query(r, s, xyz, centres))


def test_ball_query_errors():
    xyz = torch.rand(2, 10, 3)
    with pytest.raises(ValueError, match="radius"):
        ball_query(0.0, 4, xyz, xyz)
    with pytest.raises(ValueError, match="nsample"):
        ball_query(0.1, 0, xyz, xyz)
    bad = xyz.clone()
    bad[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="new_xyz"):
        ball_query(0.1, 4, xyz, bad)
    with pytest.raises(ValueError, match="batch"):
        ball_query(0.1, 4, xyz, xyz[:1])


# ---------------------------------------------------------------- kNN


@pytest.mark.parametrize("channels", [3, 11])
def test_knn_matches_naive_random(channels):
    x = torch.randn(2, 90, channels, generator=torch.Generator().manual_seed(3))
    got = knn(x, 12, chunk_size=17)
    assert got.dtype == torch.long and got.shape == (2, 90, 12)
    assert torch.equal(got, knn_naive(x, 12))
    assert torch.equal(got[..., 0], torch.arange(90).expand(2, 90))  # self first


def test_knn_ties_and_duplicates_are_deterministic():
    # integer coordinates: exact distances, many ties and duplicate points
    x = torch.randint(0, 3, (2, 80, 4), generator=torch.Generator().manual_seed(4)).float()
    want = knn_naive(x, 15)
    assert torch.equal(knn(x, 15, chunk_size=9), want)
    assert torch.equal(knn(x, 15), want)
    assert torch.equal(knn(x, 80), knn_naive(x, 80))


def test_knn_chunking_does_not_change_result():
    x = torch.randn(3, 64, 5)
    assert torch.equal(knn(x, 8, chunk_size=1), knn(x, 8, chunk_size=64))


@pytest.mark.parametrize("method", ["kdtree", "brute", "auto"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_knn_methods_equal_the_reference_implementation(method, dtype):
    g = torch.Generator().manual_seed(5)
    clouds = [
        torch.randn(2, 300, 3, generator=g) * torch.tensor([0.25, 0.8, 0.15]),  # person-like
        torch.randn(2, 300, 3, generator=g) * 100 + 50,  # large offset: float32 rounding
        torch.randint(0, 3, (2, 200, 3), generator=g).float(),  # ties and duplicates
        torch.randint(0, 4, (1, 64, 3), generator=g).float() * 0.1,  # inexact ties
    ]
    for x in clouds:
        x = x.to(dtype)
        for k in (1, 6, 20):
            assert torch.equal(knn(x, k, method=method), knn_reference(x, k)), (k, x.shape)


@pytest.mark.parametrize("method", ["kdtree", "brute"])
def test_knn_duplicate_clusters_larger_than_k(method):
    # 30 copies of each of 5 points: the cheap search may not even return the point itself
    base = torch.randn(1, 5, 3, generator=torch.Generator().manual_seed(6))
    x = base.repeat_interleave(30, dim=1)
    assert torch.equal(knn(x, 10, method=method), knn_naive(x, 10))


def test_knn_feature_space_matches_naive():
    x = torch.randn(2, 70, 40, generator=torch.Generator().manual_seed(7))
    assert torch.equal(knn(x, 9), knn_naive(x, 9))
    assert torch.equal(knn(x, 9, method="brute", chunk_size=5), knn_reference(x, 9))


def test_knn_errors():
    with pytest.raises(ValueError, match="k=9"):
        knn(torch.rand(1, 8, 3), 9)
    bad = torch.rand(1, 8, 3)
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN"):
        knn(bad, 2)
    with pytest.raises(ValueError, match="chunk_size"):
        knn(torch.rand(1, 8, 3), 2, chunk_size=0)
    with pytest.raises(ValueError, match="method"):
        knn(torch.rand(1, 8, 3), 2, method="grid")


# ---------------------------------------------------------------- gather


def test_gather_points_matches_naive_and_backprops():
    x = torch.randn(2, 10, 4, requires_grad=True)
    idx = torch.randint(0, 10, (2, 5, 3))
    got = gather_points(x, idx)
    assert got.shape == (2, 5, 3, 4)
    assert torch.equal(got.detach(), gather_points_naive(x.detach(), idx))
    got.sum().backward()
    counts = torch.stack([torch.bincount(idx[b].reshape(-1), minlength=10) for b in range(2)])
    assert torch.equal(x.grad, counts[..., None].float().expand(2, 10, 4))


def test_gather_points_errors():
    x = torch.randn(2, 10, 4)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        gather_points(x, torch.tensor([[0, 10], [1, 2]]))
    with pytest.raises(ValueError, match="idx"):
        gather_points(x, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="idx"):
        gather_points(x, torch.zeros(3, 2, dtype=torch.long))
