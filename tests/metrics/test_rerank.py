"""k-reciprocal re-ranking: naive dense reference, toy rankings, symmetry, limits."""

from __future__ import annotations

import numpy as np
import pytest

from mirror3d.metrics.reid import evaluate
from mirror3d.metrics.rerank import k_reciprocal_rerank, pairwise_distance, rerank_features


def naive_rerank(q_g, q_q, g_g, k1, k2, lam):
    """Dense, loop-by-loop transcription of the paper's steps (sets and full vectors)."""
    n_q, n_g = q_g.shape
    n = n_q + n_g
    d = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float64)
    d = np.maximum(d, 0)
    d = d / d.max(axis=1, keepdims=True)
    ranking = [sorted(range(n), key=lambda j, i=i: (d[i, j], j)) for i in range(n)]

    def nn(i, k):
        return set(ranking[i][: k + 1])

    def recip(i, k):
        return {j for j in nn(i, k) if i in nn(j, k)}

    k_half = int(np.floor(k1 / 2 + 0.5))
    v = np.zeros((n, n))
    for i in range(n):
        r = recip(i, k1)
        r_star = set(r)
        for q in r:
            rq = recip(q, k_half)
            if len(r & rq) >= 2 / 3 * len(rq):
                r_star |= rq
        for j in r_star:
            v[i, j] = np.exp(-d[i, j])
        v[i] /= v[i].sum()
    v_qe = np.stack([v[ranking[i][:k2]].mean(axis=0) for i in range(n)])
    out = np.zeros((n_q, n_g))
    for p in range(n_q):
        for g in range(n_g):
            a, b = v_qe[p], v_qe[n_q + g]
            jac = 1 - np.minimum(a, b).sum() / np.maximum(a, b).sum()
            out[p, g] = (1 - lam) * jac + lam * d[p, n_q + g]
    return out


@pytest.mark.parametrize("k1, k2, lam", [(4, 3, 0.3), (6, 1, 0.0), (20, 6, 0.3)])
def test_matches_naive_reference(k1, k2, lam):
    rng = np.random.default_rng(k1)
    qf, gf = rng.normal(size=(7, 5)), rng.normal(size=(23, 5))
    q_g, q_q, g_g = (pairwise_distance(a, b) for a, b in ((qf, gf), (qf, qf), (gf, gf)))
    q_q, g_g = (q_q + q_q.T) / 2, (g_g + g_g.T) / 2  # exactly symmetric for the reference
    out = k_reciprocal_rerank(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lam)
    ref = naive_rerank(q_g, q_q, g_g, k1, k2, lam)
    assert out.shape == (7, 23) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, atol=1e-5)


def clustered(rng, n_ids, n_query, n_gallery, dim=16, spread=0.05):
    centers = rng.normal(size=(n_ids, dim))
    qp = np.repeat(np.arange(1, n_ids + 1), n_query)
    gp = np.repeat(np.arange(1, n_ids + 1), n_gallery)
    qf = centers[qp - 1] + spread * rng.normal(size=(qp.size, dim))
    gf = centers[gp - 1] + spread * rng.normal(size=(gp.size, dim))
    return qf, gf, qp, gp


@pytest.mark.parametrize("k1, k2", [(20, 6), (5, 3)])
def test_does_not_hurt_a_perfect_ranking(k1, k2):
    rng = np.random.default_rng(0)
    qf, gf, qp, gp = clustered(rng, n_ids=6, n_query=3, n_gallery=24)
    qc, gc = np.zeros(qp.size, int), np.ones(gp.size, int)
    before = evaluate(qf, gf, qp, gp, qc, gc)
    assert before["map_mean_precision"] == pytest.approx(1.0)
    after = evaluate(qf, gf, qp, gp, qc, gc, rerank=True, rerank_kwargs={"k1": k1, "k2": k2})
    assert after["map_mean_precision"] == pytest.approx(1.0)
    assert after["map_trapezoid"] == pytest.approx(before["map_trapezoid"])
    d = rerank_features(qf, gf, k1=k1, k2=k2)
    # Same-identity distances below every other-identity distance, for every query.
    same = qp[:, None] == gp[None, :]
    assert (np.where(same, d, -np.inf).max(1) < np.where(same, np.inf, d).min(1)).all()


def test_lambda_one_keeps_the_original_ranking():
    rng = np.random.default_rng(1)
    qf, gf = rng.normal(size=(6, 8)), rng.normal(size=(30, 8))
    d0 = pairwise_distance(qf, gf)
    d1 = rerank_features(qf, gf, lambda_value=1.0)
    np.testing.assert_array_equal(np.argsort(d1, axis=1, kind="stable"), np.argsort(d0, axis=1, kind="stable"))
    d_mixed = rerank_features(qf, gf, lambda_value=0.3)
    assert not np.allclose(d_mixed, d1)
    assert np.isfinite(d_mixed).all() and (d_mixed >= 0).all()


def test_swapping_query_and_gallery_transposes_the_jaccard_part():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(9, 6)), rng.normal(size=(17, 6))
    ab = rerank_features(a, b, k1=5, k2=3, lambda_value=0.0)
    ba = rerank_features(b, a, k1=5, k2=3, lambda_value=0.0)
    assert ab.shape == (9, 17) and ba.shape == (17, 9)
    np.testing.assert_allclose(ab, ba.T, atol=1e-6)


def test_limits_and_bad_input():
    rng = np.random.default_rng(3)
    qf, gf = rng.normal(size=(5, 4)), rng.normal(size=(10, 4))
    with pytest.raises(ValueError, match="max_items"):
        rerank_features(qf, gf, max_items=14)
    assert rerank_features(qf, gf, max_items=15).shape == (5, 10)
    q_g, q_q, g_g = pairwise_distance(qf, gf), pairwise_distance(qf, qf), pairwise_distance(gf, gf)
    with pytest.raises(ValueError, match="max_items"):
        k_reciprocal_rerank(q_g, q_q, g_g, max_items=10)
    asym = q_q.copy()
    asym[0, 1] += 1.0
    with pytest.raises(ValueError, match="q_q_dist"):
        k_reciprocal_rerank(q_g, asym, g_g)
    with pytest.raises(ValueError, match="g_g_dist"):
        k_reciprocal_rerank(q_g, q_q, g_g[:-1, :-1])
    bad = q_g.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="q_g_dist"):
        k_reciprocal_rerank(bad, q_q, g_g)
    with pytest.raises(ValueError, match="lambda_value"):
        k_reciprocal_rerank(q_g, q_q, g_g, lambda_value=1.5)
    with pytest.raises(ValueError, match="k1"):
        k_reciprocal_rerank(q_g, q_q, g_g, k1=0)
