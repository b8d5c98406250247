"""Tests for mirror3d.render.losses: hand-computed values on tiny meshes, zeros, gradients."""

import math

import pytest
import torch

from mirror3d.render.losses import (
    deform_loss,
    depth_prior_loss,
    edge_variance_loss,
    flatten_loss,
    laplacian_loss,
    z_mirror_flip_loss,
)
from mirror3d.render.mesh import edge_face_pairs, uniform_laplacian, unique_edges, z_mirror_correspondence
from mirror3d.render.sphere import ico_sphere

TET_V = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float64)
TET_F = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
# regular tetrahedron (alternate cube corners), outward winding
REG_V = torch.tensor([[1.0, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=torch.float64)
REG_F = torch.tensor([[0, 1, 2], [0, 3, 1], [0, 2, 3], [1, 3, 2]])


def test_laplacian_loss_equals_the_dense_formula_with_gradients():
    v, f = ico_sphere(2)[:2]
    L = uniform_laplacian(v.shape[0], f)
    torch.manual_seed(0)
    delta = (0.1 * torch.randn(5, v.shape[0], 3)).requires_grad_()
    got = laplacian_loss(delta, L)  # sparse product
    (g,) = torch.autograd.grad(got, delta)
    want = (torch.matmul(L, delta) ** 2).sum() / 5  # the dense formula it replaced
    (g_want,) = torch.autograd.grad(want, delta)
    assert torch.allclose(got, want, rtol=1e-5) and torch.allclose(g, g_want, atol=1e-6)


def test_laplacian_loss_by_hand():
    L = uniform_laplacian(4, TET_F, dtype=torch.float64)
    delta = torch.zeros(2, 4, 3, dtype=torch.float64)
    delta[0, 0, 0] = 1.0
    # L·δ: vertex 0 gets -1, the others 1/3 -> 1 + 3/9 = 4/3, divided by B = 2
    assert laplacian_loss(delta, L).item() == pytest.approx(2 / 3, rel=1e-12)
    assert laplacian_loss(torch.zeros(3, 4, 3), L.float()).item() == 0.0
    # a rigid translation is in the kernel of L
    assert laplacian_loss(torch.ones(1, 4, 3, dtype=torch.float64) * 0.3, L).item() == pytest.approx(0, abs=1e-24)


def test_flatten_loss_by_hand_on_tetrahedron():
    # faces 0,1,2 are mutually orthogonal (cos 0 on edges 0-1, 0-2, 0-3);
    # face 3 meets each of them at cos = -1/sqrt(3) (edges 1-2, 1-3, 2-3)
    expected = 3 * 1.0 + 3 * (1 + 1 / math.sqrt(3)) ** 2
    got = flatten_loss(TET_V[None], TET_F)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    # batch average, and precomputed edge_faces give the same
    two = torch.stack([TET_V, TET_V])
    assert flatten_loss(two, TET_F, edge_face_pairs(TET_F)).item() == pytest.approx(expected, rel=1e-12)


def test_flatten_loss_zero_on_flat_plane():
    # a 3x3-vertex planar grid (8 triangles); interior edges given explicitly (open mesh)
    xs, ys = torch.meshgrid(torch.arange(3.0), torch.arange(3.0), indexing="ij")
    v = torch.stack([xs.reshape(-1), ys.reshape(-1), torch.zeros(9)], -1).double()
    f = []
    for i in range(2):
        for j in range(2):
            a, b, c, d = 3 * i + j, 3 * (i + 1) + j, 3 * (i + 1) + j + 1, 3 * i + j + 1
            f += [[a, b, c], [a, c, d]]
    f = torch.tensor(f)
    ef = []
    fl = f.tolist()
    for e in unique_edges(f).tolist():
        adj = [k for k, t in enumerate(fl) if e[0] in t and e[1] in t]
        if len(adj) == 2:
            ef.append(adj)
    ef = torch.tensor(ef)
    assert ef.shape[0] == 8
    assert flatten_loss(v[None], f, ef).item() == pytest.approx(0.0, abs=1e-24)
    v2 = v.clone()
    v2[4, 2] = 0.5  # lift the centre: no longer flat
    assert flatten_loss(v2[None], f, ef).item() > 1e-3


def test_edge_variance_loss_by_hand_and_zero():
    # right tetrahedron: 3 edges of length 1, 3 of sqrt 2
    dev = (math.sqrt(2) - 1) / 2
    expected = 0.1 * math.sqrt(6 * dev**2)
    assert edge_variance_loss(TET_V[None], TET_F).item() == pytest.approx(expected, rel=1e-12)
    # batch: mean over samples (second sample regular -> 0)
    two = torch.stack([TET_V, REG_V])
    assert edge_variance_loss(two, TET_F).item() == pytest.approx(expected / 2, rel=1e-9)
    assert edge_variance_loss(REG_V[None], REG_F).item() == pytest.approx(0.0, abs=1e-12)
    # scaling all lengths scales the loss
    assert edge_variance_loss(3 * TET_V[None], None, unique_edges(TET_F)).item() == pytest.approx(
        3 * expected, rel=1e-12
    )


def test_deform_loss_by_hand():
    delta = torch.tensor([[[3.0, 4, 0], [0, 0, 0]], [[0, 0, 1], [0, 2, 0]]])
    assert deform_loss(delta).item() == pytest.approx((5 + 0 + 1 + 2) / 4)
    assert deform_loss(torch.zeros(2, 5, 3)).item() == 0.0


@pytest.mark.parametrize("kind", ["exp", "quadratic"])
def test_depth_prior_by_hand(kind):
    verts = torch.tensor([[[0.2, 0.4, 0.05], [-0.1, -0.6, -0.02], [0.3, 0.0, 0.001]]], dtype=torch.float64)
    sign = torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)
    ratio = 2.0
    vals = []
    for (x, y, z), s in zip(verts[0].tolist(), sign.tolist()):
        r2 = x * x + (y / ratio) ** 2
        w = math.exp(2.0 * r2) if kind == "exp" else r2
        vals.append((z - s * 0.001) ** 2 * w)
    got = depth_prior_loss(verts, sign, ratio, kind=kind, temp=2.0)
    assert got.item() == pytest.approx(sum(vals) / 3, rel=1e-12)
    # the raw template z works as well as its sign
    assert depth_prior_loss(verts, sign * 0.3, ratio, kind=kind).item() == pytest.approx(got.item(), rel=1e-12)


def test_depth_prior_zero_at_target_and_x_y_detached():
    sign = torch.tensor([1.0, -1.0])
    at_target = torch.tensor([[[0.5, 0.3, 0.001], [0.2, -0.7, -0.001]]])
    assert depth_prior_loss(at_target, sign, 2.0).item() == pytest.approx(0.0, abs=1e-12)
    v = torch.tensor([[[0.5, 0.3, 0.1], [0.2, -0.7, -0.2]]], requires_grad=True)
    depth_prior_loss(v, sign, 2.0).backward()
    assert torch.equal(v.grad[..., :2], torch.zeros(1, 2, 2))
    w = torch.exp(2 * (v[..., 0] ** 2 + (v[..., 1] / 2) ** 2)).detach()
    expected_z = 2 * (v[..., 2].detach() - sign * 0.001) * w / 2
    assert torch.allclose(v.grad[..., 2], expected_z, atol=1e-6)


def test_flip_loss_by_hand_including_mask():
    template_z = torch.tensor([1.0, -1.0])
    mirror = torch.tensor([1, 0])
    delta = torch.tensor([[[0.1, 0.0, 0.2], [0.0, 0.0, -0.3]]], dtype=torch.float64)
    # v0: δ0 - Mz δ1 = (0.1,0,0.2)-(0,0,0.3) = (0.1,0,-0.1); mask: sign(-0.3) == sign(-1) -> 1
    # v1: δ1 - Mz δ0 = (0,0,-0.3)-(0.1,0,-0.2) = (-0.1,0,-0.1); mask: sign(0.2) == sign(1) -> 1
    assert z_mirror_flip_loss(delta, mirror, template_z).item() == pytest.approx(math.sqrt(0.02), rel=1e-12)
    delta[0, 1, 2] = 0.3
    # v0 masked out (δ_z at v1 is +, template z there is -); v1: (0,0,.3)-(.1,0,-.2) -> sqrt(.26)
    assert z_mirror_flip_loss(delta, mirror, template_z).item() == pytest.approx(math.sqrt(0.26) / 2, rel=1e-12)


def test_flip_loss_zero_for_symmetric_offsets_on_sphere():
    v, f = ico_sphere(3, dtype=torch.float64)
    m = z_mirror_correspondence(v)
    g = torch.Generator().manual_seed(0)
    d = torch.randn(3, 642, 3, generator=g, dtype=torch.float64) * 0.1
    flip = torch.tensor([1.0, 1, -1], dtype=torch.float64)
    sym = 0.5 * (d + d[:, m] * flip)
    assert z_mirror_flip_loss(sym, m, v[:, 2]).item() == pytest.approx(0.0, abs=1e-14)
    assert z_mirror_flip_loss(d, m, v[:, 2]).item() > 1e-3


def test_all_losses_pass_gradients():
    v, f = ico_sphere(3)
    L = uniform_laplacian(642, f)
    m = z_mirror_correspondence(v)
    g = torch.Generator().manual_seed(2)
    delta = (torch.randn(2, 642, 3, generator=g) * 0.05).requires_grad_(True)
    verts = v[None] + delta
    losses = {
        "laplacian": laplacian_loss(delta, L),
        "flatten": flatten_loss(verts, f),
        "edge": edge_variance_loss(verts, f),
        "deform": deform_loss(delta),
        "depthR": depth_prior_loss(verts, v[:, 2], 2.0, "exp"),
        "depthC": depth_prior_loss(verts, v[:, 2], 2.0, "quadratic"),
        "flip": z_mirror_flip_loss(delta, m, v[:, 2]),
    }
    for name, loss in losses.items():
        assert loss.ndim == 0, name
        (grad,) = torch.autograd.grad(loss, delta)
        assert torch.isfinite(grad).all(), name
        assert grad.abs().sum() > 0, name


def test_losses_validate_inputs():
    L = uniform_laplacian(4, TET_F)
    with pytest.raises(ValueError, match="delta"):
        laplacian_loss(torch.zeros(4, 3), L)
    with pytest.raises(ValueError, match="L"):
        laplacian_loss(torch.zeros(1, 5, 3), L)
    with pytest.raises(ValueError, match="faces"):
        flatten_loss(torch.zeros(1, 3, 3), torch.tensor([[0, 1, 2]]))  # open: edges with 1 face
    with pytest.raises(ValueError, match="edges"):
        edge_variance_loss(TET_V[None], None, torch.tensor([[0, 9]]))
    with pytest.raises(ValueError, match="template_z_sign"):
        depth_prior_loss(TET_V[None], torch.ones(3), 2.0)
    with pytest.raises(ValueError, match="kind"):
        depth_prior_loss(TET_V[None], torch.ones(4), 2.0, kind="cubic")
    with pytest.raises(ValueError, match="mirror_index"):
        z_mirror_flip_loss(torch.zeros(1, 4, 3), torch.tensor([0, 1, 2, 4]), torch.ones(4))
    with pytest.raises(ValueError, match="template_z"):
        z_mirror_flip_loss(torch.zeros(1, 4, 3), torch.tensor([0, 1, 2, 3]), torch.ones(5))
