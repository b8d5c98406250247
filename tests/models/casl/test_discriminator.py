import pytest
import torch
from torch import nn

from mirror3d.models.casl.blocks import count_parameters
from mirror3d.models.casl.discriminator import Discriminator


def test_reference_width_has_the_reference_parameter_count():
    # the reference code's parameter count: discriminator 291,936 (nf = 16)
    assert count_parameters(Discriminator(4, 16)) == 291_936


def test_structure_fifteen_bias_free_convs_six_strided_no_norm():
    d = Discriminator(4, 16)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 15
    assert sum(c.stride == (2, 2) for c in convs) == 6
    assert all(c.bias is None for c in convs)
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm, nn.LayerNorm))
                   for m in d.modules())
    assert [c.out_channels for c in convs] == [16, 16, 32, 32, 48, 48, 64, 64, 64, 64, 64, 64, 48, 32, 1]
    acts = [m for m in d.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(acts) == 14 and all(a.negative_slope == 0.2 for a in acts)


@pytest.mark.parametrize("wh,map_hw", [((64, 128), (2, 1)), ((128, 128), (2, 2)), ((96, 160), (3, 2)),
                                       ((32, 64), (1, 1))])
def test_score_map_size_and_mean_pooling(wh, map_hw):
    torch.manual_seed(0)
    d = Discriminator(4, 4)
    x = torch.rand(3, 4, wh[1], wh[0])
    smap = d.score_map(x)
    assert smap.shape == (3, 1, *map_hw)
    assert torch.allclose(d(x), smap.mean(dim=(1, 2, 3)))


def test_scores_start_near_zero_and_the_gradient_penalty_double_backward_works():
    torch.manual_seed(0)
    d = Discriminator(4, 4)
    x = torch.rand(2, 4, 64, 32, requires_grad=True)
    s = d(x)
    assert s.shape == (2,) and s.abs().max() < 1e-2
    grad, = torch.autograd.grad(s.sum(), x, create_graph=True)
    gp = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
    gp.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in d.parameters())


def test_bad_input():
    with pytest.raises(ValueError, match="x must have shape"):
        Discriminator(4, 4)(torch.rand(1, 3, 64, 32))
    with pytest.raises(ValueError, match="base_channels"):
        Discriminator(4, 0)
