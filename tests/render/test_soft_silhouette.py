import math

import pytest
import torch

from mirror3d.render import MeshRenderer, soft_silhouette, soft_silhouette_naive
from mirror3d.render.rasterize import drawable_faces, rasterize
from mirror3d.render.soft_silhouette import point_triangle_sq_dist, soft_margin


def _setup(verts, faces, cam, size):
    ndc, depth = cam.project(verts, size[1] / size[0])
    face_ndc, face_depth = ndc[:, faces], depth[:, faces]
    valid = drawable_faces(face_ndc, face_depth)
    frags = rasterize(face_ndc, face_depth, size, valid)
    return face_ndc, valid, frags.coverage


@pytest.mark.parametrize("sigma", [7000.0, 500.0])
def test_binned_equals_all_faces_reference(deformed_meshes, random_cameras, sigma):
    size = (48, 32)
    verts, faces, _ = deformed_meshes(2, seed=11, amount=0.2, dtype=torch.float64)
    verts.requires_grad_(True)
    cam = random_cameras(2, seed=12, dtype=torch.float64)
    face_ndc, valid, cov = _setup(verts, faces, cam, size)
    fast = soft_silhouette(face_ndc, valid, cov, sigma)
    ref = soft_silhouette_naive(face_ndc, valid, cov, sigma)
    assert ((fast > 0.01) & (fast < 0.99)).sum() > 10, "the test must exercise the soft band"
    assert torch.allclose(fast, ref, atol=1e-4)
    w = torch.rand_like(fast)
    g_fast, = torch.autograd.grad((fast * w).sum(), verts, retain_graph=True)
    g_ref, = torch.autograd.grad((ref * w).sum(), verts)
    assert torch.allclose(g_fast, g_ref, rtol=1e-3, atol=1e-3 * g_ref.abs().max().item())


def test_one_inside_soft_outside_and_decaying():
    from mirror3d.render import look_at_camera
    verts = torch.tensor([[[-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.0, 0.5, 0.0]]])
    faces = torch.tensor([[0, 1, 2]])
    r = MeshRenderer((64, 64))
    cam = look_at_camera(0.0, 0.0, 3.0)
    soft = r.soft_silhouette(verts, faces, cam)[0]
    cov = r.silhouette(verts, faces, cam)[0]
    assert bool((soft[cov > 0] == 1).all())
    # along the row through the centre, values fall off monotonically outside the right edge
    row = soft[32]
    inside_cols = torch.nonzero(cov[32] > 0).flatten()
    right = row[inside_cols.max() + 1:]
    assert 0.01 < right[0] < 1 and right[0] > right[1] >= right[2] >= 0
    assert bool((right[2:] < 1e-3).all())
    # far corners: exactly zero
    assert soft[0, 0] == 0


def test_single_face_value_matches_formula():
    tri = torch.tensor([[[[0.0, 0.0], [0.5, 0.0], [0.0, 0.5]]]])
    p = torch.tensor([0.6, 0.0])
    d2 = point_triangle_sq_dist(p, tri[0, 0])
    assert d2.item() == pytest.approx(0.01, abs=1e-7)
    assert soft_margin(7000.0, 1e-6) == pytest.approx(math.sqrt(math.log(1e6) / 7000.0))


def test_gradients_only_at_the_boundary(deformed_meshes, random_cameras):
    size = (64, 64)
    verts, faces, _ = deformed_meshes(1, seed=13)
    verts.requires_grad_(True)
    cam = random_cameras(1, seed=14)
    r = MeshRenderer(size)
    soft = r.soft_silhouette(verts, faces, cam)
    cov = r.silhouette(verts, faces, cam)
    # a pixel deep inside or far outside has no gradient path
    inside = torch.nonzero(cov[0] > 0)
    i, j = inside[len(inside) // 2].tolist()
    g, = torch.autograd.grad(soft[0, i, j], verts, allow_unused=True, retain_graph=True)
    assert g is None or g.abs().sum() == 0
    band = torch.nonzero((soft[0] > 0.05) & (soft[0] < 0.95))
    i, j = band[0].tolist()
    g, = torch.autograd.grad(soft[0, i, j], verts)
    assert g.abs().sum() > 0 and int((g.abs().sum(-1) > 0).sum()) <= 30
