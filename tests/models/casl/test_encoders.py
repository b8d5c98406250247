import math

import pytest
import torch

from mirror3d.models.casl.encoders import (BackgroundEncoder, CameraEncoder, LightEncoder, ShapeEncoder,
                                           TextureEncoder, angle_cos_sin, vector_angle)
from mirror3d.models.casl.integration import vertex_features
from mirror3d.render.sphere import template_mesh

SIZES = [(64, 128), (128, 128)]  # W×H


@pytest.fixture(scope="module")
def mesh():
    verts, faces, _ = template_mesh(level=2)
    return verts, faces


def _image(b, w, h, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 4, h, w, generator=g)
    x[:, 3] = (x[:, 3] > 0.5).float()
    return x


def _camera(**kw):
    args = dict(base_channels=4, blocks_per_stage=(1, 1, 1), hidden=16)
    args.update(kw)
    return CameraEncoder(**args)


def _shape(mesh, **kw):
    verts, faces = mesh
    args = dict(base_channels=4, blocks_per_stage=(1, 1, 1, 1), hidden=16)
    args.update(kw)
    return ShapeEncoder(verts.shape[0], faces, **args)


# --------------------------------------------------------------------------------------------
# camera
# --------------------------------------------------------------------------------------------


def test_vector_angle_matches_the_reference_formula():
    torch.manual_seed(0)
    vec = torch.randn(1000, 2, dtype=torch.float64)
    r = vec.norm(dim=-1)
    naive = torch.sign(vec[:, 1]) * torch.rad2deg(torch.acos(vec[:, 0] / r))
    assert torch.allclose(vector_angle(vec), naive, atol=1e-6)
    # and in float32 the gradient stays finite near the positive x axis, where acos's does not
    v = torch.tensor([[1.0, 1e-7]], requires_grad=True)
    vector_angle(v).sum().backward()
    assert torch.isfinite(v.grad).all()


def test_angle_cos_sin():
    cs = angle_cos_sin(torch.tensor([0.0, 90.0, -180.0, 30.0]))
    want = torch.tensor([[1, 0], [0, 1], [-1, 0], [math.sqrt(3) / 2, 0.5]])
    assert torch.allclose(cs, want, atol=1e-6)


@pytest.mark.parametrize("wh", SIZES)
@pytest.mark.parametrize("use_im", [True, False])
def test_camera_shapes_and_ranges_at_init(mesh, wh, use_im):
    torch.manual_seed(0)
    enc = _camera(use_im=use_im)
    out = enc(_image(4, *wh), mesh[0][None])
    for k in ("azimuth", "elevation", "distance"):
        assert out[k].shape == (4,)
    for k in ("bias", "azimuth_cs", "elevation_cs"):
        assert out[k].shape == (4, 2)
    assert torch.allclose(out["distance"], torch.full((4,), 4.0), atol=1e-2)  # midpoint of 2~6
    assert torch.allclose(out["elevation"], torch.zeros(4), atol=0.05)  # midpoint of -15~15
    assert out["bias"].abs().max() < 1e-2
    assert out["azimuth"].abs().max() <= 180
    assert torch.allclose(out["azimuth_cs"], angle_cos_sin(out["azimuth"]))
    assert torch.allclose(out["elevation_cs"], angle_cos_sin(out["elevation"]))


def test_camera_ranges_follow_the_config(mesh):
    torch.manual_seed(0)
    enc = _camera(distance_range=(2.0, 7.0), elevation_range=(0.0, 30.0))  # CUB
    out = enc(_image(3, 64, 64), mesh[0][None])
    assert torch.allclose(out["distance"], torch.full((3,), 4.5), atol=1e-2)
    assert torch.allclose(out["elevation"], torch.full((3,), 15.0), atol=0.05)


def _set_head_output(head, values):
    """Make an MLP head output the constant ``values`` (zero last weights, bias = values)."""
    with torch.no_grad():
        head[-1].weight.zero_()
        head[-1].bias.copy_(torch.tensor(values))


@pytest.mark.parametrize("scope", [360.0, 180.0])
def test_camera_output_formulas(mesh, scope):
    enc = _camera(azi_scope=scope).eval()
    logit = math.log(0.25 / 0.75)
    _set_head_output(enc.distance_elevation_head, [logit, -logit])
    _set_head_output(enc.azimuth_head, [0.0, 2.0])  # phi = +90°
    _set_head_output(enc.bias_head, [0.5, -100.0])
    out = enc(_image(2, 32, 64), mesh[0][None])
    assert torch.allclose(out["distance"], torch.full((2,), 2 + 0.25 * 4))
    assert torch.allclose(out["elevation"], torch.full((2,), -15 + 0.75 * 30))
    assert torch.allclose(out["azimuth"], torch.full((2,), -90.0 * scope / 360))
    assert torch.allclose(out["bias"], torch.tensor([[math.tanh(0.5), -1.0]] * 2))


