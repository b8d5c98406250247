"""DIB-R soft silhouette (Chen et al. 2019, §3: the soft coverage of pixels outside every face).

Covered pixels get 1 (no gradient). An uncovered pixel gets 1 − Π_f (1 − exp(−σ·d_f²)), d_f the
NDC distance from the pixel centre to face f (its nearest edge or corner), σ = 7000 by default.

kaolin's CUDA kernel visits at most 30 faces whose box, grown by 0.02 NDC, holds the pixel; a face
just outside that box still weighs exp(−7000·0.02²) ≈ 0.06, so the kernel truncates visibly. We
bin faces the same way but grow each box by r = sqrt(ln(1/tol)/σ) (0.044 NDC at σ = 7000,
tol = 1e-6), so every face left out weighs < tol, and do not cap the count: the binned result
equals the all-faces sum to within ~tol per face (:func:`soft_silhouette_naive` is the
reference).
"""

from __future__ import annotations

import math

import torch

from mirror3d.render.camera import pixel_centers_ndc
from mirror3d.render.rasterize import face_candidates, face_pixel_ranges

__all__ = ["soft_silhouette", "soft_silhouette_naive", "soft_margin", "point_triangle_sq_dist"]

_MAX_OCC = 1.0 - 1e-6  # a single face never makes a pixel fully opaque (keeps log finite)


def soft_margin(sigma: float, tol: float = 1e-6) -> float:
    """NDC distance beyond which a face's weight exp(−σ·d²) is below ``tol``."""
    return math.sqrt(math.log(1.0 / tol) / sigma)


