import math

import numpy as np
import pytest
import torch

from mirror3d.render import (MeshRenderer, look_at_camera, soft_silhouette,
                             soft_silhouette_naive)
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


# ---------------------------------------------------------------- one face's value, by hand
def _seg_sq(px, py, ax, ay, bx, by):
    """Squared distance from (px, py) to the segment a-b (plain numpy, written for the test)."""
    ex, ey = bx - ax, by - ay
    t = np.clip(((px - ax) * ex + (py - ay) * ey) / (ex * ex + ey * ey), 0.0, 1.0)
    return (px - (ax + t * ex)) ** 2 + (py - (ay + t * ey)) ** 2


def _by_hand(tri, h, w, sigma):
    """Pixel-centre NDC (x = (2j + 1 − W)/W, y = (H − 2i − 1)/H: row 0 at the top), which pixels
    the triangle covers, and exp(−σ·d²) with d the distance to the nearest edge: the soft value
    1 − Π_f (1 − exp(−σ·d_f²)) of a single face (DIB-R, Chen et al. 2019, §3)."""
    jj, ii = np.meshgrid(np.arange(w), np.arange(h))
    x, y = (2 * jj + 1 - w) / w, (h - 2 * ii - 1) / h
    (ax, ay), (bx, by), (cx, cy) = tri

    def side(ux, uy, vx, vy):
        return (vx - ux) * (y - uy) - (vy - uy) * (x - ux)

    s = np.stack([side(ax, ay, bx, by), side(bx, by, cx, cy), side(cx, cy, ax, ay)])
    inside = (s >= 0).all(0) | (s <= 0).all(0)
    d2 = np.minimum.reduce([_seg_sq(x, y, ax, ay, bx, by), _seg_sq(x, y, bx, by, cx, cy),
                            _seg_sq(x, y, cx, cy, ax, ay)])
    return inside, d2, np.exp(-sigma * d2)


def _band(inside, d2, sigma):
    """Outside pixels where the soft value is clearly between 0 and 1 (σ·d² in [0.1, 4])."""
    band = ~inside & (sigma * d2 >= 0.1) & (sigma * d2 <= 4.0)
    assert band.sum() >= 5, "the test must look at several pixels of the soft band"
    return band


@pytest.mark.parametrize("sigma", [7000.0, 2000.0])
def test_one_face_soft_value_is_exp_of_minus_sigma_d_squared(sigma):
    """Fast and naive paths against 1 − (1 − exp(−σ·d²)) = exp(−σ·d²) computed here, d by hand;
    σ·½ or σ·2 anywhere fails."""
    h, w = 48, 40
    tri = [(-0.42, -0.5), (0.47, -0.31), (0.06, 0.55)]
    inside, d2, want = _by_hand(tri, h, w, sigma)
    band = _band(inside, d2, sigma)
    face_ndc = torch.tensor(tri, dtype=torch.float64)[None, None]
    valid = torch.ones(1, 1, dtype=torch.bool)
    cov = torch.from_numpy(inside.astype(np.float64))[None]
    for fn in (soft_silhouette, soft_silhouette_naive):
        got = fn(face_ndc, valid, cov, sigma)[0].numpy()
        np.testing.assert_allclose(got[band], want[band], rtol=1e-6, atol=1e-9, err_msg=fn.__name__)
        assert (got[inside] == 1).all()
        # and it is not the value of another sigma
        for other in (0.5 * sigma, 2.0 * sigma):
            assert np.abs(got[band] - np.exp(-other * d2[band])).max() > 0.05


def test_renderer_soft_value_matches_by_hand_through_the_camera():
    """MeshRenderer (its sigma, camera projection and pixel grid): a triangle in the z = 0 plane
    seen head-on from distance 3 lands at NDC (2.5·X/(3·aspect), 2.5·Y/3) (fovy 2·atan(1/2.5));
    its soft values are exp(−σ·d²) at the pixels around it."""
    h, w, sigma, dist = 48, 32, 5000.0, 3.0
    verts = torch.tensor([[[-0.5, -0.6, 0.0], [0.55, -0.5, 0.0], [0.05, 0.7, 0.0]]],
                         dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2]])
    aspect = w / h
    tri = [(2.5 * float(x) / (dist * aspect), 2.5 * float(y) / dist) for x, y, _ in verts[0]]
    inside, d2, want = _by_hand(tri, h, w, sigma)
    band = _band(inside, d2, sigma)
    cam = look_at_camera(0.0, 0.0, dist, dtype=torch.float64)
    soft = MeshRenderer((h, w), sigma=sigma).soft_silhouette(verts, faces, cam)[0].numpy()
    np.testing.assert_allclose(soft[band], want[band], rtol=1e-5, atol=1e-8)
    assert (soft[inside & (d2 > 1e-4)] == 1).all()
