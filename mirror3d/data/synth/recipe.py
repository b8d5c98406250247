"""A SynthPeople person recipe: everything that makes an identity, drawn from a seed.

A recipe is a small, JSON-serialisable record: body proportions (height, shoulder width,
girth, head size, leg fraction), a base pose (arm and leg angles), and the clothing: upper
garment (colour, pattern, sleeves), lower garment (trousers, shorts, skirt or dress), hair
(short, long, ponytail), an optional bag (handbag or backpack), skin and shoe colours.

Identities are meant to be *confusable*: garment colours come from a shared palette of 8 and
patterns from a set of 4, so many identities share the upper colour; only the combination of
colours, patterns, lower garment, hair, bag and body shape makes an identity.

Randomness: every identity has its own generator, seeded from ``(seed, recipe_id, stream)``
(:func:`identity_rng`), so a recipe does not depend on how generation is split into shards.
Stream 0 draws the recipe, stream 1 the images (cameras, lights, backgrounds, pose jitter).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "GARMENT_COLOURS", "SKIN_TONES", "HAIR_COLOURS", "SHOE_COLOURS", "BAG_COLOURS",
    "PATTERNS", "LOWER_KINDS", "HAIR_STYLES", "BAG_KINDS", "SLEEVES", "POSE_NAMES",
    "PersonRecipe", "identity_rng", "draw_recipe", "draw_pose_jitter",
]

#: The shared garment palette (sRGB in [0, 1]); 8 colours so that many identities share one.
GARMENT_COLOURS: dict[str, tuple[float, float, float]] = {
    "black": (0.10, 0.10, 0.11),
    "white": (0.90, 0.90, 0.88),
    "grey": (0.52, 0.52, 0.54),
    "navy": (0.12, 0.16, 0.38),
    "red": (0.72, 0.12, 0.12),
    "blue": (0.30, 0.52, 0.82),
    "green": (0.24, 0.46, 0.24),
    "beige": (0.78, 0.68, 0.50),
}
SKIN_TONES: dict[str, tuple[float, float, float]] = {
    "light": (0.94, 0.80, 0.69),
    "fair": (0.87, 0.70, 0.57),
    "medium": (0.76, 0.57, 0.42),
    "tan": (0.60, 0.42, 0.29),
    "dark": (0.38, 0.26, 0.18),
}
HAIR_COLOURS: dict[str, tuple[float, float, float]] = {
    "black": (0.06, 0.05, 0.05),
    "dark_brown": (0.22, 0.14, 0.08),
    "brown": (0.42, 0.28, 0.15),
    "blond": (0.80, 0.67, 0.40),
    "grey": (0.62, 0.62, 0.62),
}
SHOE_COLOURS: dict[str, tuple[float, float, float]] = {
    "black": (0.07, 0.07, 0.07),
    "white": (0.92, 0.92, 0.92),
    "brown": (0.35, 0.22, 0.12),
    "grey": (0.45, 0.45, 0.47),
}
BAG_COLOURS: dict[str, tuple[float, float, float]] = {
    "black": (0.08, 0.08, 0.09),
    "brown": (0.40, 0.25, 0.13),
    "red": (0.65, 0.12, 0.14),
    "blue": (0.18, 0.30, 0.62),
    "khaki": (0.55, 0.50, 0.34),
}

PATTERNS = ("plain", "stripes", "checks", "logo")
LOWER_KINDS = ("trousers", "shorts", "skirt", "dress")
HAIR_STYLES = ("short", "long", "ponytail")
BAG_KINDS = ("none", "handbag", "backpack")
SLEEVES = ("short", "long")

#: Pose angles in degrees (left = the person's left = +x, since people face +z).
#: abduct: arm away from the body sideways; swing: forward (+) / backward (−) about the
#: shoulder or hip; elbow: forearm bent forward; knee: shin bent backward.
POSE_NAMES = (
    "arm_abduct_l", "arm_abduct_r", "arm_swing_l", "arm_swing_r", "elbow_l", "elbow_r",
    "leg_swing_l", "leg_swing_r", "knee_l", "knee_r",
)

_RANGES: dict[str, tuple[float, float]] = {
    "height": (1.50, 2.00),
    "shoulder_width": (0.80, 1.25),
    "girth": (0.80, 1.40),
    "head_size": (0.85, 1.15),
    "leg_fraction": (0.43, 0.51),
    "upper_shade": (0.85, 1.15),
    "lower_shade": (0.85, 1.15),
    "skirt_length": (0.25, 0.75),
    "stripe_period": (0.04, 0.12),
}
_POSE_RANGE = (-60.0, 60.0)

_CHOICES: dict[str, tuple[str, ...]] = {
    "skin": tuple(SKIN_TONES),
    "upper_colour": tuple(GARMENT_COLOURS),
    "upper_pattern": PATTERNS,
    "pattern_colour": tuple(GARMENT_COLOURS),
    "sleeves": SLEEVES,
    "lower_kind": LOWER_KINDS,
    "lower_colour": tuple(GARMENT_COLOURS),
    "hair_style": HAIR_STYLES,
    "hair_colour": tuple(HAIR_COLOURS),
    "bag": BAG_KINDS,
    "bag_colour": tuple(BAG_COLOURS),
    "shoe_colour": tuple(SHOE_COLOURS),
}


@dataclass(frozen=True)
class PersonRecipe:
    """One identity. Lengths are relative factors (the mesh is normalised to height 1.8).

    Attributes:
        recipe_id: the identity's generator key (the pid for dataset identities).
        height: body height in metres before normalisation; it sets proportions (a tall
            person is slimmer once every mesh is scaled to 1.8).
        shoulder_width, girth, head_size: factors around 1.
        leg_fraction: hip-joint height / height.
        pose: base pose, degrees, one value per name in :data:`POSE_NAMES`.
        skin, hair_colour, shoe_colour, bag_colour: palette keys.
        upper_colour, lower_colour, pattern_colour: keys of :data:`GARMENT_COLOURS`.
        upper_shade, lower_shade: brightness factors of the garment colours (fabric variation).
        upper_pattern: one of :data:`PATTERNS`; sleeves: "short" | "long".
        stripe_period: period of stripes / checks in metres (before normalisation).
        lower_kind: one of :data:`LOWER_KINDS` (a dress uses the upper colour and pattern).
        skirt_length: hem height between the knee (0) and hip (1), for skirts and dresses.
        hair_style: one of :data:`HAIR_STYLES`.  bag: one of :data:`BAG_KINDS`.
        bag_side: +1 (left, +x) or −1 (right) for a handbag.
    """

    recipe_id: int
    height: float
    shoulder_width: float
    girth: float
    head_size: float
    leg_fraction: float
    pose: tuple[float, ...]
    skin: str
    upper_colour: str
    upper_shade: float
    upper_pattern: str
    pattern_colour: str
    stripe_period: float
    sleeves: str
    lower_kind: str
    lower_colour: str
    lower_shade: float
    skirt_length: float
    hair_style: str
    hair_colour: str
    bag: str
    bag_colour: str
    bag_side: int
    shoe_colour: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "pose", tuple(float(a) for a in self.pose))
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if not isinstance(self.recipe_id, (int, np.integer)) or self.recipe_id < 0:
            raise ValueError(f"recipe_id: expected an int >= 0, got {self.recipe_id!r}")
        for name, (lo, hi) in _RANGES.items():
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
                raise ValueError(f"{name}: expected a number in [{lo}, {hi}], got {v!r}")
        if len(self.pose) != len(POSE_NAMES):
            raise ValueError(f"pose: expected {len(POSE_NAMES)} angles ({', '.join(POSE_NAMES)}), "
                             f"got {len(self.pose)}")
        if not all(math.isfinite(a) and _POSE_RANGE[0] <= a <= _POSE_RANGE[1] for a in self.pose):
            raise ValueError(f"pose: expected angles in {list(_POSE_RANGE)} degrees, got {self.pose}")
        for name, options in _CHOICES.items():
            if getattr(self, name) not in options:
                raise ValueError(f"{name}: expected one of {', '.join(options)}, "
                                 f"got {getattr(self, name)!r}")
        if self.bag_side not in (-1, 1):
            raise ValueError(f"bag_side: expected -1 or 1, got {self.bag_side!r}")

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (JSON-ready); :meth:`from_dict` inverts it exactly."""
        d = dataclasses.asdict(self)
        d["pose"] = list(self.pose)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PersonRecipe":
        """Build from :meth:`to_dict` output (unknown or missing keys raise ``ValueError``)."""
        names = {f.name for f in dataclasses.fields(cls)}
        extra, missing = set(data) - names, names - set(data)
        if extra or missing:
            raise ValueError(f"recipe: unexpected keys {sorted(extra)} / missing keys {sorted(missing)}")
        return cls(**{**data, "pose": tuple(data["pose"])})


