import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mirror3d.models.casl.blocks import (IMAGENET_MEAN, IMAGENET_STD, AddCoords, ChannelGate, ConvNormAct,
                                         DownsampleBlock, GatedResidualStack, ImageNormalization, MaxAvgPool2d,
                                         ResidualBlock, check_image, count_parameters, init_head, init_weights)


def test_image_normalization_matches_hand_computation():
    x = torch.rand(2, 4, 5, 3)
    out = ImageNormalization()(x)
    for c in range(3):
        assert torch.allclose(out[:, c], (x[:, c] - IMAGENET_MEAN[c]) / IMAGENET_STD[c])
    assert torch.allclose(out[:, 3], x[:, 3] - 0.5)


def test_image_normalization_follows_dtype():
    x = torch.rand(1, 4, 2, 2, dtype=torch.float64)
    assert ImageNormalization()(x).dtype == torch.float64


def test_max_avg_pool_is_half_half_at_init_and_learns_the_mix():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 4)
    pool = MaxAvgPool2d(2)
    naive = torch.zeros(2, 3, 2, 2)
    for i in range(2):
        for j in range(2):
            block = x[:, :, 3 * i:3 * i + 3, 2 * j:2 * j + 2].flatten(2)
            naive[:, :, i, j] = 0.5 * block.max(-1).values + 0.5 * block.mean(-1)
    assert torch.allclose(pool(x), naive, atol=1e-6)
    with torch.no_grad():
        pool.mix_logit.fill_(30.0)
    assert torch.allclose(pool(x), F.adaptive_max_pool2d(x, 2), atol=1e-6)
    pool.mix_logit.data.zero_()
    pool(x).sum().backward()
    assert pool.mix_logit.grad is not None and pool.mix_logit.grad.abs() > 0


def test_channel_gate_scales_each_channel_by_its_sigmoid_gate():
    torch.manual_seed(0)
    gate = ChannelGate(32, reduction=16)
    x = torch.randn(3, 32, 4, 5)
    s = x.mean(dim=(2, 3))
    g = torch.sigmoid(gate.excite(F.leaky_relu(gate.squeeze(s), 0.2)))
    assert gate.squeeze.out_features == 2
    assert torch.allclose(gate(x), x * g[:, :, None, None], atol=1e-6)


def test_add_coords_x_left_to_right_and_y_top_to_bottom():
    x = torch.zeros(2, 3, 4, 5)
    out = AddCoords()(x)
    assert out.shape == (2, 5, 4, 5)
    assert torch.allclose(out[:, 3, :, 0], torch.full((2, 4), -1.0))
    assert torch.allclose(out[:, 3, :, -1], torch.full((2, 4), 1.0))
    assert torch.allclose(out[:, 4, 0, :], torch.full((2, 5), -1.0))
    assert torch.allclose(out[:, 4, -1, :], torch.full((2, 5), 1.0))


@pytest.mark.parametrize("hw,expected", [((8, 6), (4, 3)), ((5, 7), (3, 4)), ((1, 2), (1, 1))])
def test_stride_two_blocks_give_ceil_half_size(hw, expected):
    x = torch.randn(2, 4, *hw)
    assert ConvNormAct(4, 6, 3, stride=2)(x).shape == (2, 6, *expected)
    assert DownsampleBlock(4, 6)(x).shape == (2, 6, *expected)


def test_conv_norm_act_has_no_bias_with_norm_and_a_bias_without():
    assert ConvNormAct(3, 4, norm=True)[0].bias is None
    block = ConvNormAct(3, 4, norm=False)
    assert block[0].bias is not None and not any(isinstance(m, nn.BatchNorm2d) for m in block)


def test_residual_block_and_stack_are_identity_when_the_branch_is_zero():
    x = torch.randn(2, 8, 5, 4)
    block = ResidualBlock(8, hidden=4)
    assert block.branch[0][0].out_channels == 4
    nn.init.zeros_(block.branch[1][1].weight)  # last BN scale
    block.eval()
    assert torch.allclose(block(x), x)
    stack = GatedResidualStack(8, 2, norm=False)
    for b in stack.blocks:
        nn.init.zeros_(b.branch[1][0].weight)
        nn.init.zeros_(b.branch[1][0].bias)
    # blocks are identity, so out = x + gate(x)
    assert torch.allclose(stack(x), x + stack.gate(x), atol=1e-6)


def test_init_weights_follows_the_reference_distributions():
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 256, 3, bias=True)
    bn = nn.BatchNorm2d(20000)
    lin = nn.Linear(500, 400)
    for m in (conv, bn, lin):
        m.bias.data.fill_(3.0)
        init_weights(m)
    assert abs(conv.weight.std().item() / math.sqrt(2.0 / (64 * 9)) - 1) < 0.05
    assert abs(lin.weight.std().item() / math.sqrt(2.0 / 500) - 1) < 0.05
    assert abs(bn.weight.mean().item() - 1) < 1e-3 and abs(bn.weight.std().item() - 0.02) < 1e-3
    for m in (conv, bn, lin):
        assert torch.count_nonzero(m.bias) == 0


def test_init_head_is_tiny_and_rejects_non_layers():
    lin = nn.Linear(300, 300)
    init_head(lin)
    assert lin.weight.std().item() < 2e-5 and torch.count_nonzero(lin.bias) == 0
    with pytest.raises(ValueError, match="module"):
        init_head(nn.ReLU())


def test_count_parameters_matches_hand_count():
    assert count_parameters(nn.Conv2d(3, 5, 3, bias=False)) == 3 * 5 * 9
    assert count_parameters(MaxAvgPool2d()) == 1


@pytest.mark.parametrize("bad,match", [
    (torch.zeros(1, 3, 4, 4), r"\(B, 4, H, W\)"),
    (torch.zeros(4, 4, 4), r"\(B, 4, H, W\)"),
    (torch.zeros(1, 4, 4, 4, dtype=torch.int64), "floating-point"),
    (torch.full((1, 4, 2, 2), float("nan")), "NaN"),
    ([1, 2], "torch.Tensor"),
])
def test_check_image_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        check_image(bad, 4)
