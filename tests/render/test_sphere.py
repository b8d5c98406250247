import math

import pytest
import torch

from mirror3d.render import ico_sphere, normalize_template, sphere_face_uvs, template_mesh
from mirror3d.render.mesh import face_normals, unique_edges


def test_template_counts_radius_degrees_and_winding():
    v, f = ico_sphere(3)
    assert v.shape == (642, 3) and f.shape == (1280, 3) and f.dtype == torch.int64
    assert torch.allclose(v.norm(dim=1), torch.full((642,), 0.5), atol=1e-6)
    assert unique_edges(f).shape[0] == 1920
    degree = torch.bincount(unique_edges(f).reshape(-1), minlength=642)
    assert int((degree == 5).sum()) == 12 and int((degree == 6).sum()) == 630
    n = face_normals(v[None], f)[0]
    centres = v[f].mean(1)
    assert bool(((n * centres).sum(-1) > 0).all()), "every face must be wound outward"
    assert len({tuple(sorted(t)) for t in f.tolist()}) == 1280


@pytest.mark.parametrize("level,nv,nf", [(0, 12, 20), (1, 42, 80), (2, 162, 320)])
def test_other_levels(level, nv, nf):
    v, f = ico_sphere(level)
    assert v.shape == (nv, 3) and f.shape == (nf, 3)


def test_uv_formula_per_corner():
    v, f = ico_sphere(3, dtype=torch.float64)
    uv = sphere_face_uvs(v, f)
    assert uv.shape == (1280, 3, 2)
    p = v[f]  # (F, 3, 3)
    r = p.norm(dim=-1)
    u_ref = 0.5 + torch.asin(p[..., 0] / r) / math.pi
    v_ref = torch.remainder(0.25 + torch.atan2(p[..., 1], p[..., 2]) / (2 * math.pi), 1.0)
    assert torch.allclose(uv[..., 0], u_ref, atol=1e-12)
    exact = (uv[..., 1] - v_ref).abs().amax(dim=1) < 1e-12
    seam = ~exact
    # only faces touching the bottom meridian (y < 0, z = 0) are unwrapped, by exactly +1
    assert 0 < int(seam.sum()) <= 64
    assert torch.allclose(torch.remainder(uv[seam][..., 1], 1.0), v_ref[seam], atol=1e-9)
    seam_pts = p[seam].reshape(-1, 3)
    assert bool((seam_pts[:, 1] <= 1e-9).all())
    assert (uv[..., 1].amax(1) - uv[..., 1].amin(1)).max() <= 0.5 + 1e-9
    # front half (z > 0) uses v in (0, 0.5), back half (0.5, 1)
    vv = torch.remainder(uv[..., 1], 1.0)
    front = p[..., 2] > 1e-6
    assert bool((vv[front] < 0.5).all()) and bool((vv[p[..., 2] < -1e-6] > 0.5).all())


@pytest.mark.parametrize("ellipsoid,expect", [(2.0, (0.45, 0.9, 0.225)), (1.0, (0.9, 0.9, 0.45))])
def test_template_normalisation_ranges(ellipsoid, expect):
    v, f = ico_sphere(3)
    t = normalize_template(v, ellipsoid)
    assert torch.allclose(t.amax(0), torch.tensor(expect), atol=1e-6)
    assert torch.allclose(t.amin(0), -torch.tensor(expect), atol=1e-6)
    tv, tf, tuv = template_mesh(ellipsoid)
    assert torch.allclose(tv, t, atol=1e-6) and torch.equal(tf, f) and tuv.shape == (1280, 3, 2)


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="level"):
        ico_sphere(-1)
    with pytest.raises(ValueError, match="radius"):
        ico_sphere(1, radius=0.0)
    with pytest.raises(ValueError, match="verts"):
        normalize_template(torch.zeros(5, 2))
    with pytest.raises(ValueError, match="ellipsoid"):
        normalize_template(torch.rand(5, 3), ellipsoid=-1)
