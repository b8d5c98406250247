import math

import numpy as np
import pytest
import torch

from mirror3d.lifting.flat import lift_flat
from mirror3d.lifting.modes import (
    LiftParams,
    MissingMask,
    TooFewPoints,
    cap_points,
    lift_image,
    pad_points,
    seed_for_key,
)
from mirror3d.lifting.visible import MeshReconstruction, OracleReconstructor
from mirror3d.render import ico_sphere, look_at_camera

H, W = 32, 16


def _image(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _mask():
    m = np.zeros((H, W), bool)
    m[6:26, 3:13] = True
    return m


class CountingOracle(OracleReconstructor):
    """Records the images and masks it was given."""

    def __init__(self, mesh):
        super().__init__(mesh)
        self.seen = []

    def reconstruct(self, image, mask=None, key=None):
        self.seen.append((image.shape, None if mask is None else mask.copy()))
        return super().reconstruct(image, mask, key)


def _sphere_oracle(distance=2.5):
    v, f = ico_sphere(2, 0.5)
    return CountingOracle(MeshReconstruction(v, f, look_at_camera(0.0, 0.0, distance)))


def test_flat_equals_lift_flat_and_caps_to_an_ordered_subset():
    img = _image()
    p = LiftParams(num_points=H * W, min_points=0)
    res = lift_image(img, None, "flat", params=p)
    assert np.array_equal(res.points, lift_flat(img))
    assert res.num_lifted == H * W and not res.padded
    small = lift_image(img, None, "flat", params=LiftParams(num_points=100, min_points=0), seed=4)
    assert small.points.shape == (100, 6) and small.num_lifted == H * W
    full = lift_flat(img)
    idx = [int(np.nonzero((full == row).all(1))[0][0]) for row in small.points]
    assert idx == sorted(idx)  # a subset, original order kept
    again = lift_image(img, None, "flat", params=LiftParams(num_points=100, min_points=0), seed=4)
    other = lift_image(img, None, "flat", params=LiftParams(num_points=100, min_points=0), seed=5)
    assert np.array_equal(small.points, again.points)
    assert not np.array_equal(small.points, other.points)


def test_pad_by_repetition_or_reject():
    img = _image()
    res = lift_image(img, None, "flat", params=LiftParams(num_points=H * W * 2,
                                                          min_points=H * W + 10))
    assert res.padded and res.points.shape[0] == H * W + 10
    assert np.array_equal(res.points[H * W:], res.points[:10])
    with pytest.raises(TooFewPoints, match="min_points"):
        lift_image(img, None, "flat", params=LiftParams(num_points=H * W * 2,
                                                        min_points=H * W + 10, short="reject"))
    pts = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert np.array_equal(pad_points(pts, 6)[:, 0], [0, 3, 6, 9, 0, 3])
    assert pad_points(pts, 2) is pts
    with pytest.raises(TooFewPoints):
        pad_points(pts[:0], 3)
    assert cap_points(pts, 10, 0) is pts


def test_casl_visible_uses_reconstructor_and_mask():
    img, mask = _image(), _mask()
    oracle = _sphere_oracle()
    p = LiftParams(num_points=300, min_points=10, oversample=2.0)
    res = lift_image(img, mask, "casl-visible", oracle, p, seed=1)
    assert len(oracle.seen) == 1 and np.array_equal(oracle.seen[0][1], mask)
    assert 10 <= res.points.shape[0] <= 300
    assert res.points.shape[0] == min(res.num_lifted, 300)
    # every point's colour is one of the foreground pixels' colours
    fg = {tuple(c) for c in (img[mask] / 255.0).astype(np.float32).round(6).tolist()}
    assert all(tuple(c) in fg for c in res.points[:, 3:].round(6).tolist())
    assert np.all(res.points[:, 2] > 0)  # camera-facing half of the sphere


def _mask_quad_oracle():
    """A flat quad facing the camera that projects exactly onto the rectangle of _mask(): every
    surface sample is visible and lands on a foreground pixel (no self-occlusion, no sample
    outside the mask). Camera at distance 2.5: x_ndc = p0·X/2.5 with p0 = 2.5/(W/H) = 5, y_ndc =
    2.5·Y/2.5; the mask's columns 3..12 span x_ndc ±0.625 (pixel edges (2j − W)/W), its rows
    6..25 span y_ndc ±0.625, so X = ±0.3125 and Y = ±0.625."""
    x, y = 0.625 / (2.5 / (W / H)) * 2.5, 0.625
    v = torch.tensor([[-x, -y, 0.0], [x, -y, 0.0], [x, y, 0.0], [-x, y, 0.0]])
    f = torch.tensor([[0, 1, 2], [0, 2, 3]])
    return CountingOracle(MeshReconstruction(v, f, look_at_camera(0.0, 0.0, 2.5)))


@pytest.mark.parametrize("density", [10.0, 1.0, 0.25])
def test_visible_plus_background_matches_pixel_density(density):
    """casl-visible+bg draws ⌈foreground pixels × oversample⌉ body samples whatever N is (all
    visible on the quad), adds every background pixel, then caps to N thinning both alike: the
    expectations are counted from the mask here, not taken from the result."""
    img, mask = _image(1), _mask()
    n = H * W
    num_points = int(density * n)
    oversample = 1.5
    fg, n_bg = int(mask.sum()), int((~mask).sum())
    body_drawn = math.ceil(fg * oversample)
    lifted = body_drawn + n_bg
    res = lift_image(img, mask, "casl-visible+bg", _mask_quad_oracle(),
                     LiftParams(num_points=num_points, min_points=0, oversample=oversample), seed=2)
    assert res.num_lifted == lifted
    assert res.points.shape[0] == min(lifted, num_points)
    # the cap thins body and background alike: the body's share stays body_drawn / lifted
    bg_rows = np.isin(res.points[:, :3].round(5), _bg_xyz(img, mask).round(5)).all(1)
    share, expect = 1.0 - bg_rows.mean(), body_drawn / lifted
    k = res.points.shape[0]
    sd = math.sqrt(expect * (1 - expect) / k * (lifted - k) / max(lifted - 1, 1))
    assert abs(share - expect) <= 3 * sd + 1e-9
    if k == lifted:  # uncapped: the body samples, then the background pixels in order
        assert int((~bg_rows).sum()) == body_drawn
        rr, cc = np.nonzero(~mask)
        assert np.allclose(res.points[-n_bg:, 3:], img[rr, cc] / 255.0)


def _bg_xyz(img, mask):
    """The background points of the quad oracle's lifting, on their own (naive: all kept)."""
    full = lift_image(img, mask, "casl-visible+bg", _mask_quad_oracle(),
                      LiftParams(num_points=100 * H * W, min_points=0, oversample=1.5), seed=2)
    return full.points[-int((~mask).sum()):, :3]


def test_mask_required_and_empty_body_is_too_few():
    img = _image()
    with pytest.raises(MissingMask, match="mask"):
        lift_image(img, None, "casl-visible", _sphere_oracle())
    with pytest.raises(ValueError, match="reconstructor"):
        lift_image(img, _mask(), "casl-visible+bg", None)
    with pytest.raises(TooFewPoints, match="empty"):
        lift_image(img, np.zeros((H, W), bool), "casl-visible", _sphere_oracle())
    # camera inside the sphere looking out: no front face, no body point, no mean depth
    v, f = ico_sphere(2, 0.5)
    inside = OracleReconstructor(MeshReconstruction(v * 10, f, look_at_camera(0.0, 0.0, 2.5)))
    with pytest.raises(TooFewPoints, match="no visible body point"):
        lift_image(img, _mask(), "casl-visible+bg", inside,
                   LiftParams(num_points=200, min_points=0))
    with pytest.raises(ValueError, match="mode"):
        lift_image(img, None, "depth")


def test_with_a_casl_predictor():
    """The CASL inference API plugs in: an (untrained) CaslPredictor as the reconstructor."""
    from mirror3d.jobs import job_module
    from mirror3d.models.casl.inference import CaslPredictor
    from mirror3d.models.casl.step import build_model
    from mirror3d.render import look_at_camera
    from mirror3d.utils.config import update_config

    torch.manual_seed(0)
    cfg = update_config(job_module("train-casl").CONFIG(), {"data.image_size": (32, 64)})
    pred = CaslPredictor(build_model(cfg)[0], cfg)
    img, mask = _image(2), _mask()
    res = lift_image(img, mask, "casl-visible+bg", pred, LiftParams(num_points=4096, min_points=0),
                     seed=3)
    n_bg = int((~mask).sum())
    body = res.points[:-n_bg]
    assert len(body) > 0 and np.isfinite(res.points).all()
    # each body point takes the colour of the photo pixel it projects to with the predicted camera
    rec = pred.reconstruct(img, mask)
    c = rec.camera
    cam = look_at_camera(c.azimuth, c.elevation, c.distance, torch.tensor(c.bias))
    ndc, _ = cam.project(torch.as_tensor(body[None, :, :3]), rec.image_size[0] / rec.image_size[1])
    col = np.floor((ndc[0, :, 0].numpy() * W + W - 1) / 2 + 0.5).astype(int)
    row = np.floor((H - 1 - ndc[0, :, 1].numpy() * H) / 2 + 0.5).astype(int)
    assert mask[row, col].all()
    assert np.allclose(body[:, 3:], img[row, col] / 255.0, atol=1e-6)


def test_deterministic_per_seed():
    img, mask = _image(), _mask()
    p = LiftParams(num_points=200, min_points=0)
    a = lift_image(img, mask, "casl-visible+bg", _sphere_oracle(), p, seed=11).points
    b = lift_image(img, mask, "casl-visible+bg", _sphere_oracle(), p, seed=11).points
    c = lift_image(img, mask, "casl-visible+bg", _sphere_oracle(), p, seed=12).points
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_seed_for_key_is_stable_and_separates_keys():
    s = seed_for_key("bounding_box_train/0002_c1s1_000451_03.jpg", 0)
    assert s == seed_for_key("bounding_box_train/0002_c1s1_000451_03.jpg", 0)
    assert s != seed_for_key("bounding_box_train/0002_c1s1_000451_04.jpg", 0)
    assert s != seed_for_key("bounding_box_train/0002_c1s1_000451_03.jpg", 1)
    assert 0 <= s < 2 ** 63
    torch.Generator().manual_seed(s)  # usable as a torch seed


@pytest.mark.parametrize("kw, name", [
    ({"num_points": 0}, "num_points"), ({"min_points": 10, "num_points": 5}, "min_points"),
    ({"short": "drop"}, "short"), ({"oversample": 0.0}, "oversample"),
    ({"depth_tol": -1.0}, "depth_tol"), ({"height": float("nan")}, "height"),
    ({"frame": "world"}, "frame"),
])
def test_params_validation(kw, name):
    with pytest.raises(ValueError, match=name):
        LiftParams(**kw)
