"""Chunked nearest-neighbour distances and the Chamfer distance (pytorch3d's "mean/mean" form).

The search for nearest neighbours runs without gradient and never materialises B x N x M: small
problems use an exhaustive search over blocks of at most ``chunk_size x chunk_size`` pairs; large
ones (N*M > chunk_size^2) an exact search that cuts both clouds into the leaves of a balanced
kd-tree and only compares leaves whose bounding boxes are close (100k x 100k points then take
seconds instead of the ~10^10 pair distances of the exhaustive search). The distances returned are
then recomputed exactly from the chosen pairs, which makes them accurate (no ``|a|^2 + |b|^2 - 2ab``
cancellation) and differentiable with respect to both clouds, like pytorch3d's ``knn_points``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["chamfer_distance", "nearest_sq_dist"]


def _check_cloud(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (B, N, 3), got {type(x).__name__}")
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (B, N, 3), got {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.shape[1] == 0:
        raise ValueError(f"{name} must hold at least one point per cloud, got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite coordinates")


def _check_pair(a: torch.Tensor, b: torch.Tensor, chunk_size: int, method: str) -> None:
    _check_cloud(a, "a")
    _check_cloud(b, "b")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"a and b must have the same batch size, got {a.shape[0]} and {b.shape[0]}")
    if int(chunk_size) != chunk_size or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
    if method not in ("auto", "brute", "blocks"):
        raise ValueError(f"method must be 'auto', 'brute' or 'blocks', got {method!r}")


def _augment(p: torch.Tensor, query: bool) -> torch.Tensor:
    """[p, |p|^2, 1] for queries, [-2p, 1, |p|^2] for references: their dot is |p - q|^2."""
    sq = (p * p).sum(-1, keepdim=True)
    one = torch.ones_like(sq)
    return torch.cat([p, sq, one], dim=-1) if query else torch.cat([-2 * p, one, sq], dim=-1)


@torch.no_grad()
def _brute_indices(
    a: torch.Tensor, b: torch.Tensor, chunk_size: int, both: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Exhaustive search: nearest b for every a (B, N) and, if ``both``, nearest a for every b (B, M).

    Works on blocks of (batch slice) x (chunk of a) x (chunk of b) holding at most chunk_size^2
    pairs; squared distances come from one ``bmm`` of augmented coordinates
    ``[p, |p|^2, 1] . [-2q, 1, |q|^2]`` after centring both clouds on their joint mean.
    """
    B, N, _ = a.shape
    M = b.shape[1]
    center = torch.cat([a, b], dim=1).mean(dim=1, keepdim=True)
    a = a - center
    b = b - center
    a_aug = _augment(a, query=True)  # (B, N, 5)
    b_aug = _augment(b, query=False)  # (B, M, 5)
    b_aug_t = b_aug.transpose(1, 2)  # (B, 5, M)

    n_c = min(N, chunk_size)
    m_c = min(M, chunk_size)
    b_c = max(1, (chunk_size * chunk_size) // (n_c * m_c))

    idx_ab = torch.empty(B, N, dtype=torch.long, device=a.device)
    best_ba = torch.full((B, M), float("inf"), dtype=a.dtype, device=a.device) if both else None
    idx_ba = torch.zeros(B, M, dtype=torch.long, device=a.device) if both else None

    for s in range(0, B, b_c):
        bs = slice(s, s + b_c)
        for i in range(0, N, n_c):
            best_row = None
            arg_row = None
            for j in range(0, M, m_c):
                d = torch.bmm(a_aug[bs, i : i + n_c], b_aug_t[bs, :, j : j + m_c])  # (b, n, m)
                v, k = d.min(dim=2)
                if best_row is None:
                    best_row, arg_row = v, k
                else:
                    better = v < best_row
                    best_row = torch.where(better, v, best_row)
                    arg_row = torch.where(better, k + j, arg_row)
                if both:
                    vc, kc = d.min(dim=1)  # (b, m)
                    cur = best_ba[bs, j : j + m_c]
                    better = vc < cur
                    best_ba[bs, j : j + m_c] = torch.where(better, vc, cur)
                    idx_ba[bs, j : j + m_c] = torch.where(better, kc + i, idx_ba[bs, j : j + m_c])
            idx_ab[bs, i : i + n_c] = arg_row
    return idx_ab, idx_ba


def _kd_leaves(x: torch.Tensor, block: int):
    """Partition one cloud into equal-size leaves of a balanced kd-tree (median splits).

    At every level each group of points is split at its median along its longest axis, so leaves
    are compact, nearly disjoint boxes. When N is not a multiple of the leaf count, a few points
    (spread over the cloud) are duplicated; duplicates do not change nearest distances.

    Args:
        x: (N, 3).
        block: largest leaf size.

    Returns:
        pts (L, S, 3) leaf points, orig (L, S) int64 index into x of every slot,
        box_lo (L, 3), box_hi (L, 3), with S <= block.
    """
    n = x.shape[0]
    levels = max(0, math.ceil(math.log2(n / block))) if n > block else 0
    num_leaves = 2**levels
    size = -(-n // num_leaves)
    pad = size * num_leaves - n
    idx = torch.arange(n, device=x.device)
    if pad:
        idx = torch.cat([idx, torch.arange(pad, device=x.device) * (n // pad)])
    idx = idx.view(1, -1)
    groups = 1
    for _ in range(levels):
        pts = x[idx]  # (G, S, 3)
        axis = (pts.amax(dim=1) - pts.amin(dim=1)).argmax(dim=1)  # (G,)
        key = torch.gather(pts, 2, axis.view(-1, 1, 1).expand(-1, pts.shape[1], 1)).squeeze(-1)
        idx = torch.gather(idx, 1, torch.argsort(key, dim=1))
        groups *= 2
        idx = idx.reshape(groups, -1)
    pts = x[idx]
    return pts, idx, pts.amin(dim=1), pts.amax(dim=1)


@torch.no_grad()
def _block_indices(
    q: torch.Tensor,
    r: torch.Tensor,
    chunk_size: int,
    q_block: int = 32,
    r_block: int = 32,
    k_start: int = 32,
) -> torch.Tensor:
    """Exact nearest r for every q (one cloud pair) with kd-leaf pruning.

    Both clouds are cut into kd-tree leaves of at most ``q_block`` / ``r_block`` points with
    bounding boxes.
    Every query leaf searches the K reference leaves whose boxes are nearest to its own (K starts
    at ``k_start``). The answer is exact once the largest nearest distance found in the query leaf is no
    larger than the box distance to every other reference leaf (the (K+1)-th smallest); leaves
    where that fails are searched again with K doubled (K = all leaves is the exhaustive search).

    Args:
        q: (N, 3), r: (M, 3).

    Returns:
        (N,) int64 index into r.
    """
    N = q.shape[0]
    q_pts, q_orig, q_lo, q_hi = _kd_leaves(q, q_block)
    r_pts, r_orig, r_lo, r_hi = _kd_leaves(r, r_block)
    nq, sq = q_pts.shape[:2]
    nr, sr = r_pts.shape[:2]
    r_flat = r_orig.reshape(-1)
    out = torch.empty(N, dtype=torch.long, device=q.device)

    # query leaves per step, so that the (leaves x nr) box distances stay within chunk_size^2 / 4
    per_step = max(1, chunk_size * chunk_size // (4 * nr))
    for s in range(0, nq, per_step):
        qb = torch.arange(s, min(s + per_step, nq), device=q.device)
        # squared distance between the leaf boxes, (c, nr); per axis at most one gap is positive
        box_lb = None
        for ax in range(3):
            g = torch.maximum(r_lo[None, :, ax] - q_hi[qb, None, ax], q_lo[qb, None, ax] - r_hi[None, :, ax])
            g = g.clamp_min_(0).square_()
            box_lb = g if box_lb is None else box_lb.add_(g)
        todo = torch.arange(qb.shape[0], device=q.device)
        k = min(k_start, nr)
        while todo.numel():
            lb = box_lb[todo]
            if k < nr:
                vals, cand_all = torch.topk(lb, k + 1, dim=1, largest=False, sorted=True)
                cand, bound = cand_all[:, :k], vals[:, k]
            else:
                cand = torch.arange(nr, device=q.device).expand(todo.numel(), nr)
                bound = None
            # sub-chunk so that (leaves x sq x k*sr) pair distances fit in chunk_size^2
            sub = max(1, chunk_size * chunk_size // (sq * k * sr))
            failed = []
            for t in range(0, todo.numel(), sub):
                rows = todo[t : t + sub]
                c = cand[t : t + sub]
                qp = q_pts[qb[rows]]  # (c, sq, 3)
                centre = qp.mean(dim=1, keepdim=True)
                rp = r_pts[c].reshape(rows.numel(), k * sr, 3) - centre
                d = torch.bmm(_augment(qp - centre, True), _augment(rp, False).transpose(1, 2))
                best, arg = d.min(dim=2)  # (c, sq)
                if bound is None:
                    ok = torch.ones(rows.numel(), dtype=torch.bool, device=q.device)
                else:
                    ok = best.amax(dim=1) <= bound[t : t + sub]
                slot = torch.gather(c, 1, arg // sr) * sr + arg % sr
                good = ok.nonzero().squeeze(1)
                if good.numel():
                    out[q_orig[qb[rows[good]]].reshape(-1)] = r_flat[slot[good]].reshape(-1)
                failed.append(rows[~ok])
            todo = torch.cat(failed)
            k = min(2 * k, nr)
    return out


@torch.no_grad()
def _nearest_indices(
    a: torch.Tensor, b: torch.Tensor, chunk_size: int, both: bool, method: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Nearest-neighbour indices a->b (B, N) and, if ``both``, b->a (B, M); no gradient."""
    dtype = torch.promote_types(a.dtype, b.dtype)
    a = a.detach().to(dtype)
    b = b.detach().to(dtype)
    B, N, M = a.shape[0], a.shape[1], b.shape[1]
    if method == "auto":
        method = "brute" if N * M <= chunk_size * chunk_size else "blocks"
    if method == "brute":
        return _brute_indices(a, b, chunk_size, both)
    idx_ab = torch.stack([_block_indices(a[i], b[i], chunk_size) for i in range(B)])
    idx_ba = torch.stack([_block_indices(b[i], a[i], chunk_size) for i in range(B)]) if both else None
    return idx_ab, idx_ba


def _gather_points(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x: (B, M, 3), idx: (B, N) -> (B, N, 3)."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def nearest_sq_dist(
    a: torch.Tensor,
    b: torch.Tensor,
    chunk_size: int = 4096,
    return_index: bool = False,
    method: str = "auto",
):
    """Squared distance from every point of ``a`` to its nearest point in ``b``.

    Args:
        a: (B, N, 3).
        b: (B, M, 3).
        chunk_size: block edge of the nearest-neighbour search.
        return_index: also return the index in ``b`` of each nearest point.
        method: "brute" (exhaustive, chunked), "blocks" (exact, pruned with kd-tree leaves)
            or "auto" (brute when N*M <= chunk_size^2, else blocks).

    Returns:
        (B, N) squared distances (differentiable w.r.t. ``a`` and ``b``), and (B, N) int64 indices
        when ``return_index``.
    """
    _check_pair(a, b, chunk_size, method)
    idx, _ = _nearest_indices(a, b, int(chunk_size), both=False, method=method)
    d = ((a - _gather_points(b, idx)) ** 2).sum(-1)
    return (d, idx) if return_index else d


def chamfer_distance(
    a: torch.Tensor,
    b: torch.Tensor,
    chunk_size: int = 4096,
    reduction: str = "mean",
    method: str = "auto",
) -> torch.Tensor:
    """Symmetric Chamfer distance with squared distances, pytorch3d's default "mean/mean".

    ``cd_b = mean_{p in a_b} min_{q in b_b} |p - q|^2 + mean_{q in b_b} min_{p in a_b} |p - q|^2``

    Args:
        a: (B, N, 3).
        b: (B, M, 3).
        chunk_size: block edge of the nearest-neighbour search.
        reduction: "mean" (scalar, mean over the batch) or "none" ((B,) per cloud pair).
        method: nearest-neighbour search, see ``nearest_sq_dist``.
    """
    _check_pair(a, b, chunk_size, method)
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    idx_ab, idx_ba = _nearest_indices(a, b, int(chunk_size), both=True, method=method)
    d_ab = ((a - _gather_points(b, idx_ab)) ** 2).sum(-1).mean(dim=1)
    d_ba = ((b - _gather_points(a, idx_ba)) ** 2).sum(-1).mean(dim=1)
    cd = d_ab + d_ba
    return cd.mean() if reduction == "mean" else cd