def _point_segment_sq(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    ab = b - a
    t = ((p - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-20)
    t = t.clamp(0.0, 1.0)
    q = a + t[..., None] * ab
    return ((p - q) ** 2).sum(-1)


def point_triangle_sq_dist(p: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
    """Squared distance from points outside a triangle to its boundary.

    Args:
        p: (..., 2).  tri: (..., 3, 2).
    Returns:
        (...) min over the three edges of the squared point-segment distance.
    """
    a, b, c = tri[..., 0, :], tri[..., 1, :], tri[..., 2, :]
    d = torch.stack([_point_segment_sq(p, a, b), _point_segment_sq(p, b, c),
                     _point_segment_sq(p, c, a)], dim=-1)
    return d.min(dim=-1).values


def _point_triangle_sq_dist_reference(p: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
    """:func:`point_triangle_sq_dist` restated another way, for :func:`soft_silhouette_naive`
    (so that the reference does not share the fast path's distance code): per edge ab, the
    squared perpendicular distance cross(b − a, p − a)² / |b − a|² where the foot of the
    perpendicular lies on the segment, else the squared distance to the nearer end."""
    corners = [tri[..., k, :] for k in range(3)]
    best = None
    for k in range(3):
        a, b = corners[k], corners[(k + 1) % 3]
        ex, ey = b[..., 0] - a[..., 0], b[..., 1] - a[..., 1]
        px, py = p[..., 0] - a[..., 0], p[..., 1] - a[..., 1]
        qx, qy = p[..., 0] - b[..., 0], p[..., 1] - b[..., 1]
        len2 = (ex * ex + ey * ey).clamp_min(1e-20)
        dot = px * ex + py * ey
        perp = (ex * py - ey * px) ** 2 / len2
        ends = torch.minimum(px * px + py * py, qx * qx + qy * qy)
        d = torch.where((dot > 0) & (dot < len2), perp, ends)
        best = d if best is None else torch.minimum(best, d)
    return best


def faces_near_uncovered(
    face_ndc: torch.Tensor, valid: torch.Tensor, coverage: torch.Tensor, margin: float
) -> torch.Tensor:
    """(B, F) bool: valid faces whose grown box holds at least one uncovered pixel.

    Faces inside the silhouette only touch covered pixels (soft value 1, no gradient), so they
    are dropped before enumerating (face, pixel) pairs. Uses a summed-area table of the
    uncovered pixels: O(1) per face.
    """
    bsz, h, w = coverage.shape
    with torch.no_grad():
        free = (coverage < 0.5).to(torch.int32)
        sat = torch.zeros(bsz, h + 1, w + 1, dtype=torch.int32, device=coverage.device)
        sat[:, 1:, 1:] = free.cumsum(1).cumsum(2)
        i0, i1, j0, j1 = face_pixel_ranges(face_ndc, (h, w), margin)
        nonempty = (i1 >= i0) & (j1 >= j0)
        i0, j0 = i0.clamp(0, h - 1), j0.clamp(0, w - 1)
        i1, j1 = i1.clamp(0, h - 1), j1.clamp(0, w - 1)
        b = torch.arange(bsz, device=coverage.device)[:, None]
        count = (sat[b, i1 + 1, j1 + 1] - sat[b, i0, j1 + 1] - sat[b, i1 + 1, j0]
                 + sat[b, i0, j0])
        return valid & nonempty & (count > 0)


def _log_transparency(d2: torch.Tensor, sigma: float) -> torch.Tensor:
    occ = torch.exp(-sigma * d2).clamp(max=_MAX_OCC)
    return torch.log1p(-occ)


def soft_silhouette(
    face_ndc: torch.Tensor,
    valid: torch.Tensor,
    coverage: torch.Tensor,
    sigma: float = 7000.0,
    tol: float = 1e-6,
) -> torch.Tensor:
    """Binned soft silhouette.

    Args:
        face_ndc: (B, F, 3, 2) projected corners (differentiable).
        valid: (B, F) bool faces that take part (front faces in front of the camera).
        coverage: (B, H, W) hard coverage from the rasteriser.
        sigma: sharpness in NDC units (DIB-R's ``sigmainv``).
        tol: weight below which a face is left out (sets the bin margin).
    Returns:
        (B, H, W) in [0, 1]: 1 on covered pixels, the soft probability elsewhere.
    """
    bsz, h, w = coverage.shape
    margin = soft_margin(sigma, tol)
    near = faces_near_uncovered(face_ndc, valid, coverage, margin)
    bi, fi, ri, ci = face_candidates(face_ndc, near, (h, w), margin)
    keep = coverage[bi, ri, ci] < 0.5
    bi, fi, ri, ci = bi[keep], fi[keep], ri[keep], ci[keep]
    ys, xs = pixel_centers_ndc((h, w), device=face_ndc.device, dtype=face_ndc.dtype)
    p = torch.stack([xs[ri, ci], ys[ri, ci]], dim=-1)
    d2 = point_triangle_sq_dist(p, face_ndc[bi, fi])
    log_t = _log_transparency(d2, sigma)
    pix = (bi * h + ri) * w + ci
    acc = face_ndc.new_zeros(bsz * h * w).index_add(0, pix, log_t)
    soft = 1.0 - torch.exp(acc.reshape(bsz, h, w))
    return torch.where(coverage > 0.5, torch.ones_like(soft), soft)


def soft_silhouette_naive(
    face_ndc: torch.Tensor,
    valid: torch.Tensor,
    coverage: torch.Tensor,
    sigma: float = 7000.0,
    pixel_chunk: int = 4096,
) -> torch.Tensor:
    """Reference: every uncovered pixel visits every valid face (chunked over pixels only to
    bound memory), with its own restatement of the point-triangle distance. Same arguments and
    result as :func:`soft_silhouette`."""
    bsz, h, w = coverage.shape
    ys, xs = pixel_centers_ndc((h, w), device=face_ndc.device, dtype=face_ndc.dtype)
    p_all = torch.stack([xs, ys], dim=-1).reshape(-1, 2)
    rows = []
    for b in range(bsz):
        tri = face_ndc[b][valid[b]]  # (F', 3, 2)
        parts = []
        for s in range(0, p_all.shape[0], pixel_chunk):
            p = p_all[s : s + pixel_chunk, None, :]  # (P, 1, 2)
            d2 = _point_triangle_sq_dist_reference(p, tri[None])  # (P, F')
            parts.append(_log_transparency(d2, sigma).sum(dim=1))
        rows.append(torch.cat(parts))
    soft = 1.0 - torch.exp(torch.stack(rows).reshape(bsz, h, w))
    return torch.where(coverage > 0.5, torch.ones_like(soft), soft)
