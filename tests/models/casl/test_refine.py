"""Test-time refinement (mirror3d.models.casl.refine, beyond the papers) on a tiny untrained
CASL model and a synthetic person-like blob (an ellipse, coloured, on white) at 32x64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mirror3d.models.casl import CaslPredictor
from mirror3d.models.casl.losses import CaslLossConfig, soft_iou
from mirror3d.models.casl.refine import DEFAULT_REFINED, refine_attributes, refinement_loss
from mirror3d.models.casl.step import build_casl_model

H, W = 64, 32
TINY = {"data": {"image_size": [W, H], "bg": False},
        "net": {"camera_channels": 4, "shape_channels": 4, "texture_channels": 4,
                "light_channels": [4, 4, 4, 4, 4], "background_channels": 4, "shape_hidden": 16,
                "camera_hidden": 16, "texture_decoder_channels": 8}}


def _blob():
    """uint8 H×W×3 image and bool mask: a tall ellipse off the centre (a SynthPeople-like
    silhouette the untrained model's sphere does not cover)."""
    yy, xx = np.mgrid[0:H, 0:W]
    mask = ((yy + 0.5 - 34) / 26) ** 2 + ((xx + 0.5 - 17) / 9) ** 2 <= 1
    img = np.full((H, W, 3), 255, np.uint8)
    img[mask] = (204, 77, 51)
    img[mask & (yy > 40)] = (40, 60, 160)  # "trousers"
    return img, mask


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = build_casl_model(TINY).eval()
    pred = CaslPredictor(model, TINY)
    img, mask = _blob()
    x = pred.prepare(img, mask)
    with torch.no_grad():
        attrs = model.encode(x)
    return pred, model, x, attrs


@pytest.fixture(scope="module")
def refined(setup):
    pred, model, x, attrs = setup
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    out, hist = refine_attributes(model, x, attrs, 30, seed=0, loss=pred.loss_config)
    return out, hist, weights


def _iou(model, x, attrs):
    with torch.no_grad():
        return float(soft_iou(model.render(attrs).soft_mask, x[:, 3])[0])


def test_refinement_learns_the_silhouette(setup, refined):
    """(a) 30 steps raise the soft MaskIoU of the render against the mask by a lot."""
    _, model, x, attrs = setup
    out, hist, _ = refined
    before, after = _iou(model, x, attrs), _iou(model, x, out)
    assert before < 0.6 and after > before + 0.3, (before, after)
    assert hist.mask_iou[0, 0].item() == pytest.approx(before, abs=1e-6)
    assert hist.steps == 30 and hist.loss.shape == (31, 1)


def test_loss_goes_down_and_best_so_far_is_returned(setup, refined):
    """(b) the optimised loss: final < initial; the returned attributes' loss (recomputed) is
    the minimum of the history, ≤ the loss at step 0 (the network's prediction)."""
    pred, model, x, attrs = setup
    out, hist, _ = refined
    loss = hist.loss[:, 0]
    assert loss[-1] < 0.5 * loss[0]
    with torch.no_grad():
        l0, _ = refinement_loss(model, x, attrs, pred.loss_config)
        lr_, _ = refinement_loss(model, x, out, pred.loss_config)
    assert l0.item() == pytest.approx(loss[0].item(), rel=1e-6)
    assert lr_.item() == pytest.approx(loss.min().item(), rel=1e-5)
    assert lr_.item() <= l0.item()
    assert hist.best_loss.item() == loss.min().item()
    assert hist.best_step.item() == int(loss.argmin())


def test_best_so_far_guards_against_a_diverging_optimiser(setup):
    """With an absurd learning rate every step makes things worse: the prediction itself
    comes back (best step 0), bit for bit; a loss that turns non-finite stops the refinement."""
    pred, model, x, attrs = setup
    out, hist = refine_attributes(model, x, attrs, 4, lr=1.0, loss=pred.loss_config)
    assert hist.steps == 4 and (hist.loss[1:, 0] > hist.loss[0, 0]).all()
    assert hist.best_step.item() == 0 and hist.best_loss.item() == hist.loss[0, 0].item()
    assert all(torch.equal(out[k], attrs[k]) for k in attrs.keys())
    out, hist = refine_attributes(model, x, attrs, 4, lr=50.0, loss=pred.loss_config)
    assert hist.steps < 4 and torch.isfinite(hist.loss).all()
    assert hist.best_step.item() == 0 and all(torch.equal(out[k], attrs[k]) for k in attrs.keys())


def test_only_the_attributes_change_within_their_ranges(setup, refined):
    _, model, _, attrs = setup
    out, _, weights = refined
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    assert all(p.grad is None for p in model.parameters())
    for k in ("delta", "distance", "elevation", "bias", "texture", "light"):
        assert not torch.equal(out[k], attrs[k]), k
    for k in ("azimuth", "azimuth_cs", "background", "texture_flow"):
        assert torch.equal(out[k], attrs[k]), k
    cfg = model.net_cfg
    assert cfg.distance_range[0] <= out.distance.item() <= cfg.distance_range[1]
    assert cfg.elevation_range[0] <= out.elevation.item() <= cfg.elevation_range[1]
    assert out.bias.abs().max() < 1 and out.texture.min() >= -0.05 and out.texture.max() <= 1.05
    assert 2.5 <= out.light[0, 0] <= 3.5 and out.light[0, 1:].abs().max() <= 0.1 + 1e-6
    th = out.texture.shape[2] // 2
    assert torch.equal(out.texture[:, :, th:], out.texture[:, :, :th].flip(2))
    assert out.delta.mean(dim=1).abs().max() < 1e-5
    e = torch.deg2rad(out.elevation)
    assert torch.allclose(out.elevation_cs, torch.stack([e.cos(), e.sin()], -1), atol=1e-6)


def test_same_seed_same_result(setup):
    """(c) bit-identical for a seed, whatever the caller's RNG state (which is left alone)."""
    pred, model, x, attrs = setup
    torch.manual_seed(1)
    a, ha = refine_attributes(model, x, attrs, 8, seed=3, loss=pred.loss_config)
    torch.manual_seed(2)
    s0 = torch.random.get_rng_state()
    b, hb = refine_attributes(model, x, attrs, 8, seed=3, loss=pred.loss_config)
    assert torch.equal(torch.random.get_rng_state(), s0)
    assert all(torch.equal(a[k], b[k]) for k in attrs.keys())
    assert torch.equal(ha.loss, hb.loss) and not torch.equal(a.delta, attrs.delta)


def test_zero_steps_is_the_plain_prediction(setup):
    """(d) refine_steps=0 is exactly today's reconstruct; N > 0 changes it."""
    pred, model, x, attrs = setup
    img, mask = _blob()
    same, hist = refine_attributes(model, x, attrs, 0)
    assert same is attrs and hist.steps == 0 and hist.best_step.item() == 0
    plain = pred.reconstruct(img, mask)
    zero = pred.reconstruct(img, mask, refine_steps=0)
    assert plain.refinement is None and zero.refinement is None
    for k in ("vertices", "texture", "light"):
        assert torch.equal(getattr(plain, k), getattr(zero, k))
    assert plain.camera == zero.camera
    assert torch.equal(plain.vertices, model.vertices(attrs)[0])
    more = pred.reconstruct(img, mask, refine_steps=3, seed=0)
    assert more.refinement is not None and more.refinement.steps == 3
    assert not torch.equal(more.vertices, plain.vertices)
    default = CaslPredictor(model, TINY, refine_steps=3).reconstruct(img, mask)
    assert torch.equal(default.vertices, more.vertices)


def test_a_batch_refines_each_image_on_its_own(setup):
    pred, model, x, _ = setup
    x2 = torch.cat([x, x.flip(3)])
    with torch.no_grad():
        a2 = model.encode(x2)
    both, hb = refine_attributes(model, x2, a2, 4, loss=pred.loss_config)
    for i in range(2):
        ai = a2.replace(**{k: v[i:i + 1] for k, v in a2.items()})
        one, h1 = refine_attributes(model, x2[i:i + 1], ai, 4, loss=pred.loss_config)
        assert torch.allclose(hb.loss[:, i], h1.loss[:, 0], rtol=1e-4, atol=1e-6)
        assert torch.allclose(both.delta[i], one.delta[0], atol=1e-5)


def test_bad_arguments(setup):
    _, model, x, attrs = setup
    for kw, what in (({"steps": -1}, "steps"), ({"steps": 2, "lr": 0.0}, "lr"),
                     ({"steps": 2, "params": ("delta", "colour")}, "params")):
        kw = {"steps": 1, **kw}
        with pytest.raises(ValueError, match=what):
            refine_attributes(model, x, attrs, **kw)
    assert "azimuth" not in DEFAULT_REFINED
    out, _ = refine_attributes(model, x, attrs, 3, params=("azimuth",), loss=CaslLossConfig())
    assert torch.equal(out.delta, attrs.delta)
    assert -180.0 <= out.azimuth.item() < 180.0