def test_camera_im_flag_is_passed_to_the_sampler():
    assert _camera(im_flip_y=False).sampler.flip_y is False
    assert _camera().sampler.flip_y is True and _camera().sampler.align_corners is False
    assert not hasattr(_camera(use_im=False), "sampler")


def test_camera_rejects_bad_ranges_and_a_missing_template():
    with pytest.raises(ValueError, match="distance_range"):
        _camera(distance_range=(6.0, 2.0))
    with pytest.raises(ValueError, match="azi_scope"):
        _camera(azi_scope=0.0)
    with pytest.raises(ValueError, match="template"):
        _camera()(_image(2, 32, 64), None)


# --------------------------------------------------------------------------------------------
# shape
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("wh", SIZES)
@pytest.mark.parametrize("use_im", [True, False])
def test_shape_offsets_at_init_are_tiny_and_centred(mesh, wh, use_im):
    torch.manual_seed(0)
    verts = mesh[0]
    enc = _shape(mesh, use_im=use_im)
    delta = enc(_image(4, *wh), verts[None])
    assert delta.shape == (4, verts.shape[0], 3)
    assert delta.abs().max() < 5e-3
    assert delta.abs().max() > 0
    assert torch.allclose(delta.mean(dim=1), torch.zeros(4, 3), atol=1e-7)


def test_shape_offsets_are_bounded_and_centred_when_saturated(mesh):
    enc = _shape(mesh).eval()
    v = mesh[0].shape[0]
    with torch.no_grad():
        enc.offset_head.weight.zero_()
        enc.offset_head.bias.copy_(torch.where(torch.arange(3 * v) % 2 == 0, 100.0, -100.0))
    delta = enc(_image(2, 32, 64), mesh[0][None])
    raw = 0.5 * torch.tanh(enc.offset_head.bias.view(3, v).t())
    assert torch.allclose(delta[0], raw - raw.mean(0), atol=1e-6)


def test_shape_smoothing_passes_against_a_plain_loop(mesh):
    """smooth_passes k: the offsets are the unsmoothed ones after k passes of x <- x + 0.5 (Lx)
    with L the uniform Laplacian (neighbour mean minus the vertex), written out here per vertex."""
    verts, faces = mesh
    plain = _shape(mesh).eval()
    smooth = _shape(mesh, smooth_passes=2).eval()
    smooth.load_state_dict(plain.state_dict())  # the Laplacian is derived, not saved
    with torch.no_grad():
        plain.offset_head.bias.copy_(torch.randn(3 * verts.shape[0], generator=torch.Generator().manual_seed(1)))
        smooth.offset_head.bias.copy_(plain.offset_head.bias)
    x, t = _image(1, 32, 64), verts[None]
    with torch.no_grad():
        fmap = plain.backbone(x)[-1]
        local = plain.sampler(fmap, t)
        stacked = vertex_features(local, plain.global_pool(fmap).flatten(1),
                                  plain.neighbour_difference(local), t)
        out = plain.offset_head(plain.vertex_mlp(stacked).flatten(1)).view(1, 3, -1).transpose(1, 2)
    raw = 0.5 * torch.tanh(out[0])
    neighbours = [set() for _ in range(verts.shape[0])]
    for a, b, c in faces.tolist():
        for i, j in ((a, b), (b, c), (c, a)):
            neighbours[i].add(j)
            neighbours[j].add(i)
    want = raw.clone()
    for _ in range(2):
        prev = want.clone()
        for i, nb in enumerate(neighbours):
            want[i] = prev[i] + 0.5 * (prev[sorted(nb)].mean(0) - prev[i])
    want = want - want.mean(0)
    got = smooth(x, t)[0]
    assert torch.allclose(got, want, atol=1e-5)
    # smoother: the Laplacian energy drops against the unsmoothed offsets
    unsm = plain(x, t)[0]
    L = smooth.laplacian
    assert (L @ got).pow(2).sum() < 0.5 * (L @ unsm).pow(2).sum()
    assert "laplacian" not in smooth.state_dict()
    with pytest.raises(ValueError, match="smooth_passes"):
        _shape(mesh, smooth_passes=-1)


def test_shape_uses_the_template_it_is_given(mesh):
    torch.manual_seed(0)
    enc = _shape(mesh).eval()
    x = _image(2, 32, 64)
    t = mesh[0][None]
    a = enc(x, t)
    assert torch.allclose(a, enc(x, t.expand(2, -1, -1)))
    assert not torch.allclose(a, enc(x, t * 0.5))


def test_shape_head_widths_and_sampler(mesh):
    enc = _shape(mesh)
    v = mesh[0].shape[0]
    assert enc.vertex_mlp[0].in_channels == 3 * enc.backbone.out_channels + 3
    assert enc.offset_head.in_features == enc.offset_head.out_features == 3 * v
    assert enc.sampler.align_corners is True
    no_im = _shape(mesh, use_im=False)
    assert no_im.offset_head.in_features == no_im.backbone.out_channels


