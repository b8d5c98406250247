"""Person re-id evaluation: CMC and mAP under the Market-1501 protocol.

Protocol: Market-1501 (Zheng et al. 2015, "Scalable Person Re-identification: A Benchmark", ICCV),
as its evaluation code applies it:

- Per query the gallery is ranked by similarity (cosine on L2-normalised features by default),
  most similar first. Exact ties keep gallery order (stable sort by gallery index).
- **Junk** is removed from each ranked list: gallery items with pid ``-1``, and items with the
  query's pid *and* the query's camera. pid ``0`` (Market ``0000`` distractors) is an ordinary
  negative.
- **Positives**: same pid, other camera.
- ``CMC@k``: fraction of queries whose first positive (after junk removal) is within the top k.
- AP, both forms in circulation, reported by name:

  - ``trapezoid`` (Market MATLAB code, OG-Net reference): for the i-th positive (0-based) at
    0-based rank ``r_i``: add ``(1/n_pos) * (p_prev + p_i) / 2`` with ``p_i = (i+1)/(r_i+1)``
    and ``p_prev = i/r_i``, or 1 when ``r_i = 0``.
  - ``mean_precision`` (torchreid, fast-reid): mean over positives of the precision at the hit.

- mAP and CMC average over queries with at least one positive; the others are counted
  (``num_queries_without_positive``) and a warning is logged.

Memory: queries are processed in chunks; one chunk holds a few (chunk, G) tensors (similarity,
sort order, masks, ~20 bytes per element). The chunk is the smaller of ``chunk_size`` and
``max_chunk_elements // G``, so a 10k-query x 100k-gallery evaluation never builds the full
10k x 100k matrix (4 GB in float32).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mirror3d.metrics.rerank import rerank_features

__all__ = ["evaluate", "rank_gallery", "scale_tta_features", "METRICS"]

logger = logging.getLogger(__name__)

METRICS = ("cosine", "euclidean")

# Default cap on (queries per chunk) x (gallery size): 2**25 elements, about 0.7 GB of
# temporaries per chunk.
DEFAULT_MAX_CHUNK_ELEMENTS = 1 << 25


# --------------------------------------------------------------------------------------------
# input checking
# --------------------------------------------------------------------------------------------
def _as_features(x: Any, name: str, device: torch.device | None = None) -> torch.Tensor:
    """Array-like (M, D) -> floating tensor (float32 unless already float64)."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name}: expected a (M, D) array or tensor, got {type(x).__name__}") from exc
    if device is not None:
        t = t.to(device)
    if t.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D (M, D) array, got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty (M, D) array, got shape {tuple(t.shape)}")
    if t.dtype.is_complex or t.dtype == torch.bool:
        raise ValueError(f"{name}: expected real-valued features, got dtype {t.dtype}")
    if t.dtype != torch.float64:
        t = t.to(torch.float32)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: features contain NaN or infinite values")
    return t


