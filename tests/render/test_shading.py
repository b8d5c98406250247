import math

import pytest
import torch

from mirror3d.render import sh_basis, sh_shading


def test_basis_on_axis_normals_by_hand():
    n = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0, 0, 0]])
    b = sh_basis(n)
    c0, c1, c3, c4, c6 = 0.28209479, 0.48860251, 0.94617470, 0.31539157, 0.38627420
    expect = torch.tensor([
        [c0, c1, 0, 0, 0, 0, -c4, 0, c6],        # +x
        [c0, 0, 0, c1, 0, 0, -c4, 0, -c6],       # +y
        [c0, 0, c1, 0, 0, 0, c3 - c4, 0, 0],     # +z
        [c0, 0, 0, 0, 0, 0, -c4, 0, 0],          # background (zero normal)
    ])
    assert torch.allclose(b, expect, atol=1e-7)


def test_mixed_terms_by_hand():
    s = 1 / math.sqrt(3)
    b = sh_basis(torch.tensor([s, s, s]))
    assert b[4].item() == pytest.approx(1.09254843 / 3)
    assert b[5].item() == pytest.approx(1.09254843 / 3)
    assert b[7].item() == pytest.approx(0.77254840 / 3)
    assert b[8].item() == pytest.approx(0.0, abs=1e-7)


def test_shading_is_the_dot_product_with_light():
    n = torch.nn.functional.normalize(torch.randn(2, 3, 4, 3), dim=-1)
    light = torch.randn(2, 9)
    shade = sh_shading(n, light)
    assert shade.shape == (2, 3, 4)
    ref = torch.einsum("bhwk,bk->bhw", sh_basis(n), light)
    assert torch.allclose(shade, ref, atol=1e-6)
    # the CASL light prior: l0 = 3, rest 0 → a constant 0.282·3 on the foreground
    flat = sh_shading(n, torch.tensor([[3.0] + [0.0] * 8] * 2))
    assert torch.allclose(flat, torch.full_like(flat, 0.28209479 * 3))
