"""The 2D baseline CNN: size close to OG-Net-Small, shapes, head, errors."""

import pytest
import torch

from mirror3d.models.ognet.baseline2d import CNN2D, BasicBlock
from mirror3d.models.ognet.model import count_paper_params
from mirror3d.models.registry import create_model


def test_paper_count_close_to_og_net_small():
    model = create_model("cnn2d-small", num_classes=751)
    count = count_paper_params(model)
    assert count == 1_179_616
    assert abs(count - 1_200_829) <= 0.05 * 1_200_829
    assert count_paper_params(model, include_classifier=True) == count + 512 * 751 + 751


def test_forward_shapes_and_eval_feature_is_head_bn_output():
    torch.manual_seed(0)
    model = CNN2D(num_classes=9).eval()
    images = torch.randn(3, 3, 128, 64)
    with torch.no_grad():
        out = model(images)
        pooled = model.forward_features(images)
        assert pooled.shape == (3, 256)
        assert torch.allclose(out.feature, model.head.bn(model.head.embed(pooled)), atol=1e-6)
    assert out.logits.shape == (3, 9) and out.feature.shape == (3, 512)


def test_basic_block_downsamples_with_projection():
    block = BasicBlock(8, 16, stride=2)
    assert isinstance(block.skip, torch.nn.Sequential)
    assert block(torch.randn(2, 8, 10, 6)).shape == (2, 16, 5, 3)
    same = BasicBlock(8, 8)
    assert isinstance(same.skip, torch.nn.Identity)


def test_bad_images():
    model = CNN2D(num_classes=2)
    with pytest.raises(ValueError, match="images"):
        model(torch.randn(2, 1, 128, 64))
    bad = torch.randn(2, 3, 16, 8)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        model(bad)