def _as_labels(x: Any, name: str, length: int, length_name: str, device: torch.device) -> torch.Tensor:
    """Array-like (M,) of integers -> int64 tensor on ``device``; checks the length."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
        ok = not (t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool)
    else:
        a = np.asarray(x)
        ok = a.dtype.kind in "iu"
        t = torch.as_tensor(a) if ok else None
    if not ok:
        dtype = x.dtype if hasattr(x, "dtype") else type(x).__name__
        raise ValueError(f"{name}: expected integer labels, got dtype {dtype}")
    if t.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {tuple(t.shape)}")
    if t.shape[0] != length:
        raise ValueError(f"{name}: length {t.shape[0]} does not match {length_name} ({length})")
    return t.to(device=device, dtype=torch.int64)


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def _check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")
    return metric


def _chunk_rows(chunk_size: int, n_gallery: int, max_chunk_elements: int) -> int:
    return max(1, min(chunk_size, max_chunk_elements // max(n_gallery, 1)))


def _similarity(q: torch.Tensor, g: torch.Tensor, metric: str, g_sq: torch.Tensor | None) -> torch.Tensor:
    """q: (c, D), g: (G, D) -> (c, G) similarity, higher = more alike.

    For "cosine" both inputs must already be L2-normalised. For "euclidean" the similarity is
    the negative squared distance; ``g_sq`` is ``(g * g).sum(1)``.
    """
    s = q @ g.T
    if metric == "euclidean":
        s.mul_(2.0).sub_(g_sq[None, :]).sub_((q * q).sum(1, keepdim=True))
    return s


def _descending_order(scores: torch.Tensor) -> torch.Tensor:
    """scores: (c, G), overwritten (negated in place) -> (c, G) int64 gallery indices by
    descending score, exact ties by ascending gallery index.

    A stable sort is ~3x slower than the default sort on CPU, and exact float32 ties are
    common at gallery sizes of 10^4-10^5 (birthday problem), so: sort with the fast sort,
    then re-order only the runs of equal values by gallery index.
    """
    vals, order = torch.sort(scores.neg_(), dim=1)
    eq = vals[:, 1:] == vals[:, :-1]  # (c, G-1): item t ties with item t+1
    del vals
    if not bool(eq.any()):
        return order
    in_run = torch.zeros(order.shape, dtype=torch.bool, device=order.device)
    in_run[:, 1:] |= eq
    in_run[:, :-1] |= eq
    r, t = in_run.nonzero(as_tuple=True)  # row-major: each run is a contiguous block here
    del in_run
    run_start = (t == 0) | ~eq[r, (t - 1).clamp_min(0)]
    run_id = torch.cumsum(run_start.to(torch.int64), 0)
    idx = order[r, t]
    # Sorting by (run id, gallery index) keeps every run in its block, indices ascending.
    perm = torch.argsort(run_id * order.shape[1] + idx)
    order[r, t] = idx[perm]
    return order


# --------------------------------------------------------------------------------------------
# per-chunk ranking statistics
# --------------------------------------------------------------------------------------------
def _rank_stats(
    scores: torch.Tensor,
    q_pids: torch.Tensor,
    q_cams: torch.Tensor,
    g_pids: torch.Tensor,
    g_cams: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ranking statistics for one chunk of queries.

    Args:
        scores: (c, G) similarity, higher = more alike. Overwritten (negated in place).
        q_pids, q_cams: (c,) int64. g_pids, g_cams: (G,) int64.

    Returns:
        first_rank: (c,) int64 0-based rank of the first positive after junk removal, -1 if none.
        ap_trapezoid: (c,) float64 (0 for queries without positives).
        ap_mean_precision: (c,) float64 (0 for queries without positives).
        n_pos: (c,) int64 number of positives.
    """
    c = scores.shape[0]
    device = scores.device
    order = _descending_order(scores)  # (c, G), ties by gallery index
    del scores

    same_pid = q_pids[:, None] == g_pids[None, :]  # (c, G)
    same_cam = q_cams[:, None] == g_cams[None, :]
    g_junk_id = (g_pids == -1)[None, :]
    junk = (same_pid & same_cam) | g_junk_id
    pos = same_pid & ~same_cam & ~g_junk_id
    del same_pid, same_cam
    n_pos = pos.sum(dim=1)  # (c,)

    pos_sorted = torch.gather(pos, 1, order)
    valid_sorted = ~torch.gather(junk, 1, order)
    del pos, junk, order
    # 0-based rank among non-junk items (meaningful where valid_sorted is True).
    rank_sorted = torch.cumsum(valid_sorted, dim=1, dtype=torch.int32)
    rank_sorted.sub_(1)
    del valid_sorted

    rows, cols = pos_sorted.nonzero(as_tuple=True)  # row-major: positives in rank order per row
    r = rank_sorted[rows, cols].to(torch.float64)  # (M,)
    del rank_sorted, pos_sorted
    # i = 0-based index of each hit among its query's positives.
    starts = torch.cumsum(n_pos, 0) - n_pos
    i = (torch.arange(rows.numel(), device=device) - starts[rows]).to(torch.float64)
    npos_hit = n_pos[rows].to(torch.float64)

    p_i = (i + 1.0) / (r + 1.0)
    p_prev = torch.where(r == 0, torch.ones_like(r), i / r.clamp_min(1.0))
    ap_mp = torch.zeros(c, dtype=torch.float64, device=device).index_add_(0, rows, p_i / npos_hit)
    ap_tr = torch.zeros(c, dtype=torch.float64, device=device).index_add_(
        0, rows, (p_prev + p_i) / (2.0 * npos_hit)
    )

    first_rank = torch.full((c,), -1, dtype=torch.int64, device=device)
    is_first = i == 0
    first_rank[rows[is_first]] = r[is_first].to(torch.int64)
    return first_rank, ap_tr, ap_mp, n_pos


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------
def evaluate(
    query_feats: Any,
    gallery_feats: Any,
    query_pids: Any,
    gallery_pids: Any,
    query_camids: Any,
    gallery_camids: Any,
    topk: int = 10,
    chunk_size: int = 1024,
    metric: str = "cosine",
    rerank: bool = False,
    rerank_kwargs: Mapping[str, Any] | None = None,
    max_chunk_elements: int = DEFAULT_MAX_CHUNK_ELEMENTS,
) -> dict[str, Any]:
    """CMC and mAP of a query set against a gallery (Market-1501 protocol, module docstring).

    Args:
        query_feats: (Q, D) features, numpy array or torch tensor (computed on its device).
        gallery_feats: (G, D) features.
        query_pids, query_camids: (Q,) integer labels.
        gallery_pids, gallery_camids: (G,) integer labels; pid -1 is junk, pid 0 a distractor.
        topk: length of the returned CMC curve.
        chunk_size: queries per chunk (upper bound, see ``max_chunk_elements``).
        metric: "cosine" (features L2-normalised, similarity = dot product) or "euclidean"
            (similarity = negative squared Euclidean distance on the raw features).
        rerank: apply k-reciprocal re-ranking (:mod:`mirror3d.metrics.rerank`) before ranking.
            It needs dense (Q+G)^2 distances, so it is limited to a few thousand items.
        rerank_kwargs: extra arguments for :func:`mirror3d.metrics.rerank.rerank_features`
            (k1, k2, lambda_value, max_items).
        max_chunk_elements: cap on chunk x G, bounding the per-chunk memory.

    Returns:
        dict with
        ``cmc``: (topk,) float64 numpy array, CMC@1..topk;
        ``map_trapezoid``, ``map_mean_precision``: float mAP in both AP forms;
        ``rank1``, ``rank5``, ``rank10``: CMC@1/5/10 (independent of ``topk``);
        ``num_valid_queries``: queries with at least one positive (the ones averaged);
        ``num_queries_without_positive``: queries left out of the averages.

        If no query has a positive, nothing can be averaged: no exception is raised, every
        CMC/mAP value is NaN, ``num_valid_queries`` is 0, and a warning is logged.

    Raises:
        ValueError: wrong ndim, mismatched lengths or feature dimensions, non-integer labels,
            NaN/inf features, bad ``topk``/``chunk_size``/``metric``.
    """
    metric = _check_metric(metric)
    topk = _check_positive_int(topk, "topk")
    chunk_size = _check_positive_int(chunk_size, "chunk_size")
    max_chunk_elements = _check_positive_int(max_chunk_elements, "max_chunk_elements")

    qf = _as_features(query_feats, "query_feats")
    device = qf.device
    gf = _as_features(gallery_feats, "gallery_feats", device=device)
    if gf.shape[1] != qf.shape[1]:
        raise ValueError(
            f"gallery_feats: feature dimension {gf.shape[1]} does not match query_feats ({qf.shape[1]})"
        )
    if gf.dtype != qf.dtype:
        qf, gf = qf.to(torch.float64), gf.to(torch.float64)
    n_q, n_g = qf.shape[0], gf.shape[0]
    q_pids = _as_labels(query_pids, "query_pids", n_q, "query_feats rows", device)
    q_cams = _as_labels(query_camids, "query_camids", n_q, "query_feats rows", device)
    g_pids = _as_labels(gallery_pids, "gallery_pids", n_g, "gallery_feats rows", device)
    g_cams = _as_labels(gallery_camids, "gallery_camids", n_g, "gallery_feats rows", device)

    if rerank:
        dist = rerank_features(qf, gf, metric=metric, **dict(rerank_kwargs or {}))  # (Q, G) numpy

        def chunk_scores(s: int, e: int) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(dist[s:e])).to(device).neg()

    else:
        if rerank_kwargs:
            raise ValueError("rerank_kwargs: given but rerank=False")
        if metric == "cosine":
            qf = F.normalize(qf, dim=1)
            gf = F.normalize(gf, dim=1)
            g_sq = None
        else:
            g_sq = (gf * gf).sum(1)

        def chunk_scores(s: int, e: int) -> torch.Tensor:
            return _similarity(qf[s:e], gf, metric, g_sq)

    step = _chunk_rows(chunk_size, n_g, max_chunk_elements)
    first_rank, ap_tr, ap_mp, n_pos = [], [], [], []
    with torch.no_grad():
        for s in range(0, n_q, step):
            e = min(n_q, s + step)
            fr, tr, mp, npos = _rank_stats(chunk_scores(s, e), q_pids[s:e], q_cams[s:e], g_pids, g_cams)
            first_rank.append(fr.cpu())
            ap_tr.append(tr.cpu())
            ap_mp.append(mp.cpu())
            n_pos.append(npos.cpu())
    first = torch.cat(first_rank).numpy()
    has_pos = torch.cat(n_pos).numpy() > 0
    ap_tr_all = torch.cat(ap_tr).numpy()
    ap_mp_all = torch.cat(ap_mp).numpy()

    n_valid = int(has_pos.sum())
    n_missing = n_q - n_valid
    if n_valid == 0:
        logger.warning(
            "re-id evaluation: none of the %d queries has a positive in the gallery; "
            "CMC and mAP are NaN", n_q,
        )
        nan = float("nan")
        return {
            "cmc": np.full(topk, np.nan),
            "map_trapezoid": nan,
            "map_mean_precision": nan,
            "rank1": nan,
            "rank5": nan,
            "rank10": nan,
            "num_valid_queries": 0,
            "num_queries_without_positive": n_missing,
        }
    if n_missing:
        logger.warning(
            "re-id evaluation: %d of %d queries have no positive in the gallery and are "
            "excluded from CMC and mAP", n_missing, n_q,
        )
    fr = first[has_pos]

    def cmc_at(k: int) -> float:
        return float(np.mean(fr < k))

    return {
        "cmc": np.array([cmc_at(k) for k in range(1, topk + 1)], dtype=np.float64),
        "map_trapezoid": float(ap_tr_all[has_pos].mean()),
        "map_mean_precision": float(ap_mp_all[has_pos].mean()),
        "rank1": cmc_at(1),
        "rank5": cmc_at(5),
        "rank10": cmc_at(10),
        "num_valid_queries": n_valid,
        "num_queries_without_positive": n_missing,
    }


