"""k-reciprocal re-ranking (Zhong, Zheng, Cao, Li, "Re-ranking Person Re-identification with
k-reciprocal Encoding", CVPR 2017), written from the paper's description.

All Q queries and G gallery items form one set of N = Q + G items with original distance d.

1. ``N(p, k)``: the k nearest neighbours of p plus p itself (the first k + 1 of p's ranking;
   exact ties keep item order).
2. k-reciprocal neighbours ``R(p, k) = {g in N(p, k) : p in N(g, k)}``.
3. Expansion: ``R*(p, k) = R(p, k) ∪ R(q, k/2)`` for every ``q in R(p, k)`` with
   ``|R(p, k) ∩ R(q, k/2)| >= 2/3 |R(q, k/2)|`` (k/2 rounded half up).
4. Encoding: ``V_p[g] = exp(-d(p, g))`` for g in ``R*(p, k1)``, else 0; each row is divided by
   its sum (as in the authors' released code; the paper leaves the scale open).
5. Local query expansion: ``V_p <- mean of V_q over the first k2 items of p's ranking``
   (p included).
6. Jaccard distance ``d_J(p, g) = 1 - Σ_j min(V_p[j], V_g[j]) / Σ_j max(V_p[j], V_g[j])``,
   computed sparsely through an inverted index (``Σ max = Σ V_p + Σ V_g - Σ min``).
7. Final distance ``d* = (1 - λ) d_J + λ d``.

The original distance is clipped at 0 and each row of the N x N matrix is divided by its
maximum before use, so ``exp(-d)`` weights and ``λ`` act on the same scale for any metric
(also the released code's convention).

Memory: a dense (N, N) float32 distance matrix, 4·N² bytes, plus O(N·(k1+1)²) index arrays and
the sparse encodings. N = 10,000 is about 0.4 GB; above ``max_items`` (default 10,000) a
ValueError is raised instead of running out of memory. Time is dominated by the row-wise
stable sorts, O(N² log N).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["k_reciprocal_rerank", "rerank_features", "pairwise_distance", "DEFAULT_MAX_ITEMS"]

DEFAULT_MAX_ITEMS = 10_000
_SORT_ROWS = 256  # rows per argsort chunk


def _as_matrix(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array, got shape {a.shape}")
    if a.dtype.kind not in "fiu":
        raise ValueError(f"{name}: expected a real-valued array, got dtype {a.dtype}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return a


def pairwise_distance(a: Any, b: Any, metric: str = "cosine") -> np.ndarray:
    """Squared Euclidean distance between rows, L2-normalised first for "cosine".

    a: (M, D), b: (K, D) -> (M, K) float32 numpy (computed in float32, clipped at 0). For
    "cosine" this is ``2 - 2 cos``.
    """
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric: expected 'cosine' or 'euclidean', got {metric!r}")
    a = torch.as_tensor(_as_matrix(a, "a"), dtype=torch.float32)
    b = torch.as_tensor(_as_matrix(b, "b"), dtype=torch.float32)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"b: feature dimension {b.shape[1]} does not match a ({a.shape[1]})")
    if metric == "cosine":
        a = torch.nn.functional.normalize(a, dim=1)
        b = torch.nn.functional.normalize(b, dim=1)
    d = a @ b.T  # (M, K), turned into distances in place
    d.mul_(-2.0).add_((a * a).sum(1)[:, None]).add_((b * b).sum(1)[None, :])
    return d.clamp_min_(0.0).numpy()


def _stable_topk_rows(dist: np.ndarray, k: int) -> np.ndarray:
    """(N, N) -> (N, k) int64: indices of the k smallest per row, ties by index."""
    out = np.empty((dist.shape[0], k), dtype=np.int64)
    for s in range(0, dist.shape[0], _SORT_ROWS):
        out[s : s + _SORT_ROWS] = np.argsort(dist[s : s + _SORT_ROWS], axis=1, kind="stable")[:, :k]
    return out


def _reciprocal_sets(initial_rank: np.ndarray, k: int) -> list[np.ndarray]:
    """R(p, k) for every p: members of N(p, k) that have p in their own N(., k)."""
    n = initial_rank.shape[0]
    fwd = initial_rank[:, : k + 1]  # (N, k+1)
    back = initial_rank[fwd, : k + 1]  # (N, k+1, k+1)
    recip = (back == np.arange(n)[:, None, None]).any(axis=2)  # (N, k+1)
    return [fwd[p][recip[p]] for p in range(n)]


def _expanded_sets(r_full: list[np.ndarray], r_half: list[np.ndarray], n: int) -> list[np.ndarray]:
    """R*(p, k1) = R(p, k1) plus every R(q, k1/2), q in R(p, k1), overlapping it by >= 2/3."""
    mark = np.zeros(n, dtype=bool)
    out = []
    for base in r_full:
        mark[base] = True
        parts = [base]
        for q in base:
            cand = r_half[q]
            if cand.size and 3 * int(mark[cand].sum()) >= 2 * cand.size:
                parts.append(cand)
        mark[base] = False
        out.append(np.unique(np.concatenate(parts)))
    return out


def _check_square_symmetric(a: np.ndarray, name: str, size: int, size_name: str) -> None:
    if a.shape != (size, size):
        raise ValueError(f"{name}: expected shape ({size}, {size}) to match {size_name}, got {a.shape}")
    tol = 1e-4 * max(1.0, float(np.abs(a).max()) if a.size else 1.0)
    if not np.allclose(a, a.T, rtol=0.0, atol=tol):
        raise ValueError(f"{name}: expected a symmetric distance matrix")


def k_reciprocal_rerank(
    q_g_dist: Any,
    q_q_dist: Any,
    g_g_dist: Any,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    max_items: int = DEFAULT_MAX_ITEMS,
) -> np.ndarray:
    """Re-ranked query-gallery distances (module docstring for the algorithm).

    Args:
        q_g_dist: (Q, G) original query-gallery distances (smaller = more alike, >= 0).
        q_q_dist: (Q, Q) symmetric query-query distances.
        g_g_dist: (G, G) symmetric gallery-gallery distances.
        k1: size of the k-reciprocal neighbourhood (paper: 20).
        k2: size of the local query expansion (paper: 6); 1 disables it.
        lambda_value: weight of the original distance (paper: 0.3).
        max_items: refuse Q + G above this (memory ~ 4·(Q+G)² bytes).

    Returns:
        (Q, G) float32 numpy array of final distances ``(1 - λ) d_J + λ d``.
    """
    q_g = _as_matrix(q_g_dist, "q_g_dist").astype(np.float32, copy=False)
    n_q, n_g = q_g.shape
    if n_q == 0 or n_g == 0:
        raise ValueError(f"q_g_dist: expected a non-empty (Q, G) matrix, got shape {q_g.shape}")
    q_q = _as_matrix(q_q_dist, "q_q_dist")
    g_g = _as_matrix(g_g_dist, "g_g_dist")
    _check_square_symmetric(q_q, "q_q_dist", n_q, "the rows of q_g_dist")
    _check_square_symmetric(g_g, "g_g_dist", n_g, "the columns of q_g_dist")
    for name, v in (("k1", k1), ("k2", k2), ("max_items", max_items)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name}: expected a positive integer, got {v!r}")
    if not (0.0 <= float(lambda_value) <= 1.0):
        raise ValueError(f"lambda_value: expected a number in [0, 1], got {lambda_value!r}")
    n = n_q + n_g
    if n > max_items:
        raise ValueError(
            f"q_g_dist: re-ranking {n_q} queries + {n_g} gallery items = {n} > max_items={max_items}; "
            f"it needs a dense {n}x{n} matrix (~{4 * n * n / 2**30:.1f} GiB). Raise max_items if "
            "the memory is there, or evaluate without re-ranking."
        )

    dist = np.empty((n, n), dtype=np.float32)
    dist[:n_q, :n_q] = q_q
    dist[:n_q, n_q:] = q_g
    dist[n_q:, :n_q] = q_g.T
    dist[n_q:, n_q:] = g_g
    np.maximum(dist, 0.0, out=dist)
    row_max = dist.max(axis=1, keepdims=True)
    row_max[row_max <= 0] = 1.0
    dist /= row_max

    k1 = min(int(k1), n - 1) if n > 1 else 0
    k2 = min(int(k2), n)
    k_half = int(np.floor(k1 / 2 + 0.5))
    initial_rank = _stable_topk_rows(dist, max(k1 + 1, k2))  # (N, K)

    r_full = _reciprocal_sets(initial_rank, k1)
    r_half = _reciprocal_sets(initial_rank, k_half)
    r_star = _expanded_sets(r_full, r_half, n)

    # Sparse encodings V: (N, N), rows sum to 1 (a row is empty only if p is not in its own
    # neighbourhood, i.e. > k1 exact duplicates precede it).
    counts = np.array([s.size for s in r_star])
    rows = np.repeat(np.arange(n), counts)
    cols = np.concatenate(r_star) if n else np.empty(0, np.int64)
    w = np.exp(-dist[rows, cols]).astype(np.float64)
    row_sum = np.bincount(rows, weights=w, minlength=n)
    w /= np.where(row_sum > 0, row_sum, 1.0)[rows]
    v = sp.csr_matrix((w, (rows, cols)), shape=(n, n))

    if k2 > 1:
        qe_rows = np.repeat(np.arange(n), k2)
        qe_cols = initial_rank[:, :k2].ravel()
        qe = sp.csr_matrix((np.full(qe_rows.size, 1.0 / k2), (qe_rows, qe_cols)), shape=(n, n))
        v = (qe @ v).tocsr()

    v_q = v[:n_q].tocsr()
    v_g = v[n_q:].tocsc()  # columns -> gallery rows holding that column (inverted index)
    v_g.sort_indices()
    q_sums = np.asarray(v_q.sum(axis=1)).ravel()
    g_sums = np.asarray(v_g.sum(axis=1)).ravel()

    jaccard = np.empty((n_q, n_g), dtype=np.float64)
    for p in range(n_q):
        lo, hi = v_q.indptr[p], v_q.indptr[p + 1]
        cols_p, vals_p = v_q.indices[lo:hi], v_q.data[lo:hi]
        starts = v_g.indptr[cols_p]
        cnt = v_g.indptr[cols_p + 1] - starts
        total = int(cnt.sum())
        if total:
            # Flat positions of every (column j of p) x (gallery row with V_g[j] > 0) entry.
            offsets = np.repeat(starts - (np.cumsum(cnt) - cnt), cnt) + np.arange(total)
            mins = np.minimum(np.repeat(vals_p, cnt), v_g.data[offsets])
            min_sum = np.bincount(v_g.indices[offsets], weights=mins, minlength=n_g)
        else:
            min_sum = np.zeros(n_g)
        max_sum = q_sums[p] + g_sums - min_sum
        with np.errstate(invalid="ignore", divide="ignore"):
            jaccard[p] = np.where(max_sum > 0, 1.0 - min_sum / max_sum, 1.0)

    lam = float(lambda_value)
    out = (1.0 - lam) * jaccard + lam * dist[:n_q, n_q:]
    return out.astype(np.float32)


def rerank_features(
    query_feats: Any,
    gallery_feats: Any,
    metric: str = "cosine",
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    max_items: int = DEFAULT_MAX_ITEMS,
) -> np.ndarray:
    """k-reciprocal re-ranking from features.

    query_feats: (Q, D), gallery_feats: (G, D) -> (Q, G) float32 re-ranked distances. The
    original distance is :func:`pairwise_distance` with ``metric``.
    """
    qf = _as_matrix(query_feats, "query_feats")
    gf = _as_matrix(gallery_feats, "gallery_feats")
    n = qf.shape[0] + gf.shape[0]
    if isinstance(max_items, (int, np.integer)) and not isinstance(max_items, bool) and n > max_items:
        raise ValueError(
            f"query_feats: re-ranking {qf.shape[0]} + {gf.shape[0]} = {n} items > max_items={max_items}"
        )
    return k_reciprocal_rerank(
        pairwise_distance(qf, gf, metric),
        pairwise_distance(qf, qf, metric),
        pairwise_distance(gf, gf, metric),
        k1=k1,
        k2=k2,
        lambda_value=lambda_value,
        max_items=max_items,
    )
