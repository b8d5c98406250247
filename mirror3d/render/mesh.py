"""Triangle-mesh operations in batched PyTorch.

Conventions (shared by the whole renderer):

- ``verts``: (B, V, 3) floating point; ``faces``: (F, 3) int64, shared by every mesh of the batch.
- Faces are wound counter-clockwise seen from outside, so the right-hand rule
  ``(v1 - v0) x (v2 - v0)`` points outward (kaolin's ``face_normals`` convention).
- The uniform Laplacian follows kaolin's ``uniform_laplacian``: the row-normalised adjacency with
  -1 on the diagonal, so ``L @ x`` is "mean of the neighbours minus the vertex".

Everything follows the device and dtype of its inputs.
"""

from __future__ import annotations

import warnings

import torch

__all__ = [
    "check_mesh",
    "check_laplacian",
    "face_normals",
    "face_areas",
    "unique_edges",
    "edge_face_pairs",
    "vertex_adjacency",
    "uniform_laplacian",
    "laplacian_apply",
    "laplacian_apply_sparse",
    "laplacian_smooth",
    "vertex_normals",
    "sample_points_on_faces",
    "z_mirror_correspondence",
]

_EPS = 1e-12


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


def check_faces(faces: torch.Tensor, num_verts: int | None = None, name: str = "faces") -> None:
    """Raise ``ValueError`` unless ``faces`` is an integer (F, 3) tensor indexing [0, num_verts)."""
    if not isinstance(faces, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (F, 3), got {type(faces).__name__}")
    if faces.ndim != 2 or faces.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (F, 3), got {tuple(faces.shape)}")
    if faces.dtype.is_floating_point or faces.dtype.is_complex or faces.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor (int64), got dtype {faces.dtype}")
    if faces.numel() == 0:
        return
    lo = int(faces.min())
    if lo < 0:
        raise ValueError(f"{name} contains negative vertex indices (min {lo}); expected indices >= 0")
    if num_verts is not None:
        hi = int(faces.max())
        if hi >= num_verts:
            raise ValueError(
                f"{name} indexes vertex {hi}, out of range for {num_verts} vertices "
                f"(expected indices in [0, {num_verts}))"
            )


def check_mesh(
    verts: torch.Tensor,
    faces: torch.Tensor,
    name_verts: str = "verts",
    name_faces: str = "faces",
    batched: bool | None = True,
) -> None:
    """Validate a (batched) mesh, raising ``ValueError`` that names the offending argument.

    Args:
        verts: (B, V, 3) float if ``batched`` is True, (V, 3) if False, either if None.
        faces: (F, 3) integer indices into [0, V).
    """
    if not isinstance(verts, torch.Tensor):
        raise ValueError(f"{name_verts} must be a torch.Tensor, got {type(verts).__name__}")
    allowed = {True: (3,), False: (2,), None: (2, 3)}[batched]
    shape_txt = {True: "(B, V, 3)", False: "(V, 3)", None: "(V, 3) or (B, V, 3)"}[batched]
    if verts.ndim not in allowed or verts.shape[-1] != 3:
        raise ValueError(f"{name_verts} must have shape {shape_txt}, got {tuple(verts.shape)}")
    if not verts.dtype.is_floating_point:
        raise ValueError(f"{name_verts} must be a floating-point tensor, got dtype {verts.dtype}")
    if not bool(torch.isfinite(verts).all()):
        raise ValueError(f"{name_verts} contains NaN or infinite coordinates")
    check_faces(faces, num_verts=verts.shape[-2], name=name_faces)


def _check_batched_features(x: torch.Tensor, num_verts: int, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 3 or x.shape[1] != num_verts:
        raise ValueError(f"{name} must have shape (B, {num_verts}, C), got {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")


def check_laplacian(L: torch.Tensor, name: str = "L") -> None:
    if not isinstance(L, torch.Tensor) or L.ndim != 2 or L.shape[0] != L.shape[1]:
        shape = tuple(L.shape) if isinstance(L, torch.Tensor) else type(L).__name__
        raise ValueError(f"{name} must be a square (V, V) tensor, got {shape}")
    if not L.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {L.dtype}")


# --------------------------------------------------------------------------------------------
# per-face quantities
# --------------------------------------------------------------------------------------------


def _face_cross(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(v1 - v0) x (v2 - v0) per face: (B, F, 3)."""
    fv = verts[:, faces.long()]  # (B, F, 3, 3)
    return torch.linalg.cross(fv[:, :, 1] - fv[:, :, 0], fv[:, :, 2] - fv[:, :, 0], dim=-1)


def face_normals(verts: torch.Tensor, faces: torch.Tensor, unit: bool = True) -> torch.Tensor:
    """Face normals by the right-hand rule on the corner order.

    Args:
        verts: (B, V, 3).
        faces: (F, 3).
        unit: normalise to length 1 (degenerate faces give a zero vector, not NaN).

    Returns:
        (B, F, 3): ``(v1 - v0) x (v2 - v0)`` (length = twice the face area when ``unit=False``).
    """
    check_mesh(verts, faces)
    n = _face_cross(verts, faces)
    if unit:
        n = n / n.norm(dim=-1, keepdim=True).clamp_min(_EPS)
    return n


def face_areas(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Triangle areas. verts: (B, V, 3), faces: (F, 3) -> (B, F)."""
    check_mesh(verts, faces)
    return 0.5 * _face_cross(verts, faces).norm(dim=-1)


# --------------------------------------------------------------------------------------------
# connectivity
# --------------------------------------------------------------------------------------------


def _sorted_corner_edges(faces: torch.Tensor) -> torch.Tensor:
    """The 3F directed corner edges (0-1, 1-2, 2-0 of every face) with each row sorted: (3F, 2)."""
    e = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], dim=0)
    return e.sort(dim=1).values


def unique_edges(faces: torch.Tensor) -> torch.Tensor:
    """Unique undirected edges.

    Args:
        faces: (F, 3) integer.

    Returns:
        (E, 2) int64 with ``i < j`` in every row, rows in lexicographic order. A closed 642-vertex
        icosphere has 1920 edges.
    """
    check_faces(faces)
    faces = faces.long()
    if faces.numel() == 0:
        return faces.new_zeros((0, 2))
    e = _sorted_corner_edges(faces)
    return torch.unique(e, dim=0)  # sorted lexicographically


def edge_face_pairs(faces: torch.Tensor) -> torch.Tensor:
    """The two faces adjacent to each unique edge of a closed manifold mesh.

    Args:
        faces: (F, 3) integer.

    Returns:
        (E, 2) int64, row ``k`` holding the two faces of ``unique_edges(faces)[k]``, smaller face
        index first.

    Raises:
        ValueError: if some edge does not belong to exactly 2 faces.
    """
    check_faces(faces)
    faces = faces.long()
    num_faces = faces.shape[0]
    e = _sorted_corner_edges(faces)  # (3F, 2), corner edge c belongs to face c % F
    edges, inverse, counts = torch.unique(e, dim=0, return_inverse=True, return_counts=True)
    if not bool((counts == 2).all()):
        bad = int((counts != 2).sum())
        raise ValueError(
            f"faces must describe a closed manifold mesh (every edge shared by exactly 2 faces); "
            f"{bad} of {edges.shape[0]} edges are not"
        )
    face_of_corner = torch.arange(3 * num_faces, device=faces.device) % num_faces
    # sort corner edges by (edge id, face id) so each edge's two faces are adjacent, smaller first
    key = inverse * num_faces + face_of_corner
    order = torch.argsort(key)
    return face_of_corner[order].view(-1, 2)


def vertex_adjacency(
    num_verts: int,
    faces: torch.Tensor,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Dense symmetric 0/1 vertex adjacency (no self loops).

    Args:
        num_verts: V.
        faces: (F, 3) integer.

    Returns:
        (V, V) tensor of ``dtype`` on ``faces.device``.
    """
    if int(num_verts) != num_verts or num_verts <= 0:
        raise ValueError(f"num_verts must be a positive integer, got {num_verts}")
    check_faces(faces, num_verts=num_verts)
    e = unique_edges(faces)
    adj = torch.zeros(num_verts, num_verts, dtype=dtype, device=faces.device)
    adj[e[:, 0], e[:, 1]] = 1
    adj[e[:, 1], e[:, 0]] = 1
    return adj


def uniform_laplacian(
    num_verts: int,
    faces: torch.Tensor,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Uniform graph Laplacian, kaolin convention.

    ``L[i, j] = 1 / deg(i)`` for neighbours j of i, ``L[i, i] = -1`` (0 elsewhere), so
    ``L @ x`` is the neighbour mean minus the vertex. Isolated vertices get a zero row.

    Returns:
        (V, V) dense tensor of ``dtype`` on ``faces.device``.
    """
    adj = vertex_adjacency(num_verts, faces, dtype=dtype)
    deg = adj.sum(dim=1, keepdim=True)
    lap = adj / deg.clamp_min(1)
    lap.diagonal().copy_(torch.where(deg[:, 0] > 0, -1.0, 0.0).to(dtype))
    return lap


def laplacian_apply(L: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``L @ x`` per batch element. L: (V, V), x: (B, V, C) -> (B, V, C)."""
    check_laplacian(L)
    _check_batched_features(x, L.shape[0], "x")
    return torch.matmul(L.to(dtype=x.dtype), x)


def laplacian_apply_sparse(L: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """:func:`laplacian_apply` as one sparse product: L (V, V) dense (any matrix, e.g. ``L.t()``),
    x (B, V, C) -> (B, V, C), differentiable w.r.t. x.

    L goes to compressed sparse rows and multiplies the (V, B·C) matrix of every batch
    element's columns at once: a mesh Laplacian has ~7 nonzeros per row, so this is ~V/7 times
    less work than the dense product (at V = 642: 12 -> 6 ms forward + backward on (16, 642, 64),
    11 -> 1.3 ms on (16, 642, 3)). Equal to :func:`laplacian_apply` up to float rounding (the
    nonzeros are summed in another order; tests/render/test_mesh.py).
    """
    check_laplacian(L)
    _check_batched_features(x, L.shape[0], "x")
    b, v, c = x.shape
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the product is stable
        warnings.simplefilter("ignore", UserWarning)
        csr = L.detach().to(dtype=x.dtype).to_sparse_csr()
    cols = x.transpose(0, 1).reshape(v, b * c)
    return torch.sparse.mm(csr, cols).reshape(v, b, c).transpose(0, 1)


def laplacian_smooth(
    x: torch.Tensor,
    L: torch.Tensor,
    alpha: float = 0.5,
    passes: int = 1,
) -> torch.Tensor:
    """Explicit Laplacian smoothing ``x <- x + alpha * (L @ x)``, repeated ``passes`` times.

    With the kaolin Laplacian and ``alpha=0.5`` each pass moves every vertex halfway to its
    neighbour mean (CASL's prototype smoothing uses 3 passes at 0.5).

    Args:
        x: (B, V, C) or (V, C).
        L: (V, V).
    """
    check_laplacian(L)
    if int(passes) != passes or passes < 0:
        raise ValueError(f"passes must be a non-negative integer, got {passes}")
    unbatched = isinstance(x, torch.Tensor) and x.ndim == 2
    xb = x.unsqueeze(0) if unbatched else x
    _check_batched_features(xb, L.shape[0], "x")
    Lx = L.to(dtype=xb.dtype)
    for _ in range(int(passes)):
        xb = xb + alpha * torch.matmul(Lx, xb)
    return xb.squeeze(0) if unbatched else xb


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals. verts: (B, V, 3), faces: (F, 3) -> (B, V, 3)."""
    check_mesh(verts, faces)
    fn = _face_cross(verts, faces)  # (B, F, 3), length 2*area: area weighting for free
    B, V = verts.shape[:2]
    out = torch.zeros(B, V, 3, dtype=verts.dtype, device=verts.device)
    faces = faces.long()
    for k in range(3):
        out = out.index_add(1, faces[:, k], fn)
    return out / out.norm(dim=-1, keepdim=True).clamp_min(_EPS)


# --------------------------------------------------------------------------------------------
# sampling
# --------------------------------------------------------------------------------------------


def sample_points_on_faces(
    verts: torch.Tensor,
    faces: torch.Tensor,
    num_points: int,
    generator: torch.Generator | None = None,
    return_faces: bool = False,
):
    """Sample points uniformly on the mesh surface.

    Faces are drawn with probability proportional to their area (the areas are detached: the
    choice is not differentiated), and points are uniform inside each triangle using the
    square-root trick: ``w0 = 1 - sqrt(r1)``, ``w1 = sqrt(r1) (1 - r2)``, ``w2 = sqrt(r1) r2``.
    The points are differentiable with respect to ``verts``.

    Args:
        verts: (B, V, 3).
        faces: (F, 3).
        num_points: N.
        generator: optional ``torch.Generator`` (on ``verts.device``) for reproducible draws.
        return_faces: also return the face index and barycentric weights of every point.

    Returns:
        points (B, N, 3); with ``return_faces`` also face_idx (B, N) int64 and bary (B, N, 3).
    """
    check_mesh(verts, faces)
    if int(num_points) != num_points or num_points <= 0:
        raise ValueError(f"num_points must be a positive integer, got {num_points}")
    if faces.shape[0] == 0:
        raise ValueError("faces is empty; cannot sample points on a mesh without faces")
    num_points = int(num_points)
    faces = faces.long()
    B = verts.shape[0]
    with torch.no_grad():
        areas = 0.5 * _face_cross(verts.detach(), faces).norm(dim=-1)  # (B, F)
        if not bool((areas.sum(dim=1) > 0).all()):
            raise ValueError("verts describe a mesh with zero total area; cannot sample points")
        face_idx = torch.multinomial(areas, num_points, replacement=True, generator=generator)
        r = torch.rand(B, num_points, 2, generator=generator, dtype=verts.dtype, device=verts.device)
        s = r[..., 0].sqrt()
        bary = torch.stack([1 - s, s * (1 - r[..., 1]), s * r[..., 1]], dim=-1)  # (B, N, 3)
    corner_idx = faces[face_idx]  # (B, N, 3)
    corners = torch.gather(
        verts, 1, corner_idx.reshape(B, -1, 1).expand(-1, -1, 3)
    ).view(B, num_points, 3, 3)
    points = (bary.unsqueeze(-1) * corners).sum(dim=2)
    if return_faces:
        return points, face_idx, bary
    return points


# --------------------------------------------------------------------------------------------
# symmetry
# --------------------------------------------------------------------------------------------


def z_mirror_correspondence(template: torch.Tensor, chunk_size: int = 4096) -> torch.Tensor:
    """For every vertex, the index of the vertex nearest to its z-mirror ``(x, y, -z)``.

    Used by CASL's front/back ("flipz") symmetry loss.

    Args:
        template: (V, 3) vertex positions.

    Returns:
        (V,) int64.
    """
    if not isinstance(template, torch.Tensor) or template.ndim != 2 or template.shape[-1] != 3:
        shape = tuple(template.shape) if isinstance(template, torch.Tensor) else type(template).__name__
        raise ValueError(f"template must be a (V, 3) tensor, got {shape}")
    if not template.dtype.is_floating_point:
        raise ValueError(f"template must be a floating-point tensor, got dtype {template.dtype}")
    if not bool(torch.isfinite(template).all()):
        raise ValueError("template contains NaN or infinite coordinates")
    t = template.detach()
    mirrored = t * t.new_tensor([1.0, 1.0, -1.0])
    out = []
    for start in range(0, t.shape[0], chunk_size):
        d = ((mirrored[start : start + chunk_size, None, :] - t[None, :, :]) ** 2).sum(-1)
        out.append(d.argmin(dim=1))
    return torch.cat(out).long()
