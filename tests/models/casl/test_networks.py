import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mirror3d.utils.config import validate_config
from mirror3d.models.casl.blocks import count_parameters
from mirror3d.models.casl.encoders import (BackgroundEncoder, CameraEncoder, LightEncoder, ShapeEncoder,
                                           TextureEncoder)
from mirror3d.models.casl.networks import (AttributeEncoder, CaslAttributes, CaslNetConfig, build_discriminator,
                                           frozen_modules)
from mirror3d.render.sphere import template_mesh


def tiny_cfg(**kw):
    args = dict(camera_channels=4, camera_blocks=(1, 1, 1), camera_hidden=16, shape_channels=4,
                shape_blocks=(1, 1, 1, 1), shape_hidden=16, texture_channels=4, texture_blocks=(1, 1, 1, 1),
                texture_decoder_channels=8, light_channels=(4, 8, 8, 8, 8), background_channels=4,
                background_blocks=1, disc_channels=4)
    args.update(kw)
    return CaslNetConfig(**args)


@pytest.fixture(scope="module")
def mesh():
    verts, faces, _ = template_mesh(level=2)
    return verts, faces


def _image(b, w, h, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 4, h, w, generator=g)
    x[:, 3] = (x[:, 3] > 0.5).float()
    return x


def _bn_state(module):
    return {k: v.clone() for k, v in module.state_dict().items()
            if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


# --------------------------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------------------------


def test_configs_validate_and_presets_differ():
    small = validate_config(CaslNetConfig())
    paper = validate_config(CaslNetConfig.paper())
    assert small == CaslNetConfig.small()
    assert paper.texture_channels > small.texture_channels and paper.disc_channels == 16
    assert CaslNetConfig.paper(drop_texture=0.2).drop_texture == 0.2


@pytest.mark.parametrize("kw,match", [
    (dict(distance_range=(6.0, 2.0)), "distance_range"),
    (dict(distance_range=(0.0, 2.0)), "distance_range"),
    (dict(elevation_range=(10.0, 10.0)), "elevation_range"),
    (dict(camera_blocks=()), "camera_blocks"),
])
def test_bad_config_values(kw, match):
    with pytest.raises(ValueError, match=match):
        validate_config(CaslNetConfig(**kw))


def test_paper_preset_parameter_counts_against_the_reference(mesh):
    _, faces = template_mesh(level=3)[:2]
    cfg = CaslNetConfig.paper()
    # the reference code's parameter counts: exact where our blocks match the reference's
    assert count_parameters(LightEncoder(cfg.light_channels, cfg.light_hidden)) == 1_140_554
    assert count_parameters(BackgroundEncoder(cfg.background_channels, cfg.background_blocks)) == 29_717
    assert count_parameters(build_discriminator(cfg)) == 291_936
    # approximate elsewhere (our own ResNet-style trunks): within 6 % per encoder
    for enc, ref in [(CameraEncoder(cfg.camera_channels, cfg.camera_blocks, cfg.camera_hidden), 6_499_941),
                     (ShapeEncoder(642, faces, cfg.shape_channels, cfg.shape_blocks, cfg.shape_features,
                                   cfg.shape_hidden), 19_362_084),
                     (TextureEncoder(cfg.texture_channels, cfg.texture_blocks, cfg.texture_decoder_channels),
                      29_182_213)]:
        assert abs(count_parameters(enc) / ref - 1) < 0.06, type(enc).__name__


# --------------------------------------------------------------------------------------------
# attribute encoder
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("wh", [(64, 128), (128, 128), (32, 64), (96, 160)])
def test_attribute_shapes(mesh, wh):
    torch.manual_seed(0)
    verts, faces = mesh
    w, h = wh
    enc = AttributeEncoder(tiny_cfg(), verts, faces)
    a = enc(_image(2, w, h), verts[None])
    v = verts.shape[0]
    want = {"azimuth": (2,), "elevation": (2,), "distance": (2,), "bias": (2, 2), "azimuth_cs": (2, 2),
            "elevation_cs": (2, 2), "delta": (2, v, 3), "texture": (2, 3, 2 * h, w), "light": (2, 9),
            "background": (2, 3, h, w), "texture_flow": (2, 2, h, w)}
    assert {k: tuple(t.shape) for k, t in a.items()} == want
    assert all(t.is_contiguous() for _, t in a.items())  # plain layouts, whatever runs inside
    assert a["delta"] is a.delta and "light" in a and set(a.as_dict()) == set(want)
    d = a.detach()
    assert isinstance(d, CaslAttributes) and not d.texture.requires_grad and a.texture.requires_grad
    with pytest.raises(KeyError, match="known"):
        a["vertices"]


@pytest.mark.parametrize("flip", [True, False])
def test_im_flag_reaches_both_samplers(mesh, flip):
    verts, faces = mesh
    enc = AttributeEncoder(tiny_cfg(im_flip_y=flip), verts, faces)
    assert enc.camera.sampler.flip_y is flip and enc.shape.sampler.flip_y is flip


def test_template_may_be_per_sample(mesh):
    torch.manual_seed(0)
    verts, faces = mesh
    enc = AttributeEncoder(tiny_cfg(), verts, faces).eval()
    x = _image(3, 32, 64)
    a = enc(x, verts[None])
    b = enc(x, verts[None].expand(3, -1, -1))
    assert torch.allclose(a.delta, b.delta) and torch.allclose(a.azimuth, b.azimuth)


def test_frozen_groups_get_no_gradient_and_keep_bn_statistics(mesh):
    torch.manual_seed(0)
    verts, faces = mesh
    enc = AttributeEncoder(tiny_cfg(drop_camera=0.0, drop_shape=0.0), verts, faces).train()
    x = _image(4, 32, 64)
    frozen = {"camera", "shape"}
    before = {g: _bn_state(nn.ModuleList(m)) for g, m in enc.group_modules().items()}
    a = enc(x, verts[None], frozen=frozen)
    assert not a.delta.requires_grad and not a.azimuth_cs.requires_grad and not a.distance.requires_grad
    sum(t.float().mean() for _, t in a.items() if t.requires_grad).backward()
    after = {g: _bn_state(nn.ModuleList(m)) for g, m in enc.group_modules().items()}
    for group, modules in enc.group_modules().items():
        params = [p for m in modules for p in m.parameters()]
        changed = any(not torch.equal(before[group][k], after[group][k]) for k in before[group])
        if group in frozen:
            assert all(p.grad is None for p in params), group
            assert not changed, group
        else:
            assert all(p.grad is not None for p in params), group
            assert changed or not before[group], group  # the background encoder has no BN
    # flags restored, and a frozen run in train mode uses batch statistics like a trainable one
    assert all(m.track_running_stats for m in enc.modules() if isinstance(m, _BatchNorm))
    trainable = enc(x, verts[None])
    assert torch.allclose(trainable.delta, a.delta, atol=1e-6)
    assert torch.allclose(trainable.distance, a.distance, atol=1e-5)


def test_frozen_groups_in_eval_mode_use_the_running_statistics(mesh):
    torch.manual_seed(0)
    verts, faces = mesh
    enc = AttributeEncoder(tiny_cfg(), verts, faces)
    enc(_image(4, 32, 64, seed=1), verts[None])  # train-mode pass: running stats move
    enc.eval()
    x = _image(2, 32, 64)
    a = enc(x, verts[None], frozen={"camera", "shape", "texture"})
    b = enc(x, verts[None])
    for k, t in a.items():
        assert torch.allclose(t, b[k], atol=1e-6), k


def test_texture_group_covers_texture_and_light(mesh):
    torch.manual_seed(0)
    verts, faces = mesh
    enc = AttributeEncoder(tiny_cfg(), verts, faces)
    a = enc(_image(2, 32, 64), verts[None], frozen={"texture"})
    assert not a.texture.requires_grad and not a.light.requires_grad
    assert a.background.requires_grad and a.delta.requires_grad


@pytest.mark.parametrize("frozen,match", [({"background"}, "always trains"), ({"lights"}, "lights"),
                                          ("camera", "set of group names")])
def test_bad_frozen_groups(mesh, frozen, match):
    verts, faces = mesh
    enc = AttributeEncoder(tiny_cfg(), verts, faces)
    with pytest.raises(ValueError, match=match):
        enc(_image(2, 32, 64), verts[None], frozen=frozen)


def test_frozen_modules_restores_flags_after_an_error():
    bn = nn.BatchNorm1d(3)
    with pytest.raises(RuntimeError):
        with frozen_modules([bn]):
            assert not bn.track_running_stats and not torch.is_grad_enabled()
            raise RuntimeError("boom")
    assert bn.track_running_stats and torch.is_grad_enabled()


def test_param_groups_partition_the_parameters(mesh):
    verts, faces = mesh
    enc = AttributeEncoder(tiny_cfg(shape_backbone_lr_scale=0.05, shape_offsets_lr_scale=0.02),
                           verts, faces)
    groups = enc.param_groups()
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(enc.parameters()))
    by_name = {g["name"]: g for g in groups}
    assert by_name["shape_backbone"]["lr_scale"] == 0.05 and by_name["shape_backbone"]["group"] == "shape"
    assert {id(p) for p in by_name["shape_backbone"]["params"]} == {id(p) for p in enc.shape.backbone.parameters()}
    assert by_name["light"]["group"] == "texture"
    assert by_name["shape_offsets"]["lr_scale"] == 0.02 and by_name["shape_offsets"]["group"] == "shape"
    assert {id(p) for p in by_name["shape_offsets"]["params"]} == {id(p) for p in enc.shape.offset_head.parameters()}
    torch.optim.Adam([{"params": g["params"], "lr": 1e-3 * g["lr_scale"]} for g in groups])