def test_shape_rejects_a_template_with_the_wrong_vertex_count(mesh):
    with pytest.raises(ValueError, match="vertices"):
        _shape(mesh)(_image(2, 32, 64), mesh[0][None, :-1])


# --------------------------------------------------------------------------------------------
# texture
# --------------------------------------------------------------------------------------------


def _texture(**kw):
    args = dict(base_channels=4, blocks_per_stage=(1, 1, 1, 1), decoder_channels=8)
    args.update(kw)
    return TextureEncoder(**args)


@pytest.mark.parametrize("wh", SIZES + [(96, 160)])
def test_texture_shapes_symmetry_and_centre_colour_at_init(wh):
    torch.manual_seed(0)
    w, h = wh
    x = _image(2, w, h)
    colour = torch.tensor([0.9, 0.2, 0.4])
    x[:, :3, h // 2 - 4:h // 2 + 4, w // 2 - 4:w // 2 + 4] = colour[:, None, None]
    texture, flow = _texture()(x)
    assert texture.shape == (2, 3, 2 * h, w) and flow.shape == (2, 2, h, w)
    assert flow.abs().max() < 1e-2
    assert torch.equal(texture, texture.flip(2))  # rows h and 2H-1-h agree
    assert torch.allclose(texture, colour[None, :, None, None].expand_as(texture), atol=1e-2)


@pytest.mark.parametrize("bias,pixel", [(10.0, (-1, -1)), (-10.0, (0, 0))])
def test_texture_flow_is_clamped_and_samples_with_aligned_corners(bias, pixel):
    enc = _texture().eval()
    with torch.no_grad():
        enc.decoder.to_flow.weight.zero_()
        enc.decoder.to_flow.bias.fill_(bias)
    x = _image(2, 32, 64)
    texture, flow = enc(x)
    assert torch.equal(flow, torch.full_like(flow, 1.0 if bias > 0 else -1.0))
    want = x[:, :3, pixel[0], pixel[1]]
    assert torch.allclose(texture, want[:, :, None, None].expand_as(texture), atol=1e-5)


def test_texture_flow_x_is_the_column_and_y_the_row():
    enc = _texture().eval()
    with torch.no_grad():
        enc.decoder.to_flow.weight.zero_()
        enc.decoder.to_flow.bias.copy_(torch.tensor([1.0, -1.0]))  # right column, top row
    x = _image(1, 32, 64)
    texture, _ = enc(x)
    assert torch.allclose(texture[0, :, 0, 0], x[0, :3, 0, -1], atol=1e-5)


# --------------------------------------------------------------------------------------------
# light
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("wh", SIZES)
def test_light_ranges_at_init(wh):
    torch.manual_seed(0)
    light = LightEncoder((4, 8, 8, 8, 8), dropout=0.2)(_image(4, *wh))
    assert light.shape == (4, 9)
    assert ((light[:, 0] >= 2.5) & (light[:, 0] <= 3.5)).all()
    assert torch.allclose(light[:, 0], torch.full((4,), 3.0), atol=1e-2)
    assert light[:, 1:].abs().max() <= 0.1 and light[:, 1:].abs().max() < 1e-2


def test_light_saturates_at_its_bounds():
    enc = LightEncoder((4, 8, 8, 8, 8)).eval()
    with torch.no_grad():
        enc.head[-1].weight.zero_()
        enc.head[-1].bias.fill_(50.0)
    light = enc(_image(2, 32, 64))
    assert torch.allclose(light, torch.tensor([3.5] + [0.1] * 8).expand(2, 9))


def test_light_coordinate_channels_on_the_first_two_convs():
    enc = LightEncoder((4, 8, 8, 8, 8))
    convs = [m for m in enc.features.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.in_channels for c in convs] == [6, 6, 8, 8, 8]
    assert [c.in_channels for c in LightEncoder((4, 8, 8, 8, 8), coord_layers=0).features.modules()
            if isinstance(c, torch.nn.Conv2d)] == [4, 4, 8, 8, 8]


# --------------------------------------------------------------------------------------------
# background
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("wh", SIZES + [(95, 161)])
def test_background_shape_and_range(wh):
    torch.manual_seed(0)
    bg = BackgroundEncoder(4, 1)(_image(2, *wh))
    assert bg.shape == (2, 3, wh[1], wh[0])
    assert ((bg > 0) & (bg < 1)).all()


def test_background_ignores_foreground_pixels():
    torch.manual_seed(0)
    enc = BackgroundEncoder(4, 2).eval()
    x = _image(2, 32, 64)
    y = x.clone()
    fg = x[:, 3:4] > 0.5
    y[:, :3] = torch.where(fg, torch.rand_like(x[:, :3]), x[:, :3])
    assert torch.allclose(enc(x), enc(y))
    z = x.clone()
    z[:, :3] = torch.where(fg, z[:, :3], torch.rand_like(z[:, :3]))  # change the background
    assert not torch.allclose(enc(x), enc(z))
