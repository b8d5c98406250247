import numpy as np
import pytest
import torch

from mirror3d.render import MeshRenderer, look_at_camera, sh_basis, template_mesh
from mirror3d.render.mesh import face_normals


def _tiny_scene(dtype=torch.float64):
    """A tetrahedron-like pyramid seen from the front, small image."""
    verts = torch.tensor([[[-0.6, -0.5, 0.1], [0.6, -0.45, 0.05], [0.05, 0.6, 0.0],
                           [0.0, 0.0, 0.5]]], dtype=dtype)
    faces = torch.tensor([[0, 1, 3], [1, 2, 3], [2, 0, 3], [0, 2, 1]])
    uvs = torch.tensor([[[0.1, 0.1], [0.9, 0.15], [0.5, 0.5]], [[0.9, 0.15], [0.5, 0.9], [0.5, 0.5]],
                        [[0.5, 0.9], [0.1, 0.1], [0.5, 0.5]], [[0.1, 0.1], [0.5, 0.9], [0.9, 0.15]]],
                       dtype=dtype)
    g = torch.Generator().manual_seed(0)
    tex = (0.2 + 0.6 * torch.rand(1, 3, 6, 6, generator=g)).to(dtype)
    light = torch.tensor([[3.0, 0.05, -0.03, 0.08, 0.02, -0.01, 0.03, 0.01, -0.02]], dtype=dtype)
    cam = look_at_camera(torch.tensor([8.0], dtype=dtype), torch.tensor([5.0], dtype=dtype),
                         torch.tensor([3.0], dtype=dtype))
    return verts, faces, uvs, tex, light, cam


def test_gradcheck_float64_through_silhouette_and_colour():
    verts, faces, uvs, tex, light, cam = _tiny_scene()
    r = MeshRenderer((10, 10), sigma=300.0)
    verts = verts.clone().requires_grad_(True)

    def f(v):
        out = r.render(v, faces, uvs, tex, cam, light)
        return out.rgb, out.soft_mask

    assert torch.autograd.gradcheck(f, (verts,), eps=1e-6, atol=1e-5, rtol=1e-3)


def test_gradients_reach_vertices_through_both_paths(deformed_meshes, random_cameras):
    verts, faces, uvs = deformed_meshes(2, seed=21)
    verts.requires_grad_(True)
    cam = random_cameras(2, seed=22)
    tex = torch.rand(2, 3, 32, 16)
    light = torch.tensor([[3.0, 0.1, 0.1, 0.1, 0, 0, 0, 0, 0]] * 2)
    r = MeshRenderer((64, 32))
    out = r.render(verts, faces, uvs, tex, cam, light)
    g_sil, = torch.autograd.grad(out.soft_mask.sum(), verts, retain_graph=True)
    g_rgb, = torch.autograd.grad((out.rgb * out.coverage[:, None]).sum(), verts)
    assert g_sil.abs().sum() > 0 and g_rgb.abs().sum() > 0
    assert torch.isfinite(g_sil).all() and torch.isfinite(g_rgb).all()


def _naive_colour(verts, faces, uvs, tex, light, cam, size):
    """Per-pixel reference in numpy: loop over pixels and faces, nearest front face wins,
    screen barycentrics, bilinear texture lookup with v flipped, SH shade, white background."""
    h, w = size
    ndc, depth = cam.project(verts, w / h)
    ndc, depth = ndc[0].double().numpy(), depth[0].double().numpy()
    f = faces.numpy()
    n_cam = torch.bmm(face_normals(verts, faces), cam.rotation)[0].double().numpy()
    t = tex[0].double().numpy()
    th, tw = t.shape[1:]
    out = np.ones((3, h, w))
    for i in range(h):
        for j in range(w):
            p = np.array([(2 * j + 1 - w) / w, (h - 2 * i - 1) / h])
            best, best_inv = None, -np.inf
            for k, (a, b, c) in enumerate(f):
                A, B, C = ndc[a], ndc[b], ndc[c]
                area = (B - A)[0] * (C - A)[1] - (B - A)[1] * (C - A)[0]
                if area <= 1e-12:
                    continue
                wa = ((B - p)[0] * (C - p)[1] - (B - p)[1] * (C - p)[0]) / area
                wb = ((C - p)[0] * (A - p)[1] - (C - p)[1] * (A - p)[0]) / area
                wc = 1 - wa - wb
                if min(wa, wb, wc) < 0:
                    continue
                inv = wa / depth[a] + wb / depth[b] + wc / depth[c]
                if inv > best_inv:
                    best, best_inv = (k, np.array([wa, wb, wc])), inv
            if best is None:
                continue
            k, bw = best
            u, v = np.clip((bw[:, None] * uvs[k].double().numpy()).sum(0), 0, 1)
            x = u * tw - 0.5
            y = (1 - v) * th - 0.5
            x0, y0 = int(np.floor(x)), int(np.floor(y))
            fx, fy = x - x0, y - y0
            def px(yy, xx):
                return t[:, min(max(yy, 0), th - 1), min(max(xx, 0), tw - 1)]
            col = ((1 - fx) * (1 - fy) * px(y0, x0) + fx * (1 - fy) * px(y0, x0 + 1)
                   + (1 - fx) * fy * px(y0 + 1, x0) + fx * fy * px(y0 + 1, x0 + 1))
            shade = float(sh_basis(torch.from_numpy(n_cam[k])) @ light[0].double())
            out[:, i, j] = np.clip(col * shade, 0, 1)
    return out