def test_pretrained_path_in_the_config_names_the_file(mesh, tmp_path):
    verts, faces = mesh
    path = tmp_path / "foreign_camera.pt"
    torch.save({"conv.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(ValueError, match="foreign_camera.pt"):
        AttributeEncoder(tiny_cfg(camera_pretrained=str(path)), verts, faces)


def test_bad_constructor_and_forward_arguments(mesh):
    verts, faces = mesh
    with pytest.raises(ValueError, match="template_verts"):
        AttributeEncoder(tiny_cfg(), verts[None].expand(2, -1, -1), faces)
    with pytest.raises(ValueError, match="faces"):
        AttributeEncoder(tiny_cfg(), verts[:10], faces)
    enc = AttributeEncoder(tiny_cfg(), verts, faces)
    with pytest.raises(ValueError, match="template"):
        enc(_image(2, 32, 64), verts[None, :-1])
    with pytest.raises(ValueError, match="x must have shape"):
        enc(_image(2, 32, 64)[:, :3], verts[None])


# --------------------------------------------------------------------------------------------
# smoke test over every network (timm style)
# --------------------------------------------------------------------------------------------


def _build(name, mesh):
    verts, faces = mesh
    cfg = tiny_cfg(drop_texture=0.2)
    if name == "attribute_encoder":
        return AttributeEncoder(cfg, verts, faces)
    if name == "attribute_encoder_no_im":
        return AttributeEncoder(tiny_cfg(use_im=False, im_flip_y=False, coord_conv=False), verts, faces)
    if name == "discriminator":
        return build_discriminator(cfg)
    enc = AttributeEncoder(cfg, verts, faces)
    return getattr(enc, name)


@pytest.mark.parametrize("name", ["camera", "shape", "texture", "light", "background", "discriminator",
                                  "attribute_encoder", "attribute_encoder_no_im"])
def test_smoke_forward_backward_every_parameter_gets_a_gradient(mesh, name):
    torch.manual_seed(0)
    net = _build(name, mesh).train()
    x = _image(3, 48, 80)
    template = mesh[0][None]
    if name in ("camera", "shape") or name.startswith("attribute"):
        out = net(x, template)
    else:
        out = net(x)
    outs = [v for _, v in out.items()] if hasattr(out, "items") else (list(out) if isinstance(out, tuple) else [out])
    assert all(torch.isfinite(o).all() for o in outs)
    sum(o.float().square().mean() for o in outs).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    zero = [n for n, p in net.named_parameters() if not p.grad.abs().sum() > 0]
    assert not zero
