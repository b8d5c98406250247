import numpy as np
import pytest

from mirror3d.lifting.flat import lift_flat, pixel_plane_coords


def test_coordinates_and_colours_by_hand():
    img = np.zeros((4, 2, 3), np.uint8)
    img[0, 0] = (255, 0, 0)  # top-left red
    img[3, 1] = (0, 0, 255)  # bottom-right blue
    pts = lift_flat(img, height=4.0)  # 1 unit per pixel
    assert pts.shape == (8, 6) and pts.dtype == np.float32
    assert pts[0].tolist() == pytest.approx([-0.5, 1.5, 0.0, 1.0, 0.0, 0.0])
    assert pts[7].tolist() == pytest.approx([0.5, -1.5, 0.0, 0.0, 0.0, 1.0])
    assert np.all(pts[:, 2] == 0)


def test_default_scale_spans_person_height():
    xy = pixel_plane_coords(128, 64)
    assert xy[:, 1].max() - xy[:, 1].min() == pytest.approx(1.8 * 127 / 128, rel=1e-5)
    assert abs(xy[:, 0].mean()) < 1e-6 and abs(xy[:, 1].mean()) < 1e-6


def test_foreground_only_and_bad_input():
    img = np.full((4, 4, 3), 200, np.uint8)
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    assert lift_flat(img, mask, foreground_only=True).shape == (4, 6)
    with pytest.raises(ValueError, match="mask"):
        lift_flat(img, np.zeros((4, 4), bool), foreground_only=True)
    with pytest.raises(ValueError, match="mask"):
        lift_flat(img, np.ones((3, 4), bool), foreground_only=True)
    with pytest.raises(ValueError, match="image"):
        lift_flat(np.zeros((4, 4), np.uint8))
    bad = np.zeros((2, 2, 3), np.float32)
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="image"):
        lift_flat(bad)