def test_barycentric_colour_against_naive_per_pixel_reference(deformed_meshes, random_cameras):
    verts, faces, uvs = deformed_meshes(1, seed=31, amount=0.15, dtype=torch.float64)
    cam = random_cameras(1, seed=32, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    tex = torch.rand(1, 3, 16, 8, generator=g, dtype=torch.float64)
    light = torch.tensor([[2.8, 0.3, 0.4, -0.2, 0.1, 0.05, -0.1, 0.1, 0.05]], dtype=torch.float64)
    size = (20, 14)
    out = MeshRenderer(size).render(verts, faces, uvs, tex, cam, light)
    ref = _naive_colour(verts, faces, uvs, tex, light, cam, size)
    assert out.coverage.sum() > 30
    assert np.allclose(out.rgb[0].numpy(), ref, atol=1e-6)


def test_compositing_on_white_and_on_a_background():
    verts, faces, uvs, tex, light, cam = _tiny_scene(torch.float32)
    r = MeshRenderer((16, 16))
    white = r.render(verts, faces, uvs, tex, cam, light)
    bg_img = torch.full((1, 3, 16, 16), 0.5)
    on_bg = r.render(verts, faces, uvs, tex, cam, light, background=bg_img)
    outside = white.coverage[0] == 0
    assert torch.allclose(white.rgb[0][:, outside], torch.ones(3, int(outside.sum())))
    bg_shade = 0.28209479 * 3.0 - 0.31539157 * light[0, 6].item()
    expect = torch.full((3, int(outside.sum())), 0.5 * bg_shade)
    assert torch.allclose(on_bg.rgb[0][:, outside], expect, atol=1e-6)
    inside = ~outside
    assert torch.allclose(white.rgb[0][:, inside], on_bg.rgb[0][:, inside])
    assert out_shapes_ok(white)


def out_shapes_ok(out):
    b, _, h, w = out.rgb.shape
    return (out.soft_mask.shape == (b, h, w) and out.depth.shape == (b, h, w)
            and out.normals.shape == (b, 3, h, w) and out.image4.shape == (b, 4, h, w))


def test_template_render_covers_expected_area():
    verts, faces, uvs = template_mesh(2.0)
    r = MeshRenderer((128, 64))
    cam = look_at_camera(0.0, 0.0, 4.0)
    cov = r.silhouette(verts[None], faces, cam)
    # the template spans ±0.5625 NDC (0.45·5/4, 0.9·2.5/4): an ellipse of area π·0.5625²/4 of frame
    frac = cov.mean().item()
    assert frac == pytest.approx(np.pi * 0.5625 ** 2 / 4, rel=0.05)


@pytest.mark.parametrize("mutate,name", [
    (lambda a: a.update(verts=a["verts"][0]), "verts"),
    (lambda a: a.update(verts=a["verts"].long()), "verts"),
    (lambda a: a.update(verts=a["verts"].clone().index_fill_(1, torch.tensor([0]), float("nan"))),
     "verts"),
    (lambda a: a.update(faces=a["faces"] + 10), "faces"),
    (lambda a: a.update(faces=a["faces"].float()), "faces"),
    (lambda a: a.update(face_uvs=a["face_uvs"][:2]), "face_uvs"),
    (lambda a: a.update(texture=a["texture"][0]), "texture"),
    (lambda a: a.update(light=a["light"][:, :4]), "light"),
    (lambda a: a.update(background=torch.ones(1, 3, 5, 5)), "background"),
    (lambda a: a.update(camera=look_at_camera(torch.zeros(2), 0.0, 3.0)), "camera"),
])
def test_bad_input_names_the_argument(mutate, name):
    verts, faces, uvs, tex, light, cam = _tiny_scene(torch.float32)
    args = dict(verts=verts, faces=faces, face_uvs=uvs, texture=tex, camera=cam, light=light)
    mutate(args)
    with pytest.raises(ValueError, match=name):
        MeshRenderer((16, 16)).render(**args)


@pytest.mark.parametrize("size", [(0, 16), (16, -1), (16,), "ab"])
def test_bad_image_size(size):
    with pytest.raises(ValueError, match="image_size"):
        MeshRenderer(size)


def test_kaolin_backend_not_used_on_cpu():
    from mirror3d.render import kaolin_backend
    r = MeshRenderer((8, 8))
    assert r._use_kaolin(torch.zeros(1, 3, 3)) is False
    if not kaolin_backend.available():
        with pytest.raises(ValueError, match="backend"):
            MeshRenderer((8, 8), backend="kaolin")