def rank_gallery(
    query_feats: Any,
    gallery_feats: Any,
    k: int | None = None,
    metric: str = "cosine",
    chunk_size: int = 1024,
    max_chunk_elements: int = DEFAULT_MAX_CHUNK_ELEMENTS,
) -> np.ndarray:
    """Gallery indices ranked by similarity, most similar first (ties by gallery index).

    Args:
        query_feats: (Q, D). gallery_feats: (G, D).
        k: keep the first k of each ranking (default: all G). Ask for more than you show when
            junk will be dropped afterwards (e.g. by :func:`ranked_results_grid`).

    Returns:
        (Q, k) int64 numpy array of gallery indices.
    """
    metric = _check_metric(metric)
    chunk_size = _check_positive_int(chunk_size, "chunk_size")
    qf = _as_features(query_feats, "query_feats")
    gf = _as_features(gallery_feats, "gallery_feats", device=qf.device)
    if gf.shape[1] != qf.shape[1]:
        raise ValueError(
            f"gallery_feats: feature dimension {gf.shape[1]} does not match query_feats ({qf.shape[1]})"
        )
    if gf.dtype != qf.dtype:
        qf, gf = qf.to(torch.float64), gf.to(torch.float64)
    n_g = gf.shape[0]
    k = n_g if k is None else _check_positive_int(k, "k")
    if k > n_g:
        raise ValueError(f"k: expected at most the gallery size ({n_g}), got {k}")
    if metric == "cosine":
        qf, gf = F.normalize(qf, dim=1), F.normalize(gf, dim=1)
        g_sq = None
    else:
        g_sq = (gf * gf).sum(1)
    step = _chunk_rows(chunk_size, n_g, max_chunk_elements)
    out = []
    with torch.no_grad():
        for s in range(0, qf.shape[0], step):
            sc = _similarity(qf[s : s + step], gf, metric, g_sq)
            out.append(_descending_order(sc)[:, :k].cpu())
    return torch.cat(out).numpy()


