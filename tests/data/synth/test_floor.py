"""The raw-pixel re-id floor: features against a naive computation, metrics on a hand-made
Market tree with a hand-computed answer."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mirror3d.data.synth.floor import raw_pixel_features, raw_pixel_floor


def _img(path, colour, noise=0.0, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = np.clip(np.asarray(colour, np.float64)[None, None] + noise * rng.standard_normal((16, 8, 3)), 0, 255)
    Image.fromarray(arr.astype(np.uint8)).save(path)
    return path


def test_features_match_a_naive_computation(tmp_path):
    p = _img(tmp_path / "a.png", (200, 40, 10), noise=20)
    f = raw_pixel_features([str(p)], size=(4, 8))
    img = Image.open(p).convert("RGB").resize((4, 8), Image.BILINEAR)
    naive = np.asarray(img, np.float64).reshape(-1) / 255.0
    naive /= np.sqrt((naive ** 2).sum())
    assert f.shape == (1, 4 * 8 * 3)
    np.testing.assert_allclose(f[0], naive, rtol=1e-5)
    gray = raw_pixel_features([str(p)], size=(4, 8), color=False)
    assert gray.shape == (1, 32) and np.linalg.norm(gray[0]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="size"):
        raw_pixel_features([str(p)], size=(0, 8))


def _market(root):
    red, blue = (220, 30, 30), (30, 40, 210)
    _img(root / "bounding_box_train" / "0007_c1s1_000001_00.png", (0, 200, 0))
    _img(root / "query" / "0001_c1s1_000002_00.png", red)
    _img(root / "query" / "0002_c1s1_000003_00.png", blue)
    g = root / "bounding_box_test"
    _img(g / "0001_c2s1_000004_00.png", red, noise=5, seed=1)      # A's positive
    _img(g / "0001_c1s1_000005_00.png", red)                      # same pid+camera: junk for A
    _img(g / "-1_c3s1_000006_00.png", red)                        # junk
    _img(g / "0002_c2s1_000007_00.png", (60, 60, 190), noise=5, seed=2)  # B's positive
    _img(g / "0000_c3s1_000008_00.png", blue)                     # distractor identical to B's query
    return root


def test_floor_on_a_hand_made_tree(tmp_path):
    root = _market(tmp_path / "Market-1501")
    res = raw_pixel_floor(tmp_path)  # finds Market-1501/ inside
    # query A: first positive at rank 0 (junk removed) -> AP 1.
    # query B: distractor at rank 0, positive at rank 1 -> AP_mp = 1/2, AP_trap = (0 + 1/2)/2.
    assert res["rank1"] == pytest.approx(0.5)
    assert res["rank5"] == pytest.approx(1.0)
    assert res["map_mean_precision"] == pytest.approx((1 + 0.5) / 2)
    assert res["map_trapezoid"] == pytest.approx((1 + 0.25) / 2)
    assert res["num_queries"] == 2 and res["num_gallery"] == 5 and res["num_valid_queries"] == 2
    assert raw_pixel_floor(root)["rank1"] == pytest.approx(0.5)  # the Market root works too


def test_floor_needs_query_and_gallery(tmp_path):
    root = tmp_path / "m"
    for d in ("bounding_box_train", "query", "bounding_box_test"):
        (root / d).mkdir(parents=True)
    _img(root / "bounding_box_test" / "0001_c1s1_000001_00.png", (1, 2, 3))
    with pytest.raises(ValueError, match="query"):
        raw_pixel_floor(root)
