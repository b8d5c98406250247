"""SynthPeople textures: atlas cells, garment patterns, backgrounds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mirror3d.data.synth.recipe import GARMENT_COLOURS, draw_recipe
from mirror3d.data.synth.textures import (
    ATLAS_COLS,
    ATLAS_ROWS,
    BACKGROUND_STYLES,
    PART_CELLS,
    PaintSpec,
    cell_uv,
    draw_background,
    material_colour,
    paint_atlas,
    value_noise,
)

CELL = 32


def test_cell_uv_lands_inside_the_right_cell_with_v_up():
    st = np.array([[0.0, 0.0], [1.0, 1.0], [0.5, 0.5]])
    uv = cell_uv("torso", st, CELL)  # row 0, column 0: the top-left cell
    assert (uv[:, 0] > 0).all() and (uv[:, 0] < 1 / ATLAS_COLS).all()
    assert (uv[:, 1] > 1 - 1 / ATLAS_ROWS).all() and (uv[:, 1] < 1).all()
    assert uv[1, 1] > uv[0, 1]  # t = 1 (top of the part) is higher in v
    # the 1.5-texel margin keeps bilinear lookups inside the cell
    assert uv[0, 0] * ATLAS_COLS * CELL == pytest.approx(1.5)
    foot = cell_uv("foot_r", st, CELL)
    row, col = PART_CELLS["foot_r"]
    assert (foot[:, 0] > col / ATLAS_COLS).all() and (foot[:, 0] < (col + 1) / ATLAS_COLS).all()
    with pytest.raises(ValueError, match="part"):
        cell_uv("tail", st, CELL)


def _torso_cell(recipe, **extra):
    spec = PaintSpec("torso", "torso", [(0.0, 0.4, "lower"), (0.4, 1.0, "upper")],
                     np.array([0.0, 1.0]), np.array([0.0, 0.6]), 1.0,
                     {"waist_t": 0.4, "chest_t": 0.7, "neck_t": 0.97, **extra})
    atlas = paint_atlas([spec], recipe, CELL).transpose(1, 2, 0)
    return atlas[:CELL, :CELL]


def _closest(rgb, colour):
    return np.abs(rgb - np.asarray(colour)).max(-1) < 2.5 / 255


def test_plain_torso_has_the_upper_and_lower_colours():
    r = dataclasses.replace(draw_recipe(0, 1), upper_pattern="plain", upper_colour="red",
                            upper_shade=1.0, lower_kind="trousers", lower_colour="navy",
                            lower_shade=1.0, bag="none")
    cell = _torso_cell(r)
    top, bottom = cell[CELL // 4], cell[-CELL // 8]
    assert _closest(top, GARMENT_COLOURS["red"]).all()
    assert _closest(bottom, GARMENT_COLOURS["navy"]).all()


def test_stripes_and_logo_use_the_pattern_colour():
    base = dict(upper_colour="white", upper_shade=1.0, pattern_colour="black", bag="none",
                lower_kind="trousers")
    stripes = dataclasses.replace(draw_recipe(0, 2), upper_pattern="stripes", stripe_period=0.06, **base)
    cell = _torso_cell(stripes)
    upper = cell[2:CELL // 2]
    frac_black = _closest(upper, GARMENT_COLOURS["black"]).mean()
    assert 0.3 < frac_black < 0.7
    # stripes are horizontal: each row is one colour
    assert all(len(np.unique(row.round(3), axis=0)) == 1 for row in upper[1:-1])
    logo = dataclasses.replace(stripes, upper_pattern="logo")
    cell = _torso_cell(logo)
    black = _closest(cell, GARMENT_COLOURS["black"])
    ys, xs = np.nonzero(black)
    assert black.sum() > 4 and abs(xs.mean() - CELL / 2) < 2  # a patch on the front (s = 0.5)
    plain = _torso_cell(dataclasses.replace(stripes, upper_pattern="plain"))
    assert not _closest(plain, GARMENT_COLOURS["black"]).any()


def test_paint_atlas_is_quantised_deterministic_and_noisy_only_when_asked():
    r = draw_recipe(0, 3)
    spec = PaintSpec("hand_l", "solid", extra={"material": "skin"})
    a = paint_atlas([spec], r, CELL)
    assert a.shape == (3, ATLAS_ROWS * CELL, ATLAS_COLS * CELL) and a.dtype == np.float32
    np.testing.assert_array_equal(a, np.round(a * 255) / 255)
    row, col = PART_CELLS["hand_l"]
    hand = a[:, row * CELL:(row + 1) * CELL, col * CELL:(col + 1) * CELL]
    np.testing.assert_allclose(hand.reshape(3, -1).T, np.broadcast_to(material_colour(r, "skin"), (CELL * CELL, 3)),
                               atol=0.5 / 255)
    n1 = paint_atlas([spec], r, CELL, np.random.default_rng(0))
    n2 = paint_atlas([spec], r, CELL, np.random.default_rng(0))
    np.testing.assert_array_equal(n1, n2)
    assert not np.array_equal(n1, a)
    with pytest.raises(ValueError, match="cell"):
        paint_atlas([spec], r, 4)


def test_value_noise_interpolates_its_grid():
    n = value_noise(np.random.default_rng(0), 9, 5, (4, 2))
    grid = np.random.default_rng(0).random((5, 3))
    assert n.shape == (9, 5) and n.min() >= 0 and n.max() <= 1
    assert n[0, 0] == pytest.approx(grid[0, 0]) and n[-1, -1] == pytest.approx(grid[-1, -1])
    assert n[2, 0] == pytest.approx(grid[1, 0])  # row 2 of 9 sits on grid row 1 of 4


@pytest.mark.parametrize("style", BACKGROUND_STYLES)
def test_backgrounds_are_deterministic_and_vary_per_image(style):
    a = draw_background(style, np.random.default_rng(1), 64, 32)
    b = draw_background(style, np.random.default_rng(1), 64, 32)
    c = draw_background(style, np.random.default_rng(2), 64, 32)
    assert a.shape == (64, 32, 3) and a.dtype == np.float32
    assert a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 0.01
    assert a.std() > 0.02  # textured, not a flat colour


def test_background_styles_are_distinguishable():
    means = {s: np.mean([draw_background(s, np.random.default_rng(k), 64, 32).mean((0, 1))
                         for k in range(6)], axis=0) for s in BACKGROUND_STYLES}
    assert means["grass"][1] > means["grass"][0] and means["hedge"][1] > means["hedge"][2]
    assert means["street"].mean() < means["indoor"].mean()
    tinted = draw_background("indoor", np.random.default_rng(0), 16, 8, np.array([1.0, 0.5, 0.5]))
    plain = draw_background("indoor", np.random.default_rng(0), 16, 8)
    np.testing.assert_allclose(tinted[..., 1], np.clip(plain[..., 1] * 0.5, 0, 1), atol=1e-6)
    with pytest.raises(ValueError, match="style"):
        draw_background("beach", np.random.default_rng(0), 8, 8)
