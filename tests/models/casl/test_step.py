"""The CASL training step and its per-epoch pieces (mirror3d.models.casl.step), in one process."""

from __future__ import annotations

import copy

import torch

from mirror3d.engine.casl_train import CaslTrainConfig
from mirror3d.models.casl.em import PrototypeLoop, PrototypeLoopConfig
from mirror3d.models.casl.losses import CaslLossConfig
from mirror3d.models.casl.step import (CaslStepSettings, build_casl_model, build_model, casl_step,
                                       casl_step_reference, constant_parameters,
                                       held_out_mask_iou, prototype_update)
from mirror3d.utils.config import config_to_dict, update_config


def _batch(b=4, h=64, w=32):
    x = torch.rand(b, 4, h, w, generator=torch.Generator().manual_seed(0))
    x[:, 3] = 0
    x[:, 3, 10:50, 8:24] = 1
    return x


def _cfg():
    return update_config(CaslTrainConfig(), {"data.image_size": (32, 64)})


def test_frozen_groups_get_no_reconstruction_gradient():
    torch.manual_seed(0)
    model, disc = build_model(_cfg())
    opt_e = torch.optim.SGD(model.parameters(), lr=0.0)
    opt_d = torch.optim.SGD(disc.parameters(), lr=0.0)
    settings = CaslStepSettings(loss=CaslLossConfig(ic=0.0, flip=0.0), gan=False)
    m = casl_step(model, disc, opt_e, opt_d, _batch(), settings, {"camera", "texture"}, 1.0)
    # opt.zero_grad(set_to_none) ran before backward, so .grad shows this step only
    cam = [p.grad for p in model.encoder.camera.parameters()]
    shape = [p.grad for p in model.encoder.shape.parameters()]
    assert all(g is None or g.abs().sum() == 0 for g in cam)
    assert any(g is not None and g.abs().sum() > 0 for g in shape)
    assert "d_loss" not in m and m["gan_g"] == 0.0 and 0.0 <= m["train_mask_iou"] <= 1.0


def test_gan_step_trains_the_critic_and_a_bad_loss_raises():
    torch.manual_seed(0)
    model, disc = build_model(_cfg())
    opt_e = torch.optim.Adam(model.parameters(), 1e-4)
    opt_d = torch.optim.Adam(disc.parameters(), 1e-4)
    before = [p.detach().clone() for p in disc.parameters()]
    m = casl_step(model, disc, opt_e, opt_d, _batch(), CaslStepSettings(), set(), 1.0,
                  torch.Generator().manual_seed(1))
    assert any(not torch.equal(a, p) for a, p in zip(before, disc.parameters()))
    assert all(isinstance(v, float) for v in m.values()) and m["gan_g"] != 0.0
    bad = CaslStepSettings(loss=CaslLossConfig(iou=float("inf")), gan=False)
    try:
        casl_step(model, disc, opt_e, opt_d, _batch(), bad, set(), 1.0)
    except FloatingPointError as e:
        assert "non-finite CASL loss" in str(e)
    else:
        raise AssertionError("a non-finite loss must raise")


def _adam(params):
    return torch.optim.Adam(params, 1e-3, betas=(0.95, 0.999), amsgrad=True)


def test_fast_step_trains_exactly_as_the_reference_step():
    """casl_step against casl_step_reference (the step before issue #17's speed-ups): same
    metrics and the same encoder and critic weights after steps with the critic, an encoder
    loop that freezes a group, and the global random state (dropout, GP mix) in step."""
    torch.manual_seed(0)
    model, disc = build_model(_cfg())
    runs = []
    for step in (casl_step_reference, casl_step):
        m, d = copy.deepcopy(model), copy.deepcopy(disc)
        opt_e, opt_d = _adam(m.parameters()), _adam(d.parameters())
        torch.manual_seed(1)
        gen = torch.Generator().manual_seed(2)
        metrics = [step(m, d, opt_e, opt_d, _batch(), CaslStepSettings(), frozen, 1.0, gen)
                   for frozen in (set(), {"shape"})]
        runs.append((metrics, m, d))
    (m_ref, model_ref, disc_ref), (m_fast, model_fast, disc_fast) = runs
    assert m_fast == m_ref and m_ref[0]["gan_g"] != 0.0
    for a, b in ((model_ref, model_fast), (disc_ref, disc_fast)):
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(x, y), name


def test_constant_parameters_pass_gradients_through_but_not_to_the_weights():
    lin = torch.nn.Linear(3, 2)
    x = torch.randn(4, 3, requires_grad=True)
    with constant_parameters(lin):
        y = lin(x).sum()
    assert all(p.requires_grad for p in lin.parameters())  # restored on exit
    y.backward()
    assert lin.weight.grad is None and lin.bias.grad is None
    assert torch.allclose(x.grad, lin.weight.detach().sum(0).expand(4, 3))


def test_build_model_from_the_config_or_its_saved_dict():
    cfg = update_config(_cfg(), {"net.use_im": False, "ellipsoid": 1.5, "sigma": 5000.0})
    torch.manual_seed(0)
    a, da = build_model(cfg)
    torch.manual_seed(0)
    b, db = build_model(config_to_dict(cfg))
    assert a.image_size == b.image_size == (32, 64) and not b.net_cfg.use_im
    assert b.renderer.sigma == 5000.0
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    assert all(torch.equal(p, q) for p, q in zip(da.parameters(), db.parameters()))
    assert type(build_casl_model({"data": {"image_size": [16, 32]}})).__name__ == "CaslModel"


def test_prototype_update_moves_the_template_with_the_summed_offsets():
    torch.manual_seed(0)
    model = build_casl_model(_cfg())
    loader = [{"image": _batch()}]
    loop = PrototypeLoop(PrototypeLoopConfig(collapse=10.0))
    calls = []

    def reduce_sum(t):  # what the engine's all-reduce sees
        calls.append(t.shape)
        return t

    start = model.template.clone()
    out = prototype_update(model, loop, loader, 1.0, "cpu", reduce_sum)
    assert calls == [torch.Size([642, 3]), torch.Size([])]
    assert out["prototype_count"] == 4.0 and loop.updates == 1
    assert (model.template - start).abs().max().item() == out["prototype_move"] > 0
    assert model.template.mean(0).abs().max() < 1e-5  # re-centred
    iou = held_out_mask_iou(model, loader, "cpu")
    assert 0.0 <= iou <= 100.0 and not model.training
    assert held_out_mask_iou(model, [], "cpu") != held_out_mask_iou(model, [], "cpu")  # nan
