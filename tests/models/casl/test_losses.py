import pytest
import torch

from mirror3d.models.casl.losses import (CaslLossConfig, data_loss, gradient_penalty, ic_loss,
                                         soft_iou, warm_up_factor, wgan_d_loss, wgan_g_loss)


def test_warm_up_schedule():
    assert warm_up_factor(0, 40) == pytest.approx(0.01)
    assert warm_up_factor(20, 40) == pytest.approx(0.505)
    assert warm_up_factor(40, 40) == 1.0 and warm_up_factor(100, 40) == 1.0
    assert warm_up_factor(3, 0) == 1.0


def test_soft_iou_and_data_loss_by_hand():
    gt = torch.zeros(1, 2, 2)
    gt[0, 0] = 1.0  # top row foreground
    pred = torch.tensor([[[1.0, 0.5], [0.5, 0.0]]])
    # Σab = 1.5 ; Σ(a + b − ab) = (1 + 1 − 1) + (0.5 + 1 − 0.5) + 0.5 + 0 = 2.5
    assert soft_iou(pred, gt).item() == pytest.approx(1.5 / 2.5, rel=1e-5)
    img = torch.zeros(1, 3, 2, 2)
    ren = torch.full((1, 3, 2, 2), 0.25)
    total, parts = data_loss(ren, pred, img, gt, CaslLossConfig())
    # only the 2 foreground pixels differ (0.25 each, 3 channels) over 12 values → 0.125
    assert parts["l1"].item() == pytest.approx(0.125)
    assert total.item() == pytest.approx(2 * (0.125 + 1 - 1.5 / 2.5), rel=1e-5)


def test_ic_loss_zero_for_identical_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    attrs = {"azimuth_cs": torch.randn(2, 2, generator=g), "elevation_cs": torch.randn(2, 2, generator=g),
             "distance": torch.rand(2, generator=g), "bias": torch.rand(2, 2, generator=g),
             "texture": torch.rand(2, 3, 8, 4, generator=g), "light": torch.rand(2, 9, generator=g)}
    v = torch.rand(2, 50, 3, generator=g)
    zero, _ = ic_loss(attrs, attrs, v, v, CaslLossConfig())
    assert zero.item() == pytest.approx(0.0, abs=1e-7)
    other = {k: t + 0.1 for k, t in attrs.items()}
    perm = v[:, torch.randperm(50, generator=g)]
    loss, parts = ic_loss(other, attrs, perm, v, CaslLossConfig())
    assert parts["ic_distance"].item() == pytest.approx(0.1, abs=1e-6)
    assert parts["ic_light"].item() == pytest.approx(0.01, abs=1e-6)
    assert parts["ic_shape"].item() == pytest.approx(0.0, abs=1e-7)  # chamfer ignores order
    _, parts2 = ic_loss(attrs, attrs, v + 0.3, v, CaslLossConfig())
    assert parts2["ic_shape"].item() > 0


def test_wgan_losses_and_penalty():
    class Lin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.full((4 * 2 * 2,), 0.5))

        def forward(self, x):
            return x.flatten(1) @ self.w

    d = Lin()
    real = torch.ones(3, 4, 2, 2)
    fake = torch.zeros(3, 4, 2, 2)
    # linear D: ‖∇D‖ = ‖w‖ = 0.5·4 = 2 everywhere → GP = (2 − 1)² = 1
    assert gradient_penalty(d, real, fake).item() == pytest.approx(1.0)
    cfg = CaslLossConfig()
    loss, parts = wgan_d_loss(d, real, fake, cfg)
    assert loss.item() == pytest.approx(cfg.gan * (0 - 8) + cfg.gan_gp * cfg.gan * 1.0)
    assert wgan_g_loss(d, fake + 1, cfg).item() == pytest.approx(-cfg.gan * 8)
