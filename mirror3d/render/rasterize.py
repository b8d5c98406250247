"""Triangle rasterisation in pure PyTorch: face binning, z-buffer, barycentrics.

Faces are binned by their screen bounding box: every (face, pixel) pair whose pixel centre lies in
the face's bounding box grown by a margin is a *candidate*. The hard rasteriser keeps candidates
inside the triangle and resolves visibility with a z-buffer; the soft silhouette
(:mod:`mirror3d.render.soft_silhouette`) uses the same candidates with a margin wide enough that
faces further away contribute less than a set tolerance. No pixel ever visits all faces.

Conventions (DIB-R: Chen et al. 2019, §3, as CASL uses it): a face is drawn when its projected
triangle is counter-clockwise in NDC (y up), i.e. front-facing; barycentrics are screen-space (as
DIB-R interpolates), depth for the z-test is interpolated perspective-correctly (1/depth is linear
in screen space). Visibility (which face owns a pixel) is piecewise constant and carries no
gradient; the barycentrics of the owning face are recomputed with autograd, so interpolated
attributes (UVs, colours) pass gradients to the vertices.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mirror3d.render.camera import pixel_centers_ndc

__all__ = ["Fragments", "face_candidates", "face_pixel_ranges", "rasterize", "rasterize_naive", "barycentric",
           "NEAR_DEPTH"]

#: Faces with a vertex closer to the camera than this (along the view axis) are not drawn.
NEAR_DEPTH: float = 1e-2


@dataclass
class Fragments:
    """Per-pixel rasterisation output.

    Attributes:
        face_index: (B, H, W) int64, index of the visible face, −1 where nothing is drawn.
        bary: (B, H, W, 3) screen-space barycentrics of the visible face (0 on background);
            differentiable w.r.t. the projected vertices.
        depth: (B, H, W) view depth of the visible surface (0 on background).
        coverage: (B, H, W) float 0/1 hard coverage (no gradient).
    """

    face_index: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor
    coverage: torch.Tensor


def _cross2(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


def barycentric(p: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
    """Screen-space barycentric coordinates.

    Args:
        p: (..., 2) points.  tri: (..., 3, 2) triangle corners (broadcast with p).
    Returns:
        (..., 3) weights summing to 1 (undefined for degenerate triangles: area clamped).
    """
    a, b, c = tri[..., 0, :], tri[..., 1, :], tri[..., 2, :]
    area = _cross2(b - a, c - a)
    area = torch.where(area.abs() < 1e-12, torch.full_like(area, 1e-12), area)
    wa = _cross2(b - p, c - p) / area
    wb = _cross2(c - p, a - p) / area
    wc = _cross2(a - p, b - p) / area
    return torch.stack([wa, wb, wc], dim=-1)


def drawable_faces(face_ndc: torch.Tensor, face_depth: torch.Tensor) -> torch.Tensor:
    """(B, F) bool: front-facing (CCW in NDC) and entirely in front of the near plane."""
    tri = face_ndc
    area = _cross2(tri[..., 1, :] - tri[..., 0, :], tri[..., 2, :] - tri[..., 0, :])
    return (area > 1e-12) & (face_depth > NEAR_DEPTH).all(dim=-1)


def face_pixel_ranges(face_ndc: torch.Tensor, image_size: tuple[int, int], margin: float = 0.0):
    """Inclusive pixel index ranges of each face's NDC bounding box grown by ``margin``.

    Args:
        face_ndc: (B, F, 3, 2).
    Returns:
        i0, i1, j0, j1: (B, F) int64 first/last row and column (empty when last < first).
    """
    h, w = image_size
    with torch.no_grad():
        lo = face_ndc.amin(dim=2) - margin  # (B, F, 2)
        hi = face_ndc.amax(dim=2) + margin
        # x = (2j + 1 − W)/W  ⇔  j = (x·W + W − 1)/2 ;  y = (H − 2i − 1)/H  ⇔  i = (H − 1 − y·H)/2
        j0 = torch.ceil((lo[..., 0] * w + w - 1) / 2).clamp(0, w).long()
        j1 = torch.floor((hi[..., 0] * w + w - 1) / 2).clamp(-1, w - 1).long()
        i0 = torch.ceil((h - 1 - hi[..., 1] * h) / 2).clamp(0, h).long()
        i1 = torch.floor((h - 1 - lo[..., 1] * h) / 2).clamp(-1, h - 1).long()
    return i0, i1, j0, j1


def face_candidates(
    face_ndc: torch.Tensor,
    valid: torch.Tensor,
    image_size: tuple[int, int],
    margin: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Enumerate (face, pixel) pairs whose pixel centre lies in the face's NDC bounding box grown
    by ``margin``.

    Args:
        face_ndc: (B, F, 3, 2) projected corners.  valid: (B, F) bool, faces to consider.
        image_size: (H, W).  margin: NDC units added on every side of each box.
    Returns:
        batch, face, row, col: four (K,) int64 tensors.
    """
    dev = face_ndc.device
    i0, i1, j0, j1 = face_pixel_ranges(face_ndc, image_size, margin)
    with torch.no_grad():
        nx = (j1 - j0 + 1).clamp_min(0)
        ny = (i1 - i0 + 1).clamp_min(0)
        count = torch.where(valid, nx * ny, torch.zeros_like(nx)).reshape(-1)
        total = int(count.sum())
        flat = torch.repeat_interleave(torch.arange(count.numel(), device=dev), count)
        start = torch.cumsum(count, 0) - count
        offset = torch.arange(total, device=dev) - start[flat]
        nxf = nx.reshape(-1)[flat]
        col = j0.reshape(-1)[flat] + offset % nxf
        row = i0.reshape(-1)[flat] + torch.div(offset, nxf, rounding_mode="floor")
        n_faces = face_ndc.shape[1]
        return flat // n_faces, flat % n_faces, row, col