def _batch_inputs(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, Mapping):
        try:
            return batch["xyz"], batch["rgb"]
        except KeyError as exc:
            raise ValueError(f"batches: a dict batch needs keys 'xyz' and 'rgb', got {sorted(batch)}") from exc
    if isinstance(batch, Sequence) and not isinstance(batch, (str, bytes)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise ValueError(
        f"batches: each batch must be (xyz, rgb, ...) or a dict with 'xyz' and 'rgb', got {type(batch).__name__}"
    )


def scale_tta_features(
    model_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batches: Iterable[Any],
    tta_scale: float | None = 1.1,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Point-cloud re-id features with OG-Net's scale test-time augmentation, as its public test
    code computes them (the one feature rule of the re-id engine for points:
    :func:`mirror3d.engine.reid_train.embed_dataset`).

    OG-Net: Zheng et al. 2021, "Parameter-Efficient Person Re-identification in the 3D Space"
    (arXiv:2006.04569; code at github.com/layumi/person-reid-3d).

    ``f = model_fn(xyz, rgb) + model_fn(tta_scale * xyz, rgb)`` (rgb unchanged), then
    ``f / (||f||_2 + eps)``. ``tta_scale=None`` skips the second pass. Runs under
    ``torch.no_grad()``; put the model in eval mode first.

    Args:
        model_fn: callable ``(xyz (B, N, 3), rgb (B, N, 3)) -> (B, D)`` (any point layout the
            callable understands; only the batch dimension is relied upon).
        batches: iterable of ``(xyz, rgb, ...)`` tuples or dicts with keys "xyz" and "rgb";
            extra items/keys (labels, paths) are ignored.
        tta_scale: xyz scale of the second pass (OG-Net: 1.1).
        eps: added to the norm (OG-Net: 1e-6).

    Returns:
        (sum of B, D) float tensor on the model output's device.
    """
    if tta_scale is not None and not (isinstance(tta_scale, (int, float)) and math.isfinite(tta_scale)):
        raise ValueError(f"tta_scale: expected a finite number or None, got {tta_scale!r}")
    feats = []
    with torch.no_grad():
        for n, batch in enumerate(batches):
            xyz, rgb = _batch_inputs(batch)
            f = model_fn(xyz, rgb)
            if tta_scale is not None:
                f = f + model_fn(xyz * tta_scale, rgb)
            if not isinstance(f, torch.Tensor) or f.ndim != 2 or f.shape[0] != xyz.shape[0]:
                shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
                raise ValueError(
                    f"model_fn: expected a (B, D) tensor with B = {xyz.shape[0]} for batch {n}, got {shape}"
                )
            if not bool(torch.isfinite(f).all()):
                raise ValueError(f"model_fn: non-finite features for batch {n}")
            feats.append(f / (f.norm(dim=1, keepdim=True) + eps))
    if not feats:
        raise ValueError("batches: no batches given")
    return torch.cat(feats, dim=0)
