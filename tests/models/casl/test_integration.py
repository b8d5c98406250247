import math

import pytest
import torch

from mirror3d.models.casl.integration import (NeighbourDifference, TemplateFeatureSampler, check_template,
                                              neighbour_difference, vertex_features)
from mirror3d.render.mesh import uniform_laplacian
from mirror3d.render.sphere import template_mesh


def _naive_bilinear(feat, x, y, align_corners):
    """Sample feat (C, h, w) at normalised (x, y) with zero padding, pixel by pixel."""
    c, h, w = feat.shape
    if align_corners:
        px, py = (x + 1) / 2 * (w - 1), (y + 1) / 2 * (h - 1)
    else:
        px, py = ((x + 1) * w - 1) / 2, ((y + 1) * h - 1) / 2
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(c)
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            wgt = (1 - abs(px - xi)) * (1 - abs(py - yi))
            if 0 <= xi < w and 0 <= yi < h:
                out += wgt * feat[:, yi, xi]
    return out


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("flip_y", [False, True])
def test_sampler_matches_naive_bilinear(align_corners, flip_y):
    torch.manual_seed(0)
    feat = torch.randn(2, 3, 4, 5)
    template = torch.rand(2, 7, 3) * 2 - 1
    out = TemplateFeatureSampler(align_corners, flip_y)(feat, template)
    assert out.shape == (2, 3, 7)
    for b in range(2):
        for v in range(7):
            x, y = template[b, v, 0].item(), template[b, v, 1].item()
            want = _naive_bilinear(feat[b], x, -y if flip_y else y, align_corners)
            assert torch.allclose(out[b, :, v], want, atol=1e-5)


@pytest.mark.parametrize("align_corners", [False, True])
def test_flip_y_makes_the_top_vertex_read_the_top_row(align_corners):
    verts, _, _ = template_mesh(level=2)
    top, bottom = int(verts[:, 1].argmax()), int(verts[:, 1].argmin())
    feat = torch.zeros(1, 1, 8, 4)
    feat[:, :, 0] = 1.0  # bright top row
    template = verts[None]
    ours = TemplateFeatureSampler(align_corners, flip_y=True)(feat, template)[0, 0]
    mirrored = TemplateFeatureSampler(align_corners, flip_y=False)(feat, template)[0, 0]
    assert ours[top] > 0.5 and ours[bottom] == 0
    assert mirrored[top] == 0 and mirrored[bottom] > 0.5


def test_sampler_broadcasts_a_single_template_over_the_batch():
    feat = torch.randn(3, 2, 4, 4)
    t = torch.rand(1, 5, 3) - 0.5
    s = TemplateFeatureSampler(True)
    assert torch.allclose(s(feat, t), s(feat, t.expand(3, 5, 3)))


def test_neighbour_difference_matches_a_per_vertex_loop():
    verts, faces, _ = template_mesh(level=1)
    v = verts.shape[0]
    nbrs = [set() for _ in range(v)]
    for a, b, c in faces.tolist():
        for i, j in ((a, b), (b, c), (c, a)):
            nbrs[i].add(j)
            nbrs[j].add(i)
    torch.manual_seed(0)
    f = torch.randn(2, 3, v)
    # (f @ L)_j = sum_i f_i L_ij = sum_{i in N(j)} f_i / deg(i) - f_j
    want = torch.stack([sum(f[..., i] / len(nbrs[i]) for i in nbrs[j]) - f[..., j] for j in range(v)], dim=-1)
    L = uniform_laplacian(v, faces)
    assert torch.allclose(neighbour_difference(f, L), want, atol=1e-5)
    assert torch.allclose(NeighbourDifference(v, faces)(f), want, atol=1e-5)


def test_neighbour_difference_module_equals_the_dense_product_with_gradients():
    verts, faces, _ = template_mesh()
    v = verts.shape[0]
    module = NeighbourDifference(v, faces)
    torch.manual_seed(0)
    f = torch.randn(4, 16, v, requires_grad=True)
    w = torch.randn(4, 16, v)
    out = module(f)  # the sparse product
    want = neighbour_difference(f, uniform_laplacian(v, faces))  # the dense reference
    (g,) = torch.autograd.grad((out * w).sum(), f)
    (g_want,) = torch.autograd.grad((want * w).sum(), f)
    assert torch.allclose(out, want, atol=1e-5) and torch.allclose(g, g_want, atol=1e-5)


def test_neighbour_difference_shape_errors():
    with pytest.raises(ValueError, match="laplacian"):
        neighbour_difference(torch.zeros(1, 2, 5), torch.zeros(4, 4))
    _, faces, _ = template_mesh(level=0)
    with pytest.raises(ValueError, match="features"):
        NeighbourDifference(12, faces)(torch.zeros(1, 2, 11))


def test_vertex_features_layout():
    torch.manual_seed(0)
    local = torch.randn(2, 4, 6)
    glob = torch.randn(2, 4)
    diff = torch.randn(2, 4, 6)
    template = torch.randn(1, 6, 3)
    out = vertex_features(local, glob, diff, template)
    assert out.shape == (2, 15, 6)
    assert torch.equal(out[:, :4], local)
    assert torch.equal(out[:, 4:8], glob[:, :, None].expand(2, 4, 6))
    assert torch.equal(out[:, 8:12], diff)
    assert torch.equal(out[:, 12:], template.transpose(1, 2).expand(2, 3, 6))


@pytest.mark.parametrize("bad,kw,match", [
    (torch.zeros(5, 3), {}, r"\(1 or B, V, 3\)"),
    (torch.zeros(2, 5, 3), {"batch": 3}, "batch must be 1 or 3"),
    (torch.zeros(1, 5, 3), {"num_verts": 6}, "6 vertices"),
    (torch.full((1, 5, 3), float("inf")), {}, "NaN or infinite"),
    (torch.zeros(1, 5, 3, dtype=torch.int32), {}, "floating-point"),
])
def test_check_template_errors(bad, kw, match):
    with pytest.raises(ValueError, match=match):
        check_template(bad, **kw)
