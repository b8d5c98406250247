"""Tests for mirror3d.render.mesh against hand-computed values and naive loops."""

import math

import pytest
import torch

from mirror3d.render.mesh import (
    check_mesh,
    edge_face_pairs,
    face_areas,
    face_normals,
    laplacian_apply,
    laplacian_apply_sparse,
    laplacian_smooth,
    sample_points_on_faces,
    uniform_laplacian,
    unique_edges,
    vertex_adjacency,
    vertex_normals,
    z_mirror_correspondence,
)
from mirror3d.render.sphere import ico_sphere

# right-angle tetrahedron, faces wound outward
TET_V = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
TET_F = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])


def _sphere():
    v, f = ico_sphere(3)
    return v.double(), f


def test_face_normals_and_areas_tetrahedron_by_hand():
    n = face_normals(TET_V[None], TET_F)
    s = 1 / math.sqrt(3)
    expected = torch.tensor([[0.0, 0, -1], [0, -1, 0], [-1, 0, 0], [s, s, s]])
    assert torch.allclose(n[0], expected, atol=1e-6)
    raw = face_normals(TET_V[None], TET_F, unit=False)
    assert torch.allclose(raw[0, 3], torch.tensor([1.0, 1, 1]), atol=1e-6)
    areas = face_areas(TET_V[None], TET_F)
    assert torch.allclose(areas[0], torch.tensor([0.5, 0.5, 0.5, math.sqrt(3) / 2]), atol=1e-6)


def test_face_normals_degenerate_face_is_zero_not_nan():
    v = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [2, 0, 0]]], requires_grad=True)
    n = face_normals(v, torch.tensor([[0, 1, 2]]))
    assert torch.equal(n.detach(), torch.zeros(1, 1, 3))
    n.sum().backward()
    assert torch.isfinite(v.grad).all()


def test_sphere_normals_point_outward():
    v, f = _sphere()
    n = face_normals(v[None], f)[0]
    centroid = v[f].mean(dim=1)
    cos = (n * centroid / centroid.norm(dim=1, keepdim=True)).sum(-1)
    assert cos.min() > 0.98


def test_unique_edges_tetrahedron_and_sphere_against_set():
    e = unique_edges(TET_F)
    assert e.tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    _, f = _sphere()
    e = unique_edges(f)
    naive = sorted({tuple(sorted((int(a), int(b)))) for tri in f.tolist() for a, b in
                    ((tri[0], tri[1]), (tri[1], tri[2]), (tri[2], tri[0]))})
    assert e.shape == (1920, 2)
    assert e.tolist() == [list(x) for x in naive]
    assert unique_edges(f).tolist() == e.tolist()  # deterministic


def test_edge_face_pairs_against_naive_search():
    _, f = _sphere()
    e = unique_edges(f)
    ef = edge_face_pairs(f)
    assert ef.shape == (1920, 2)
    fl = f.tolist()
    for k in range(0, 1920, 37):  # a spread of edges
        i, j = e[k].tolist()
        naive = [t for t, tri in enumerate(fl) if i in tri and j in tri]
        assert ef[k].tolist() == naive
    tet = edge_face_pairs(TET_F)
    assert tet.tolist() == [[0, 1], [0, 2], [1, 2], [0, 3], [1, 3], [2, 3]]


def test_edge_face_pairs_open_mesh_raises():
    with pytest.raises(ValueError, match="faces"):
        edge_face_pairs(torch.tensor([[0, 1, 2], [0, 2, 3]]))


def test_vertex_adjacency_and_degrees():
    adj = vertex_adjacency(4, TET_F)
    assert torch.equal(adj, torch.ones(4, 4) - torch.eye(4))
    _, f = _sphere()
    deg = vertex_adjacency(642, f).sum(1)
    assert int((deg == 5).sum()) == 12 and int((deg == 6).sum()) == 630