def identity_rng(seed: int, recipe_id: int, stream: int = 0) -> np.random.Generator:
    """The generator of one identity: depends only on (seed, recipe_id, stream)."""
    for name, v in (("seed", seed), ("recipe_id", recipe_id), ("stream", stream)):
        if not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name}: expected an int >= 0, got {v!r}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(recipe_id), int(stream)]))


def _pick(rng: np.random.Generator, options, weights=None) -> str:
    options = tuple(options)
    if weights is None:
        return options[int(rng.integers(len(options)))]
    p = np.asarray(weights, dtype=np.float64)
    return options[int(rng.choice(len(options), p=p / p.sum()))]


def draw_recipe(seed: int, recipe_id: int) -> PersonRecipe:
    """Draw the recipe of identity ``recipe_id`` for dataset seed ``seed`` (deterministic)."""
    rng = identity_rng(seed, recipe_id, 0)
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    lower_kind = _pick(rng, LOWER_KINDS, (0.55, 0.17, 0.15, 0.13))
    feminine_cut = lower_kind in ("skirt", "dress")
    height = u(1.52, 1.80) if feminine_cut else u(1.60, 1.95)
    girth = float(np.clip(rng.normal(1.05, 0.14), 0.82, 1.38))
    shoulder = float(np.clip(rng.normal(0.95 if feminine_cut else 1.05, 0.08), 0.82, 1.22))
    walking = rng.random() < 0.6  # a walking stride, or standing
    stride = u(8.0, 20.0) if walking else u(0.0, 4.0)
    lead = 1.0 if rng.random() < 0.5 else -1.0
    pose = (
        u(5.0, 14.0), u(5.0, 14.0),                       # arm abduction
        -lead * stride * u(0.6, 1.1) + u(-3, 3),          # arms swing opposite to the legs
        lead * stride * u(0.6, 1.1) + u(-3, 3),
        u(0.0, 25.0), u(0.0, 25.0),                       # elbows
        lead * stride + u(-2, 2), -lead * stride + u(-2, 2),  # legs
        u(0.0, 12.0), u(0.0, 12.0),                       # knees
    )
    upper_pattern = _pick(rng, PATTERNS, (0.45, 0.22, 0.15, 0.18))
    upper_colour = _pick(rng, GARMENT_COLOURS)
    pattern_colour = _pick(rng, [c for c in GARMENT_COLOURS if c != upper_colour])
    # trousers are mostly dark; every colour stays possible
    lower_weights = (3.0, 0.7, 1.5, 2.5, 0.6, 1.6, 0.8, 1.5)
    lower_colour = upper_colour if lower_kind == "dress" else _pick(rng, GARMENT_COLOURS, lower_weights)
    hair_style = _pick(rng, HAIR_STYLES, (0.3, 0.45, 0.25) if feminine_cut else (0.75, 0.15, 0.10))
    bag = _pick(rng, BAG_KINDS, (0.5, 0.25, 0.25))
    return PersonRecipe(
        recipe_id=int(recipe_id),
        height=round(height, 4),
        shoulder_width=round(shoulder, 4),
        girth=round(girth, 4),
        head_size=round(u(0.88, 1.12), 4),
        leg_fraction=round(u(0.45, 0.50), 4),
        pose=tuple(round(a, 3) for a in pose),
        skin=_pick(rng, SKIN_TONES),
        upper_colour=upper_colour,
        upper_shade=round(u(0.88, 1.12), 4),
        upper_pattern=upper_pattern,
        pattern_colour=pattern_colour,
        stripe_period=round(u(0.05, 0.11), 4),
        sleeves=_pick(rng, SLEEVES, (0.55, 0.45)),
        lower_kind=lower_kind,
        lower_colour=lower_colour,
        lower_shade=round(u(0.88, 1.12), 4),
        skirt_length=round(u(0.3, 0.7) if lower_kind == "skirt" else u(0.3, 0.55), 4),
        hair_style=hair_style,
        hair_colour=_pick(rng, HAIR_COLOURS, (0.35, 0.25, 0.2, 0.12, 0.08)),
        bag=bag,
        bag_colour=_pick(rng, BAG_COLOURS),
        bag_side=1 if rng.random() < 0.5 else -1,
        shoe_colour=_pick(rng, SHOE_COLOURS, (0.45, 0.25, 0.15, 0.15)),
    )


def draw_pose_jitter(rng: np.random.Generator, n: int, scale_deg: float = 3.0,
                     limit_deg: float = 8.0) -> np.ndarray:
    """Per-image pose jitter: (n, len(POSE_NAMES)) float32 degrees, N(0, scale²) clipped to
    ±limit (abduction jitter is one-sided-safe: the arm never swings into the body, since the
    base abduction is ≥ 5° and the jitter on it is halved)."""
    if n < 0:
        raise ValueError(f"n: expected >= 0, got {n}")
    jit = np.clip(rng.normal(0.0, scale_deg, size=(n, len(POSE_NAMES))), -limit_deg, limit_deg)
    jit[:, :2] *= 0.5
    return jit.astype(np.float32)
