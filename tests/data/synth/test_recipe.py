"""SynthPeople recipes: determinism, serialisation, validation, confusability."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

import numpy as np
import pytest

from mirror3d.data.synth.recipe import (
    BAG_KINDS,
    GARMENT_COLOURS,
    HAIR_STYLES,
    LOWER_KINDS,
    PATTERNS,
    POSE_NAMES,
    PersonRecipe,
    draw_pose_jitter,
    draw_recipe,
    identity_rng,
)


def test_same_seed_and_id_give_the_same_recipe_in_any_order():
    forward = [draw_recipe(3, i) for i in range(1, 6)]
    backward = [draw_recipe(3, i) for i in reversed(range(1, 6))][::-1]
    assert forward == backward
    assert draw_recipe(3, 1) != draw_recipe(4, 1)  # the dataset seed matters
    assert len({json.dumps(r.to_dict(), sort_keys=True) for r in forward}) == 5


def test_identity_rng_streams_are_independent_and_checked():
    a = identity_rng(0, 7, 0).random(4)
    b = identity_rng(0, 7, 1).random(4)
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(a, identity_rng(0, 7, 0).random(4))
    with pytest.raises(ValueError, match="recipe_id"):
        identity_rng(0, -1)


def test_dict_round_trip_through_json():
    r = draw_recipe(0, 11)
    back = PersonRecipe.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back == r
    with pytest.raises(ValueError, match="unexpected keys"):
        PersonRecipe.from_dict({**r.to_dict(), "colour": "red"})


@pytest.mark.parametrize("field,value,msg", [
    ("upper_colour", "purple", "upper_colour"),
    ("lower_kind", "kilt", "lower_kind"),
    ("height", 3.0, "height"),
    ("pose", (0.0,) * 3, "pose"),
    ("pose", (90.0,) * len(POSE_NAMES), "pose"),
    ("bag_side", 0, "bag_side"),
    ("girth", float("nan"), "girth"),
])
def test_bad_values_raise_naming_the_field(field, value, msg):
    r = draw_recipe(0, 1)
    with pytest.raises(ValueError, match=msg):
        dataclasses.replace(r, **{field: value})


def test_population_is_confusable_but_varied():
    recipes = [draw_recipe(0, i) for i in range(1, 241)]
    upper = Counter(r.upper_colour for r in recipes)
    # a shared palette: every upper colour is worn by many identities
    assert set(upper) <= set(GARMENT_COLOURS) and len(upper) == len(GARMENT_COLOURS)
    assert min(upper.values()) >= 10
    # ... but the combinations make most identities distinct
    combos = Counter((r.upper_colour, r.upper_pattern, r.lower_kind, r.lower_colour, r.hair_style,
                      r.hair_colour, r.bag, r.skin) for r in recipes)
    assert len(combos) > 0.9 * len(recipes)
    for name, options in (("lower_kind", LOWER_KINDS), ("hair_style", HAIR_STYLES),
                          ("bag", BAG_KINDS), ("upper_pattern", PATTERNS)):
        assert {getattr(r, name) for r in recipes} == set(options), name
    dresses = [r for r in recipes if r.lower_kind == "dress"]
    assert dresses and all(r.lower_colour == r.upper_colour for r in dresses)
    assert all(r.pattern_colour != r.upper_colour for r in recipes)


def test_pose_jitter_shape_dtype_and_bounds():
    jit = draw_pose_jitter(np.random.default_rng(0), 500, scale_deg=3.0, limit_deg=8.0)
    assert jit.shape == (500, len(POSE_NAMES)) and jit.dtype == np.float32
    assert np.abs(jit).max() <= 8.0
    assert np.abs(jit[:, :2]).max() <= 4.0  # abduction jitter is halved
    assert 2.0 < jit[:, 2:].std() < 4.0