def test_uniform_laplacian_matches_neighbour_mean_loop():
    v, f = _sphere()
    L = uniform_laplacian(642, f, dtype=torch.float64)
    assert torch.allclose(L.diagonal(), -torch.ones(642, dtype=torch.float64))
    assert torch.allclose(L.sum(1), torch.zeros(642, dtype=torch.float64), atol=1e-12)
    nbrs = [set() for _ in range(642)]
    for a, b in unique_edges(f).tolist():
        nbrs[a].add(b)
        nbrs[b].add(a)
    naive = torch.stack([v[sorted(nbrs[i])].mean(0) - v[i] for i in range(642)])
    out = laplacian_apply(L, v[None])[0]
    assert torch.allclose(out, naive, atol=1e-12)
    # tetrahedron by hand: off-diagonal 1/3
    Lt = uniform_laplacian(4, TET_F)
    assert torch.allclose(Lt, (torch.ones(4, 4) - torch.eye(4)) / 3 - torch.eye(4))


def test_sparse_laplacian_product_equals_the_dense_one_with_gradients():
    v, f = _sphere()
    L = uniform_laplacian(642, f, dtype=torch.float64)
    naive = torch.stack([v[sorted(set(torch.nonzero(L[i]).flatten().tolist()) - {i})].mean(0) - v[i]
                         for i in range(642)])
    assert torch.allclose(laplacian_apply_sparse(L, v[None])[0], naive, atol=1e-12)
    torch.manual_seed(0)
    for mat in (L.float(), L.float().t()):  # any matrix, transposed views too
        x = torch.randn(3, 642, 5, requires_grad=True)
        w = torch.randn(3, 642, 5)
        dense = laplacian_apply(mat, x)
        (g_dense,) = torch.autograd.grad((dense * w).sum(), x)
        sparse = laplacian_apply_sparse(mat, x)
        (g_sparse,) = torch.autograd.grad((sparse * w).sum(), x)
        assert sparse.shape == (3, 642, 5)
        assert torch.allclose(sparse, dense, atol=1e-6) and torch.allclose(g_sparse, g_dense, atol=1e-6)
    with pytest.raises(ValueError, match="x must have shape"):
        laplacian_apply_sparse(L, torch.zeros(1, 641, 3, dtype=torch.float64))


def test_laplacian_smooth_against_manual_passes():
    v, f = _sphere()
    L = uniform_laplacian(642, f, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 642, 3, generator=g, dtype=torch.float64)
    ref = x.clone()
    for _ in range(3):
        ref = torch.stack([ref[b] + 0.5 * (L @ ref[b]) for b in range(2)])
    assert torch.allclose(laplacian_smooth(x, L, alpha=0.5, passes=3), ref, atol=1e-12)
    # unbatched input and one pass at 0.5: each vertex halfway to its neighbour mean
    one = laplacian_smooth(x[0], L, alpha=0.5, passes=1)
    nbr_mean = x[0] + L @ x[0]
    assert one.shape == (642, 3)
    assert torch.allclose(one, 0.5 * (x[0] + nbr_mean), atol=1e-12)
    assert torch.equal(laplacian_smooth(x, L, passes=0), x)


def test_vertex_normals_by_hand_and_on_sphere():
    n = vertex_normals(TET_V[None], TET_F)[0]
    s = 1 / math.sqrt(3)
    assert torch.allclose(n[0], torch.tensor([-s, -s, -s]), atol=1e-6)
    # vertex 1: (0,0,-1)*1 + (0,-1,0)*1 + (1,1,1) (cross lengths 1, 1, sqrt 3) = (1, 0, 0)
    assert torch.allclose(n[1], torch.tensor([1.0, 0, 0]), atol=1e-6)
    v, f = _sphere()
    nv = vertex_normals(v[None], f)[0]
    assert ((nv * v / v.norm(dim=1, keepdim=True)).sum(-1)).min() > 0.999


