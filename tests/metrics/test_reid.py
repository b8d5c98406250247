"""Re-id CMC/mAP: hand-computed toy cases, a naive per-query reference, chunking, TTA features."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from mirror3d.metrics.reid import evaluate, rank_gallery, scale_tta_features


def ranked_gallery(n: int) -> np.ndarray:
    """(n, 2) unit vectors whose cosine to the query [1, 0] strictly decreases with the index."""
    ang = np.linspace(0.1, 1.2, n)
    return np.stack([np.cos(ang), np.sin(ang)], axis=1)


QUERY = np.array([[1.0, 0.0]])


# ------------------------------------------------------------------------------------------
# hand-computed toy cases
# ------------------------------------------------------------------------------------------
def test_toy_neg_pos_junk_pos():
    # query pid 1, camera 0. Ranked: [neg, pos, junk (same pid, same cam), pos].
    r = evaluate(QUERY, ranked_gallery(4), [1], [2, 1, 1, 1], [0], [0, 1, 0, 2], topk=4)
    assert r["map_mean_precision"] == pytest.approx((1 / 2 + 2 / 3) / 2)  # 0.58333
    assert r["map_trapezoid"] == pytest.approx(0.5 * (0 + 1 / 2) / 2 + 0.5 * (1 / 2 + 2 / 3) / 2)
    assert r["map_mean_precision"] == pytest.approx(0.58333, abs=1e-5)
    assert r["map_trapezoid"] == pytest.approx(0.41667, abs=1e-5)
    np.testing.assert_array_equal(r["cmc"], [0, 1, 1, 1])
    assert (r["rank1"], r["rank5"], r["rank10"]) == (0.0, 1.0, 1.0)
    assert r["num_valid_queries"] == 1 and r["num_queries_without_positive"] == 0


def test_distractor_pid0_ranked_first_is_a_negative():
    # [pid 0 (other cam), pos]: the distractor counts, so the positive sits at rank 1.
    r = evaluate(QUERY, ranked_gallery(2), [5], [0, 5], [0], [1, 1], topk=2)
    np.testing.assert_array_equal(r["cmc"], [0, 1])
    assert r["map_mean_precision"] == pytest.approx(0.5)
    assert r["map_trapezoid"] == pytest.approx(0.25)  # (0 + 1/2) / 2


def test_junk_pid_minus1_is_removed():
    # [pid -1, pid -1, pos, neg, pos]: after removal the positives are at ranks 0 and 2.
    r = evaluate(QUERY, ranked_gallery(5), [3], [-1, -1, 3, 4, 3], [0], [1, 2, 1, 1, 2], topk=3)
    np.testing.assert_array_equal(r["cmc"], [1, 1, 1])
    assert r["map_mean_precision"] == pytest.approx((1 + 2 / 3) / 2)
    # i=0, r=0: (1 + 1)/2; i=1, r=2: (1/2 + 2/3)/2
    assert r["map_trapezoid"] == pytest.approx(0.5 * 1.0 + 0.5 * (1 / 2 + 2 / 3) / 2)


def test_same_camera_same_pid_is_ignored():
    # [same pid same cam, neg, pos]: the first item is junk, so the positive is at rank 1.
    r = evaluate(QUERY, ranked_gallery(3), [7], [7, 8, 7], [2], [2, 2, 3], topk=2)
    np.testing.assert_array_equal(r["cmc"], [0, 1])
    assert r["map_mean_precision"] == pytest.approx(0.5)
    # Had the junk counted as a positive, R1 would be 1: make sure it is not.
    assert r["rank1"] == 0.0


def test_query_without_positive_is_excluded_and_counted(caplog):
    q = np.array([[1.0, 0.0], [1.0, 0.0]])
    # query 0 (pid 1): positive at rank 0. query 1 (pid 9): only a same-camera match (junk).
    g = ranked_gallery(3)
    with caplog.at_level(logging.WARNING, logger="mirror3d.metrics.reid"):
        r = evaluate(q, g, [1, 9], [1, 2, 9], [0, 0], [1, 1, 0], topk=1)
    assert r["num_valid_queries"] == 1
    assert r["num_queries_without_positive"] == 1
    assert r["map_mean_precision"] == pytest.approx(1.0)  # not 0.5: query 1 is not averaged
    assert r["map_trapezoid"] == pytest.approx(1.0)
    np.testing.assert_array_equal(r["cmc"], [1.0])
    assert any("1 of 2 queries" in rec.getMessage() for rec in caplog.records)


def test_no_query_with_positive_returns_nan(caplog):
    with caplog.at_level(logging.WARNING, logger="mirror3d.metrics.reid"):
        r = evaluate(QUERY, ranked_gallery(2), [1], [2, 3], [0], [1, 1], topk=3)
    assert math.isnan(r["map_trapezoid"]) and math.isnan(r["map_mean_precision"])
    assert np.isnan(r["cmc"]).all() and r["cmc"].shape == (3,)
    assert r["num_valid_queries"] == 0 and r["num_queries_without_positive"] == 1
    assert caplog.records, "expected a warning"


def test_ties_are_stable_by_gallery_index():
    # Identical gallery features: the earlier gallery index ranks first.
    g = np.array([[1.0, 0.0], [1.0, 0.0]])
    neg_first = evaluate(QUERY, g, [1], [2, 1], [0], [1, 1], topk=2)
    pos_first = evaluate(QUERY, g, [1], [1, 2], [0], [1, 1], topk=2)
    np.testing.assert_array_equal(neg_first["cmc"], [0, 1])
    np.testing.assert_array_equal(pos_first["cmc"], [1, 1])
    np.testing.assert_array_equal(rank_gallery(QUERY, g), [[0, 1]])


def test_euclidean_metric_differs_from_cosine_on_unnormalised_features():
    # Same direction, different length: cosine ties (index order), euclidean prefers the close one.
    g = np.array([[5.0, 0.0], [1.0, 0.1]])
    cos = evaluate(QUERY, g, [1], [2, 1], [0], [1, 1], topk=1, metric="cosine")
    euc = evaluate(QUERY, g, [1], [2, 1], [0], [1, 1], topk=1, metric="euclidean")
    assert cos["rank1"] == 0.0 and euc["rank1"] == 1.0


def test_torch_inputs_match_numpy_inputs():
    rng = np.random.default_rng(0)
    qf, gf = rng.normal(size=(6, 8)), rng.normal(size=(30, 8))
    qp, gp = rng.integers(0, 4, 6), rng.integers(0, 4, 30)
    qc, gc = rng.integers(0, 3, 6), rng.integers(0, 3, 30)
    a = evaluate(qf, gf, qp, gp, qc, gc)
    b = evaluate(*(torch.as_tensor(x) for x in (qf.astype(np.float32), gf.astype(np.float32), qp, gp, qc, gc)))
    np.testing.assert_allclose(a["cmc"], b["cmc"])
    assert a["map_trapezoid"] == pytest.approx(b["map_trapezoid"])


# ------------------------------------------------------------------------------------------
# naive reference on random data
# ------------------------------------------------------------------------------------------
def naive_evaluate(qf, gf, qp, gp, qc, gc, topk):
    """Plain per-query loop, straight from the Market-1501 protocol (Zheng et al. 2015) as the
    docstring of :mod:`mirror3d.metrics.reid` states it (exact arithmetic inputs)."""
    qf = qf / np.linalg.norm(qf, axis=1, keepdims=True)
    gf = gf / np.linalg.norm(gf, axis=1, keepdims=True)
    cmc_sum = np.zeros(topk)
    ap_tr, ap_mp, n_valid = [], [], 0
    first_ranks = []
    for q in range(len(qf)):
        sims = [float(np.dot(qf[q], gf[j])) for j in range(len(gf))]
        order = sorted(range(len(gf)), key=lambda j: (-sims[j], j))
        good = []
        for j in order:
            if gp[j] == -1 or (gp[j] == qp[q] and gc[j] == qc[q]):
                continue
            good.append(gp[j] == qp[q])
        n_pos = sum(good)
        if n_pos == 0:
            continue
        n_valid += 1
        hit_ranks = [r for r, ok in enumerate(good) if ok]
        first_ranks.append(hit_ranks[0])
        for k in range(topk):
            cmc_sum[k] += hit_ranks[0] <= k
        tr = mp = 0.0
        for i, r in enumerate(hit_ranks):
            p_i = (i + 1) / (r + 1)
            p_prev = 1.0 if r == 0 else i / r
            tr += (p_prev + p_i) / 2 / n_pos
            mp += p_i / n_pos
        ap_tr.append(tr)
        ap_mp.append(mp)
    return cmc_sum / n_valid, float(np.mean(ap_tr)), float(np.mean(ap_mp)), n_valid


def sign_features(rng, n, d, n_distinct):
    """Rows of ±1/sqrt(d) (d a power of 4): unit norm and dot products exact in float32, so
    duplicates give exact ties. Drawn from ``n_distinct`` prototypes to force duplicates."""
    protos = rng.choice([-1.0, 1.0], size=(n_distinct, d)) / math.sqrt(d)
    return protos[rng.integers(0, n_distinct, n)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_naive_reference_with_duplicates(seed):
    rng = np.random.default_rng(seed)
    n_q, n_g, d = 25, 120, 16
    qf = sign_features(rng, n_q, d, 12)
    gf = sign_features(rng, n_g, d, 30)
    qp = rng.integers(1, 6, n_q)
    gp = rng.integers(-1, 6, n_g)  # includes junk (-1) and distractors (0)
    qc = rng.integers(0, 3, n_q)
    gc = rng.integers(0, 3, n_g)
    cmc, m_tr, m_mp, n_valid = naive_evaluate(qf, gf, qp, gp, qc, gc, topk=10)
    r = evaluate(qf, gf, qp, gp, qc, gc, topk=10, chunk_size=4)
    assert r["num_valid_queries"] == n_valid
    assert r["num_queries_without_positive"] == n_q - n_valid
    np.testing.assert_allclose(r["cmc"], cmc, atol=1e-12)
    assert r["map_trapezoid"] == pytest.approx(m_tr, abs=1e-12)
    assert r["map_mean_precision"] == pytest.approx(m_mp, abs=1e-12)
    assert r["rank5"] == pytest.approx(cmc[4])


def test_rank_gallery_breaks_exact_ties_by_gallery_index():
    # Many exact ties (and -0.0 vs 0.0): the order must equal a stable argsort.
    rng = np.random.default_rng(11)
    qf = sign_features(rng, 9, 16, 5)
    gf = sign_features(rng, 300, 16, 7)
    qf[0] = 0.25
    gf[:40, :8], gf[:40, 8:] = 0.25, -0.25  # orthogonal to qf[0]: similarity exactly 0
    ref = np.argsort(-(qf @ gf.T), axis=1, kind="stable")
    np.testing.assert_array_equal(rank_gallery(qf, gf, chunk_size=4), ref)
    np.testing.assert_array_equal(rank_gallery(torch.as_tensor(qf), torch.as_tensor(gf), k=12), ref[:, :12])


def test_chunked_equals_unchunked_on_random_data():
    rng = np.random.default_rng(5)
    qf = rng.normal(size=(50, 32)).astype(np.float32)
    gf = rng.normal(size=(200, 32)).astype(np.float32)
    qp, gp = rng.integers(0, 10, 50), rng.integers(-1, 10, 200)
    qc, gc = rng.integers(0, 4, 50), rng.integers(0, 4, 200)
    for metric in ("cosine", "euclidean"):
        big = evaluate(qf, gf, qp, gp, qc, gc, topk=20, chunk_size=10_000, metric=metric)
        small = evaluate(qf, gf, qp, gp, qc, gc, topk=20, chunk_size=7, metric=metric)
        capped = evaluate(qf, gf, qp, gp, qc, gc, topk=20, metric=metric, max_chunk_elements=450)
        for other in (small, capped):
            np.testing.assert_array_equal(other["cmc"], big["cmc"])
            assert other["map_trapezoid"] == big["map_trapezoid"]
            assert other["map_mean_precision"] == big["map_mean_precision"]
            assert other["num_valid_queries"] == big["num_valid_queries"]


def test_rank_gallery_matches_argsort_and_rerank_runs():
    rng = np.random.default_rng(3)
    qf, gf = rng.normal(size=(5, 8)), rng.normal(size=(40, 8))
    qn = qf / np.linalg.norm(qf, axis=1, keepdims=True)
    gn = gf / np.linalg.norm(gf, axis=1, keepdims=True)
    ref = np.argsort(-(qn @ gn.T), axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(rank_gallery(qf, gf, k=7, chunk_size=2), ref)
    # Re-ranking path: well-separated identities stay perfectly ranked.
    centers = rng.normal(size=(4, 8)) * 5
    gp = np.repeat(np.arange(1, 5), 10)
    gfe = centers[gp - 1] + 0.05 * rng.normal(size=(40, 8))
    qp = np.arange(1, 5)
    qfe = centers[qp - 1] + 0.05 * rng.normal(size=(4, 8))
    r = evaluate(qfe, gfe, qp, gp, np.zeros(4, int), np.ones(40, int), rerank=True,
                 rerank_kwargs={"k1": 6, "k2": 3})
    assert r["map_mean_precision"] == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"query_feats": np.zeros(4)}, "query_feats"),
        ({"gallery_feats": np.zeros((3, 5))}, "gallery_feats"),
        ({"query_pids": [1, 2]}, "query_pids"),
        ({"gallery_pids": [1, 2]}, "gallery_pids"),
        ({"query_camids": [0, 0]}, "query_camids"),
        ({"gallery_camids": [0]}, "gallery_camids"),
        ({"query_feats": np.array([[np.nan, 0.0, 0.0, 1.0]])}, "query_feats"),
        ({"gallery_feats": np.full((3, 4), np.inf)}, "gallery_feats"),
        ({"query_pids": [1.5]}, "query_pids"),
        ({"topk": 0}, "topk"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"metric": "l1"}, "metric"),
    ],
)
def test_bad_input_raises_value_error_naming_argument(kwargs, name):
    args = dict(
        query_feats=np.ones((1, 4)), gallery_feats=np.ones((3, 4)), query_pids=[1],
        gallery_pids=[1, 2, 3], query_camids=[0], gallery_camids=[1, 1, 1],
    )
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        evaluate(**args)


# ------------------------------------------------------------------------------------------
# test-time features
# ------------------------------------------------------------------------------------------
def test_scale_tta_features_sums_scaled_pass_and_normalises():
    w = torch.tensor([[1.0, 2.0], [0.5, -1.0], [3.0, 0.0]])  # (3, 2)

    def model_fn(xyz, rgb):  # (B, N, 3), (B, N, 3) -> (B, 2)
        return xyz.mean(1) @ w + rgb.mean(1) @ w * 0.1

    torch.manual_seed(0)
    xyz, rgb = torch.randn(4, 5, 3), torch.rand(4, 5, 3)
    batches = [(xyz[:3], rgb[:3], "labels ignored"), {"xyz": xyz[3:], "rgb": rgb[3:], "pid": 1}]
    f = scale_tta_features(model_fn, batches)
    raw = model_fn(xyz, rgb) + model_fn(1.1 * xyz, rgb)
    expected = raw / (raw.norm(dim=1, keepdim=True) + 1e-6)
    torch.testing.assert_close(f, expected)
    plain = scale_tta_features(model_fn, [(xyz, rgb)], tta_scale=None)
    torch.testing.assert_close(plain, model_fn(xyz, rgb) / (model_fn(xyz, rgb).norm(dim=1, keepdim=True) + 1e-6))
    assert not torch.allclose(plain, f)


def test_scale_tta_features_rejects_bad_model_output():
    with pytest.raises(ValueError, match="model_fn"):
        scale_tta_features(lambda x, c: x.sum(), [(torch.ones(2, 3, 3), torch.ones(2, 3, 3))])
    with pytest.raises(ValueError, match="batches"):
        scale_tta_features(lambda x, c: x[:, 0], [torch.ones(2, 3, 3)])
