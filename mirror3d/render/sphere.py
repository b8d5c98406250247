"""The CASL template: an icosphere with per-corner UVs, and its normalisation.

CASL (Zheng et al. 2022, "3D Magic Mirror", arXiv:2204.13096) starts from this prior template. Its
public code loads ``template/sphere.obj``; we build the same mesh procedurally: a level-3
subdivided icosahedron of radius 0.5 (642 vertices, 1280 faces, 1920 edges, outward winding),
with the UV layout u = 0.5 + asin(x/r)/π, v = (0.25 + atan2(y, z)/2π) mod 1, whose seam runs
along the bottom meridian (y < 0, z = 0).
"""

from __future__ import annotations

import math

import torch

__all__ = ["ico_sphere", "sphere_face_uvs", "normalize_template", "template_mesh"]


def _icosahedron() -> tuple[torch.Tensor, torch.Tensor]:
    t = (1.0 + math.sqrt(5.0)) / 2.0
    verts = torch.tensor(
        [
            [-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0],
            [0, -1, t], [0, 1, t], [0, -1, -t], [0, 1, -t],
            [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1],
        ],
        dtype=torch.float64,
    )
    faces = torch.tensor(
        [
            [0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11],
            [1, 5, 9], [5, 11, 4], [11, 10, 2], [10, 7, 6], [7, 1, 8],
            [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9],
            [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1],
        ],
        dtype=torch.int64,
    )
    return verts / verts.norm(dim=1, keepdim=True), faces


def _subdivide(verts: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split every face into 4 with edge midpoints pushed back onto the unit sphere."""
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], dim=0)
    edges_sorted = edges.sort(dim=1).values
    unique, inverse = torch.unique(edges_sorted, dim=0, return_inverse=True)
    mid = verts[unique].mean(dim=1)
    mid = mid / mid.norm(dim=1, keepdim=True)
    new_verts = torch.cat([verts, mid], dim=0)
    f = faces.shape[0]
    m01, m12, m20 = (inverse[:f] + verts.shape[0], inverse[f : 2 * f] + verts.shape[0],
                     inverse[2 * f :] + verts.shape[0])
    a, b, c = faces[:, 0], faces[:, 1], faces[:, 2]
    new_faces = torch.cat(
        [
            torch.stack([a, m01, m20], dim=1),
            torch.stack([b, m12, m01], dim=1),
            torch.stack([c, m20, m12], dim=1),
            torch.stack([m01, m12, m20], dim=1),
        ],
        dim=0,
    )
    return new_verts, new_faces


def ico_sphere(
    level: int = 3,
    radius: float = 0.5,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """An icosphere.

    Args:
        level: subdivision level; level 3 gives the CASL template (642 vertices, 1280 faces).
        radius: sphere radius (0.5 for the template).

    Returns:
        verts: (V, 3) with V = 10·4^level + 2, all at distance ``radius`` from the origin.
        faces: (F, 3) int64 with F = 20·4^level, wound counter-clockwise seen from outside, so
            (v1 − v0) × (v2 − v0) points outward.
    """
    if not isinstance(level, int) or level < 0 or level > 7:
        raise ValueError(f"level: expected an int in [0, 7], got {level!r}")
    if not (radius > 0 and math.isfinite(radius)):
        raise ValueError(f"radius: expected a finite value > 0, got {radius!r}")
    verts, faces = _icosahedron()
    for _ in range(level):
        verts, faces = _subdivide(verts, faces)
    return (verts * radius).to(device=device, dtype=dtype), faces.to(device=device)


def sphere_face_uvs(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Per-corner UVs of the CASL template layout.

    u = 0.5 + asin(x/r)/π and v = (0.25 + atan2(y, z)/2π) mod 1, with r = |p|. The v seam lies
    on the bottom meridian (y < 0, z = 0): for a face that straddles it (v spread > 0.5) the
    corners with v < 0.5 get v + 1, so the face does not span the whole texture; texture lookup
    clamps v to [0, 1] (and OBJ/GLB viewers wrap it), so those faces read the seam row.

    Args:
        verts: (V, 3) sphere vertices centred at the origin.
        faces: (F, 3) int64.
    Returns:
        face_uvs: (F, 3, 2) with v pointing up (OpenGL convention).
    """
    r = verts.norm(dim=-1).clamp_min(1e-12)
    u = 0.5 + torch.asin((verts[:, 0] / r).clamp(-1.0, 1.0)) / math.pi
    v = torch.remainder(0.25 + torch.atan2(verts[:, 1], verts[:, 2]) / (2 * math.pi), 1.0)
    fu, fv = u[faces], v[faces]
    spread = fv.max(dim=1).values - fv.min(dim=1).values
    fv = torch.where((spread > 0.5)[:, None] & (fv < 0.5), fv + 1.0, fv)
    return torch.stack([fu, fv], dim=-1)


def normalize_template(verts: torch.Tensor, ellipsoid: float = 2.0) -> torch.Tensor:
    """The template normalisation of CASL's public code (the initial prototype).

    Each axis min-max scaled to [−1, 1]; z /= 2; if ``ellipsoid`` ≠ 1, x /= e and z /= e; × 0.9.
    People (Market, ATR, e = 2): x ±0.45, y ±0.9, z ±0.225. Birds (CUB, e = 1): x, y ±0.9, z ±0.45.

    Args:
        verts: (V, 3) or (B, V, 3).
    Returns:
        the normalised vertices, same shape.
    """
    if verts.shape[-1] != 3 or verts.dim() not in (2, 3):
        raise ValueError(f"verts: expected shape (V, 3) or (B, V, 3), got {tuple(verts.shape)}")
    if not (ellipsoid > 0 and math.isfinite(ellipsoid)):
        raise ValueError(f"ellipsoid: expected a finite value > 0, got {ellipsoid!r}")
    lo = verts.amin(dim=-2, keepdim=True)
    hi = verts.amax(dim=-2, keepdim=True)
    out = 2.0 * (verts - lo) / (hi - lo).clamp_min(1e-12) - 1.0
    scale = torch.tensor([1.0, 1.0, 0.5], dtype=verts.dtype, device=verts.device)
    if ellipsoid != 1:
        scale = scale * torch.tensor([1.0 / ellipsoid, 1.0, 1.0 / ellipsoid], dtype=verts.dtype,
                                     device=verts.device)
    return out * scale * 0.9


def template_mesh(
    ellipsoid: float = 2.0, level: int = 3, device=None, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The normalised CASL template: verts (V, 3), faces (F, 3), face_uvs (F, 3, 2).

    UVs are computed on the sphere before normalisation (they follow the vertices after).
    """
    verts, faces = ico_sphere(level, 0.5, device=device, dtype=torch.float64)
    uvs = sphere_face_uvs(verts, faces)
    return normalize_template(verts, ellipsoid).to(dtype), faces, uvs.to(dtype)