def test_sample_points_area_weighting_and_uniformity():
    # two triangles in the plane z=0: areas 0.5 and 1.5
    v = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [3, 0, 0], [3, 1.5, 0]]])
    f = torch.tensor([[0, 1, 2], [1, 3, 4]])
    g = torch.Generator().manual_seed(0)
    p, fi, bary = sample_points_on_faces(v, f, 40000, generator=g, return_faces=True)
    assert p.shape == (1, 40000, 3) and fi.shape == (1, 40000) and bary.shape == (1, 40000, 3)
    assert abs((fi == 1).float().mean().item() - 0.75) < 0.01
    assert (bary >= 0).all() and torch.allclose(bary.sum(-1), torch.ones(1, 40000))
    assert torch.allclose(p, (bary[..., None] * v[0][f[fi[0]]][None]).sum(2), atol=1e-6)
    first = p[0][fi[0] == 0]
    # uniform in the right triangle: mean at the centroid, 1/4 of the mass below x+y=1/2
    assert torch.allclose(first[:, :2].mean(0), torch.tensor([1 / 3, 1 / 3]), atol=0.01)
    assert abs((first[:, 0] + first[:, 1] < 0.5).float().mean().item() - 0.25) < 0.015


def test_sample_points_reproducible_and_differentiable():
    v, f = _sphere()
    v = v[None].float().repeat(2, 1, 1).requires_grad_(True)
    p1 = sample_points_on_faces(v, f, 500, generator=torch.Generator().manual_seed(3))
    p2 = sample_points_on_faces(v, f, 500, generator=torch.Generator().manual_seed(3))
    p3 = sample_points_on_faces(v, f, 500, generator=torch.Generator().manual_seed(4))
    assert torch.equal(p1, p2) and not torch.equal(p1, p3)
    p, fi, bary = sample_points_on_faces(v, f, 300, generator=torch.Generator().manual_seed(5),
                                         return_faces=True)
    p.sum().backward()
    # d(sum of points)/d(vertex) = sum of the barycentric weights that vertex receives
    expected = torch.zeros(2, 642)
    for b in range(2):
        expected[b].index_add_(0, f[fi[b]].reshape(-1), bary[b].reshape(-1))
    assert torch.allclose(v.grad, expected[..., None].expand(-1, -1, 3), atol=1e-5)


def test_z_mirror_correspondence():
    v, f = _sphere()
    m = z_mirror_correspondence(v)
    mirrored = v * torch.tensor([1.0, 1, -1], dtype=v.dtype)
    assert torch.allclose(v[m], mirrored, atol=1e-6)  # the icosphere is z-symmetric
    assert torch.equal(m[m], torch.arange(642))
    g = torch.Generator().manual_seed(1)
    pts = torch.randn(50, 3, generator=g)
    m = z_mirror_correspondence(pts, chunk_size=7)
    naive = [min(range(50), key=lambda j: float(((pts[j] - pts[i] * torch.tensor([1.0, 1, -1])) ** 2).sum()))
             for i in range(50)]
    assert m.tolist() == naive


@pytest.mark.parametrize(
    "verts, faces, match",
    [
        (torch.zeros(4, 3), TET_F, "verts"),  # missing batch dim
        (torch.zeros(1, 4, 2), TET_F, "verts"),
        (torch.zeros(1, 4, 3, dtype=torch.int64), TET_F, "verts"),
        (torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, float("nan"), 0], [0, 0, 1]]]), TET_F, "verts"),
        (torch.zeros(1, 4, 3), TET_F.float(), "faces"),
        (torch.zeros(1, 4, 3), TET_F[:, :2], "faces"),
        (torch.zeros(1, 4, 3), torch.tensor([[0, 1, 4]]), "faces"),
        (torch.zeros(1, 4, 3), torch.tensor([[0, -1, 2]]), "faces"),
    ],
)
def test_check_mesh_errors_name_the_argument(verts, faces, match):
    with pytest.raises(ValueError, match=match):
        check_mesh(verts, faces)
    with pytest.raises(ValueError, match=match):
        face_normals(verts, faces)


def test_check_mesh_custom_names_and_unbatched():
    with pytest.raises(ValueError, match="template"):
        check_mesh(torch.zeros(4, 2), TET_F, name_verts="template", batched=False)
    check_mesh(TET_V, TET_F, batched=False)  # valid: no error
    check_mesh(TET_V[None], TET_F, batched=None)
