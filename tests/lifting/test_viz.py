import numpy as np
import pytest
from PIL import Image

from mirror3d.lifting.viz import (
    export_ply,
    fit_scale,
    load_ply,
    render_views,
    save_lift_picture,
    splat,
)


def _pts(rows):
    return np.asarray(rows, np.float32)


def test_zbuffer_nearest_point_wins_in_every_view():
    # two points on the same front-view pixel: red nearer (+z), blue behind
    pts = _pts([[0, 0, 0.5, 1, 0, 0], [0, 0, -0.5, 0, 0, 1], [1, 1, 0, 0, 1, 0],
                [-1, -1, 0, 0, 1, 0]])
    for order in (pts, pts[::-1]):
        img = splat(order, "front", size=(21, 21), radius=0)
        assert img[10, 10].tolist() == [1, 0, 0]
    # from the top, the two points separate; a point above (+y) hides what is below
    stack = _pts([[0, 0.5, 0, 1, 0, 0], [0, -0.5, 0, 0, 0, 1], [1, 0, 1, 0, 1, 0],
                  [-1, 0, -1, 0, 1, 0]])
    top = splat(stack, "top", size=(21, 21), radius=0)
    assert top[10, 10].tolist() == [1, 0, 0]


def test_view_orientation_and_background():
    # centre point plus one along +x, +y, +z; extent 2 → 0.9·20/2 = 9 px per unit
    pts = _pts([[-1, -1, -1, 0, 0, 0], [1, 1, 1, 0, 0, 0], [0.5, 0, 0, 1, 0, 0],
                [0, 0.5, 0, 0, 1, 0], [0, 0, 0.5, 0, 0, 1]])
    front, side, top = render_views(pts, size=(20, 20), radius=0)

    def where(img, rgb):
        return [tuple(p) for p in np.argwhere((img == rgb).all(-1))]

    assert where(front, [1, 0, 0]) == [(10, 14)]  # +x to the right
    assert where(front, [0, 1, 0]) == [(5, 10)]  # +y up
    assert where(side, [0, 0, 1]) == [(10, 5)]  # seen from +x: +z to the left
    assert where(top, [0, 0, 1]) == [(14, 10)]  # seen from above: +z (the front) below
    assert where(top, [1, 0, 0]) == [(10, 14)]
    assert np.all(front[0, 0] == 1.0)  # white background
    assert splat(pts, "front", size=(8, 8), background=0.25)[0, 0].tolist() == [0.25] * 3


def test_shared_scale_fits_every_panel():
    rng = np.random.default_rng(0)
    xyz = rng.random((2000, 3)) * [0.2, 2.0, 0.1]
    pts = np.concatenate([xyz, np.zeros((2000, 3))], 1).astype(np.float32)
    assert fit_scale(pts, size=(100, 50)) == pytest.approx(0.9 * 100 / 2.0, rel=1e-2)
    front, side, top = render_views(pts, size=(100, 50), radius=0)
    rows = np.nonzero((front < 1).any(-1).any(1))[0]
    assert 85 <= rows.max() - rows.min() + 1 <= 91  # the height fills 90 % of the panel
    assert (side < 1).any() and (top < 1).any()


def test_radius_grows_points():
    pts = _pts([[0, 0, 0, 1, 0, 0], [1, 1, 0, 0, 1, 0], [-1, -1, 0, 0, 1, 0]])
    n0 = (splat(pts, size=(31, 31), radius=0) == [1, 0, 0]).all(-1).sum()
    n2 = (splat(pts, size=(31, 31), radius=2) == [1, 0, 0]).all(-1).sum()
    assert n0 == 1 and n2 == 25


def test_picture_file(tmp_path):
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.normal(size=(500, 3)), rng.random((500, 3))], 1).astype(np.float32)
    image = rng.integers(0, 256, (32, 16, 3), dtype=np.uint8)
    path = save_lift_picture(pts, image, tmp_path / "sub" / "a.png", title="x")
    with Image.open(path) as im:
        assert im.size == (800, 360)
        arr = np.asarray(im.convert("RGB"))
    assert arr.std() > 5  # not blank
    path2 = save_lift_picture(pts, None, tmp_path / "b.png")
    with Image.open(path2) as im:
        assert im.size == (600, 360)


def test_ply_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    pts = np.concatenate([rng.normal(size=(257, 3)), rng.random((257, 3))], 1).astype(np.float32)
    path = export_ply(pts, tmp_path / "c.ply")
    assert path.stat().st_size > 257 * 15
    back = load_ply(path)
    assert back.shape == (257, 6)
    assert np.array_equal(back[:, :3], pts[:, :3])
    assert np.abs(back[:, 3:] - pts[:, 3:]).max() <= 0.5 / 255 + 1e-6


def test_bad_inputs():
    with pytest.raises(ValueError, match="points"):
        splat(np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="points"):
        splat(np.zeros((0, 6), np.float32))
    with pytest.raises(ValueError, match="view"):
        splat(np.zeros((3, 6), np.float32), "back")
    with pytest.raises(ValueError, match="NaN"):
        export_ply(np.full((3, 6), np.nan, np.float32), "x.ply")