def rasterize(
    face_ndc: torch.Tensor,
    face_depth: torch.Tensor,
    image_size: tuple[int, int],
    valid: torch.Tensor | None = None,
) -> Fragments:
    """Z-buffered rasterisation of front faces, binned.

    Args:
        face_ndc: (B, F, 3, 2) projected corners (differentiable).
        face_depth: (B, F, 3) positive view depth of the corners.
        image_size: (H, W).
        valid: (B, F) bool faces to draw; default :func:`drawable_faces`.
    Returns:
        :class:`Fragments`.
    """
    h, w = image_size
    bsz, n_faces = face_ndc.shape[:2]
    if valid is None:
        valid = drawable_faces(face_ndc, face_depth)
    with torch.no_grad():
        bi, fi, ri, ci = face_candidates(face_ndc, valid, image_size, 0.0)
        ys, xs = pixel_centers_ndc(image_size, device=face_ndc.device, dtype=face_ndc.dtype)
        p = torch.stack([xs[ri, ci], ys[ri, ci]], dim=-1)
        tri = face_ndc.detach()[bi, fi]
        wts = barycentric(p, tri)
        inside = (wts >= 0).all(dim=-1)
        bi, fi, ri, ci, wts = bi[inside], fi[inside], ri[inside], ci[inside], wts[inside]
        inv_depth = (wts / face_depth.detach()[bi, fi]).sum(dim=-1)
        pix = (bi * h + ri) * w + ci
        zbuf = torch.full((bsz * h * w,), float("-inf"), device=face_ndc.device,
                          dtype=face_ndc.dtype)
        zbuf.scatter_reduce_(0, pix, inv_depth, reduce="amax", include_self=True)
        win = inv_depth >= zbuf[pix]
        face_index = torch.full((bsz * h * w,), -1, device=face_ndc.device, dtype=torch.long)
        face_index.scatter_reduce_(0, pix[win], fi[win], reduce="amax", include_self=True)
        face_index = face_index.reshape(bsz, h, w)
    return _fragments_from_index(face_ndc, face_depth, face_index, image_size)


def _fragments_from_index(face_ndc, face_depth, face_index, image_size) -> Fragments:
    """Differentiable barycentrics and depth for given per-pixel face ownership."""
    bsz = face_ndc.shape[0]
    covered = face_index >= 0
    b_idx, r_idx, c_idx = torch.nonzero(covered, as_tuple=True)
    f_idx = face_index[b_idx, r_idx, c_idx]
    ys, xs = pixel_centers_ndc(image_size, device=face_ndc.device, dtype=face_ndc.dtype)
    p = torch.stack([xs[r_idx, c_idx], ys[r_idx, c_idx]], dim=-1)
    wts = barycentric(p, face_ndc[b_idx, f_idx])
    depth = 1.0 / (wts / face_depth[b_idx, f_idx]).sum(dim=-1)
    h, w = image_size
    bary = face_ndc.new_zeros(bsz, h, w, 3).index_put((b_idx, r_idx, c_idx), wts)
    depth_map = face_ndc.new_zeros(bsz, h, w).index_put((b_idx, r_idx, c_idx), depth)
    return Fragments(face_index, bary, depth_map, covered.to(face_ndc.dtype))


def rasterize_naive(
    face_ndc: torch.Tensor,
    face_depth: torch.Tensor,
    image_size: tuple[int, int],
    valid: torch.Tensor | None = None,
) -> Fragments:
    """Reference rasteriser: every pixel tests every face (B·H·W·F work). For tests only."""
    if valid is None:
        valid = drawable_faces(face_ndc, face_depth)
    h, w = image_size
    bsz = face_ndc.shape[0]
    ys, xs = pixel_centers_ndc(image_size, device=face_ndc.device, dtype=face_ndc.dtype)
    p = torch.stack([xs, ys], dim=-1).reshape(-1, 1, 2)  # (P, 1, 2)
    face_index = torch.full((bsz, h * w), -1, dtype=torch.long, device=face_ndc.device)
    with torch.no_grad():
        for b in range(bsz):
            wts = barycentric(p, face_ndc[b].detach()[None])  # (P, F, 3)
            inside = (wts >= 0).all(-1) & valid[b][None]
            inv_depth = (wts / face_depth[b].detach()[None]).sum(-1)
            inv_depth = torch.where(inside, inv_depth, torch.full_like(inv_depth, float("-inf")))
            best = inv_depth.max(dim=1, keepdim=True).values
            is_best = inside & (inv_depth >= best)
            idx = torch.arange(face_ndc.shape[1], device=face_ndc.device).expand_as(is_best)
            fidx = torch.where(is_best, idx, torch.full_like(idx, -1)).max(dim=1).values
            face_index[b] = fidx
    return _fragments_from_index(face_ndc, face_depth, face_index.reshape(bsz, h, w), image_size)
