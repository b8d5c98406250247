import torch

from mirror3d.render import sample_texture


def test_v_is_flipped_top_row_is_v_one():
    tex = torch.zeros(1, 3, 4, 4)
    tex[0, 0, 0] = 1.0  # top row red
    tex[0, 2, 3] = 1.0  # bottom row blue
    uv = torch.tensor([[[[0.5, 0.99], [0.5, 0.01]]]])  # (1, 1, 2, 2)
    out = sample_texture(uv, tex)
    assert out[0, :, 0, 0].tolist() == [1.0, 0.0, 0.0]
    assert out[0, :, 0, 1].tolist() == [0.0, 0.0, 1.0]


def test_bilinear_and_border_clamp():
    tex = torch.tensor([[[[0.0, 1.0]]]]).expand(1, 3, 1, 2)
    uv = torch.tensor([[[[0.5, 0.5], [-3.0, 0.5], [7.0, 0.5], [0.375, 0.5]]]])
    out = sample_texture(uv, tex)[0, 0, 0]
    # texel centres at u = 0.25 and 0.75; clamped outside
    assert torch.allclose(out, torch.tensor([0.5, 0.0, 1.0, 0.25]))


def test_gradient_flows_to_uv_and_texture():
    tex = torch.rand(1, 3, 8, 8, requires_grad=True)
    uv = torch.rand(1, 5, 5, 2, requires_grad=True)
    sample_texture(uv, tex).sum().backward()
    assert tex.grad.abs().sum() > 0 and uv.grad.abs().sum() > 0
