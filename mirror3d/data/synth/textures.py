"""SynthPeople textures: the per-person UV atlas (garment patterns, skin, hair, shoes, bags) and
procedural backgrounds (one style per camera id, varied per image).

Atlas: a fixed grid of ``ATLAS_ROWS × ATLAS_COLS`` square cells of ``cell`` texels; every body
part owns one cell (:data:`PART_CELLS`). A part's local texture coordinates (s, t) ∈ [0, 1]²
(s around the part, t along it, t = 1 at the top) map into its cell with a margin of 1.5 texels,
so bilinear lookups never bleed into a neighbour. UVs follow the renderer: v up, v = 1 is
texture row 0.

Painting is vectorised numpy over each cell. Garment patterns are laid out in (pre-normalisation)
metres: stripes follow the part's height ``y``, checks also its circumferential position
``arc``, so stripes on a sleeve and on the torso have the same period.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mirror3d.data.synth.recipe import (
    BAG_COLOURS,
    GARMENT_COLOURS,
    HAIR_COLOURS,
    SHOE_COLOURS,
    SKIN_TONES,
    PersonRecipe,
)

__all__ = [
    "ATLAS_ROWS", "ATLAS_COLS", "PART_CELLS", "BACKGROUND_STYLES", "PaintSpec",
    "cell_uv", "atlas_size", "paint_atlas", "material_colour", "draw_background", "value_noise",
]

ATLAS_ROWS, ATLAS_COLS = 3, 6
#: (row, column) of each part's atlas cell. "hair" holds the long-hair or ponytail part.
PART_CELLS: dict[str, tuple[int, int]] = {
    "torso": (0, 0), "skirt": (0, 1), "head": (0, 2), "hair": (0, 3), "neck": (0, 4), "bag": (0, 5),
    "upper_arm_l": (1, 0), "forearm_l": (1, 1), "hand_l": (1, 2),
    "upper_arm_r": (1, 3), "forearm_r": (1, 4), "hand_r": (1, 5),
    "thigh_l": (2, 0), "shin_l": (2, 1), "foot_l": (2, 2),
    "thigh_r": (2, 3), "shin_r": (2, 4), "foot_r": (2, 5),
}
_MARGIN_TEXELS = 1.5

#: Background styles; camera id c uses style ``BACKGROUND_STYLES[c % 6]``.
BACKGROUND_STYLES = ("pavement", "grass", "windows", "indoor", "street", "hedge")


@dataclass
class PaintSpec:
    """How to paint one part's cell.

    Attributes:
        part: atlas cell name (a key of :data:`PART_CELLS`).
        kind: painter: "torso", "head", "hair", "limb", "skirt", "bag", "solid".
        bands: for "limb"/"torso": list of (t_lo, t_hi, material) from bottom to top, materials
            "upper", "lower", "dress", "skin", "shoe", "hair", "bag".
        ring_t, ring_y: the part's profile: arc-length parameter t of each ring and its height
            (metres); a texel's height is interpolated from them.
        circumference: metres around the part at its widest ring.
        extra: painter options (e.g. "waist_t", "side").
    """

    part: str
    kind: str
    bands: list[tuple[float, float, str]] = field(default_factory=list)
    ring_t: np.ndarray | None = None
    ring_y: np.ndarray | None = None
    circumference: float = 1.0
    extra: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------ atlas geometry
def cell_uv(part: str, st: np.ndarray, cell: int) -> np.ndarray:
    """Map local (s, t) ∈ [0, 1]² of ``part`` into atlas UVs (v up).

    Args:
        st: (..., 2) local coordinates.
    Returns:
        (..., 2) atlas (u, v).
    """
    if part not in PART_CELLS:
        raise ValueError(f"part: expected one of {', '.join(PART_CELLS)}, got {part!r}")
    r, c = PART_CELLS[part]
    m = _MARGIN_TEXELS / cell
    s = np.clip(st[..., 0], 0.0, 1.0)
    t = np.clip(st[..., 1], 0.0, 1.0)
    u = (c + m + s * (1 - 2 * m)) / ATLAS_COLS
    v = 1.0 - (r + 1 - m - t * (1 - 2 * m)) / ATLAS_ROWS
    return np.stack([u, v], axis=-1)


def atlas_size(cell: int) -> tuple[int, int]:
    """(height, width) of the atlas in texels for a cell size."""
    return ATLAS_ROWS * cell, ATLAS_COLS * cell


def _cell_st(cell: int) -> tuple[np.ndarray, np.ndarray]:
    """Local (s, t) at the texel centres of one cell (row 0 = top = t near 1)."""
    m = _MARGIN_TEXELS / cell
    centres = (np.arange(cell) + 0.5) / cell
    s = np.clip((centres - m) / (1 - 2 * m), 0.0, 1.0)
    t = np.clip(((1.0 - centres) - m) / (1 - 2 * m), 0.0, 1.0)
    return np.broadcast_to(s[None, :], (cell, cell)), np.broadcast_to(t[:, None], (cell, cell))


# ------------------------------------------------------------------------------ colours
def material_colour(recipe: PersonRecipe, material: str) -> np.ndarray:
    """Base RGB (3,) of a material of ``recipe``."""
    if material in ("upper", "dress"):
        rgb = np.asarray(GARMENT_COLOURS[recipe.upper_colour]) * recipe.upper_shade
    elif material == "lower":
        rgb = np.asarray(GARMENT_COLOURS[recipe.lower_colour]) * recipe.lower_shade
    elif material == "pattern":
        rgb = np.asarray(GARMENT_COLOURS[recipe.pattern_colour])
    elif material == "skin":
        rgb = np.asarray(SKIN_TONES[recipe.skin])
    elif material == "hair":
        rgb = np.asarray(HAIR_COLOURS[recipe.hair_colour])
    elif material == "shoe":
        rgb = np.asarray(SHOE_COLOURS[recipe.shoe_colour])
    elif material == "bag":
        rgb = np.asarray(BAG_COLOURS[recipe.bag_colour])
    else:
        raise ValueError(f"material: unknown material {material!r}")
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)


def _patterned(recipe: PersonRecipe, y: np.ndarray, arc: np.ndarray) -> np.ndarray:
    """Upper-garment colour with its pattern, (C, C, 3)."""
    base = material_colour(recipe, "upper")
    alt = material_colour(recipe, "pattern")
    p = recipe.stripe_period
    if recipe.upper_pattern == "stripes":
        sel = (np.floor(y / p).astype(np.int64) % 2) == 1
    elif recipe.upper_pattern == "checks":
        sel = ((np.floor(y / p) + np.floor(arc / p)).astype(np.int64) % 2) == 1
    else:  # plain, logo (the logo is drawn on the torso only)
        sel = np.zeros(y.shape, bool)
    return np.where(sel[..., None], alt, base)


def _fill(recipe: PersonRecipe, material: str, y: np.ndarray, arc: np.ndarray) -> np.ndarray:
    if material in ("upper", "dress"):
        return _patterned(recipe, y, arc)
    if material == "lower" and recipe.lower_kind == "dress":
        return _patterned(recipe, y, arc)
    return np.broadcast_to(material_colour(recipe, material), y.shape + (3,))


def _front(s: np.ndarray) -> np.ndarray:
    """cos of the angle from the front (+z): 1 at s = 0.5, −1 at the back seam."""
    return np.cos(2 * np.pi * (s - 0.5))


# ------------------------------------------------------------------------------ painters
def _paint_cell(spec: PaintSpec, recipe: PersonRecipe, cell: int) -> np.ndarray:
    s, t = _cell_st(cell)
    if spec.ring_t is not None:
        y = np.interp(t, spec.ring_t, spec.ring_y)
    else:
        y = t.copy()
    arc = s * spec.circumference
    img = np.zeros((cell, cell, 3), np.float32)
    kind = spec.kind
    if kind in ("limb", "torso", "skirt"):
        for lo, hi, material in spec.bands:
            sel = (t >= lo) & (t <= hi)
            img[sel] = _fill(recipe, material, y, arc)[sel]
    if kind == "torso":
        _torso_overlays(img, spec, recipe, s, t)
    elif kind == "skirt":
        rim = spec.extra.get("rim_t", 0.0)
        img[t < rim] *= 0.45  # the inside of the hem
    elif kind == "head":
        img[:] = material_colour(recipe, "skin")
        front = _front(s)
        top, back = 0.80, (0.12 if recipe.hair_style != "short" else 0.32)
        hairline = (top + back) / 2 + (top - back) / 2 * front
        img[t > hairline] = material_colour(recipe, "hair")
        eye = (np.abs(t - 0.56) < 0.035) & (np.abs(np.abs(s - 0.5) - 0.055) < 0.022)
        img[eye] = 0.15
        mouth = (np.abs(t - 0.33) < 0.02) & (np.abs(s - 0.5) < 0.03)
        img[mouth] = material_colour(recipe, "skin") * 0.7
    elif kind == "hair":
        img[:] = material_colour(recipe, "hair")
        streak = 0.9 + 0.1 * np.sin(2 * np.pi * 9 * s)
        img *= streak[..., None]
    elif kind == "bag":
        img[:] = material_colour(recipe, "bag")
        img[np.abs(t - 0.7) < 0.03] *= 0.55  # flap seam
    elif kind == "solid":
        img[:] = material_colour(recipe, spec.extra["material"])
    elif kind not in ("limb", "torso", "skirt"):
        raise ValueError(f"kind: unknown painter {kind!r}")
    return img


def _torso_overlays(img: np.ndarray, spec: PaintSpec, recipe: PersonRecipe, s, t) -> None:
    ex = spec.extra
    if recipe.upper_pattern == "logo":
        ct = ex.get("chest_t", 0.7)
        patch = (np.abs(s - 0.5) < 0.055) & (np.abs(t - ct) < 0.05)
        img[patch] = material_colour(recipe, "pattern")
    neck_t = ex.get("neck_t", 0.97)
    img[t > neck_t] = material_colour(recipe, "skin")
    if recipe.lower_kind != "dress":  # a belt line where upper meets lower
        wt = ex.get("waist_t", 0.4)
        img[np.abs(t - wt) < 0.012] *= 0.6
    strap = material_colour(recipe, "bag") * 0.8
    lo = ex.get("waist_t", 0.4)
    hi = neck_t
    if recipe.bag == "backpack":
        sel = (np.abs(np.abs(s - 0.5) - 0.085) < 0.022) & (t > lo + 0.1) & (t < hi)
        img[sel] = strap
    elif recipe.bag == "handbag":
        # A cross-body strap from the opposite shoulder down to the bag's side, front and back.
        # Around a part, angle θ = 2π(s − 0.5) and x = r·sin θ: on the front (s ≈ 0.5) x > 0
        # for s > 0.5; on the back x > 0 for s near 1 and x < 0 for s near 0.
        frac = np.clip((t - lo) / max(hi - lo, 1e-6), 0, 1)  # 0 at the waist, 1 at the shoulder
        off = recipe.bag_side * (0.14 * (1 - frac) - 0.12 * frac)  # > 0: on the +x side
        front_s = 0.5 + off
        back_s = np.where(off > 0, 1.0 - off, -off)
        on_front = np.abs(s - front_s) < 0.02
        on_back = np.abs(s - back_s) < 0.02
        img[(on_front | on_back) & (t > lo) & (t < hi)] = strap


def paint_atlas(specs: list[PaintSpec], recipe: PersonRecipe, cell: int = 64,
                noise_rng: np.random.Generator | None = None) -> np.ndarray:
    """Paint every part's cell of the atlas.

    Args:
        specs: one :class:`PaintSpec` per part (unused cells stay mid grey).
        recipe: the person.
        cell: texels per cell side.
        noise_rng: if given, a small multiplicative fabric noise (±4 %) is added.
    Returns:
        (3, Ht, Wt) float32 in [0, 1], quantised to 8-bit levels (so a PNG round trip is exact).
    """
    if cell < 8:
        raise ValueError(f"cell: expected >= 8 texels, got {cell}")
    ht, wt = atlas_size(cell)
    atlas = np.full((ht, wt, 3), 0.5, np.float32)
    for spec in specs:
        if spec.part not in PART_CELLS:
            raise ValueError(f"part: unknown atlas cell {spec.part!r}")
        r, c = PART_CELLS[spec.part]
        atlas[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = _paint_cell(spec, recipe, cell)
    if noise_rng is not None:
        atlas *= (1.0 + 0.04 * noise_rng.uniform(-1, 1, size=(ht, wt, 1))).astype(np.float32)
    atlas = np.round(np.clip(atlas, 0.0, 1.0) * 255.0) / 255.0
    return np.ascontiguousarray(atlas.transpose(2, 0, 1), dtype=np.float32)


# ------------------------------------------------------------------------------ backgrounds
def value_noise(rng: np.random.Generator, height: int, width: int, cells: tuple[int, int]) -> np.ndarray:
    """Smooth noise in [0, 1]: a (cy+1)×(cx+1) random grid, bilinearly upsampled to H×W."""
    cy, cx = max(1, int(cells[0])), max(1, int(cells[1]))
    grid = rng.random((cy + 1, cx + 1))
    yy = np.linspace(0, cy, height)
    xx = np.linspace(0, cx, width)
    y0 = np.minimum(np.floor(yy).astype(int), cy - 1)
    x0 = np.minimum(np.floor(xx).astype(int), cx - 1)
    fy = (yy - y0)[:, None]
    fx = (xx - x0)[None, :]
    g00 = grid[y0][:, x0]
    g01 = grid[y0][:, x0 + 1]
    g10 = grid[y0 + 1][:, x0]
    g11 = grid[y0 + 1][:, x0 + 1]
    return (g00 * (1 - fy) * (1 - fx) + g01 * (1 - fy) * fx + g10 * fy * (1 - fx) + g11 * fy * fx)


def draw_background(style: str, rng: np.random.Generator, height: int, width: int,
                    tint: np.ndarray | None = None) -> np.ndarray:
    """A procedural background of one camera style, varied by ``rng``.

    Args:
        style: one of :data:`BACKGROUND_STYLES`.
        rng: the image's generator (colours, offsets, noise).
        height, width: image size.
        tint: optional (3,) multiplicative colour bias of the camera.
    Returns:
        (H, W, 3) float32 in [0, 1].
    """
    if style not in BACKGROUND_STYLES:
        raise ValueError(f"style: expected one of {', '.join(BACKGROUND_STYLES)}, got {style!r}")
    h, w = int(height), int(width)
    if h < 1 or w < 1:
        raise ValueError(f"height, width: expected >= 1, got {h}, {w}")
    rows = np.arange(h, dtype=np.float32)[:, None] * np.ones((1, w), np.float32)
    cols = np.ones((h, 1), np.float32) * np.arange(w, dtype=np.float32)[None, :]
    horizon = int(h * rng.uniform(0.35, 0.6))
    fine = rng.random((h, w)).astype(np.float32) - 0.5
    jitter = lambda c, a=0.06: np.clip(np.asarray(c) * (1 + rng.uniform(-a, a, 3)), 0, 1)  # noqa: E731

    if style == "pavement":
        img = np.empty((h, w, 3), np.float32)
        img[:] = jitter((0.62, 0.60, 0.57))
        tile = max(3, int(w * rng.uniform(0.14, 0.25)))
        ox, oy = rng.integers(0, tile, 2)
        # tiles get denser toward the horizon (rough perspective)
        depth = np.clip((rows - horizon * 0.3) / max(h, 1), 0.05, 1.0)
        gy = ((rows + oy) * (0.6 + depth)) % tile < 1.0
        gx = ((cols + ox) * (0.6 + depth)) % tile < 1.0
        img[gy | gx] *= 0.78
        img *= (1 + 0.15 * (value_noise(rng, h, w, (4, 2)) - 0.5))[..., None]
        wall = rows < horizon * 0.5
        img[wall] = jitter((0.70, 0.66, 0.60)) * (1 + 0.1 * fine[wall])[..., None]
    elif style == "grass":
        img = np.empty((h, w, 3), np.float32)
        img[:] = jitter((0.30, 0.50, 0.20), 0.12)
        img *= (1 + 0.35 * (value_noise(rng, h, w, (8, 4)) - 0.5) + 0.25 * fine)[..., None]
        path_c = w * rng.uniform(0.2, 0.8)
        path_w = w * rng.uniform(0.15, 0.3) * (rows / h + 0.3)
        path = np.abs(cols - path_c) < path_w
        img[path] = jitter((0.66, 0.58, 0.45)) * (1 + 0.1 * fine[path])[..., None]
        sky = rows < horizon * 0.45
        img[sky] = jitter((0.65, 0.78, 0.92)) * (1 + 0.05 * fine[sky])[..., None]
    elif style == "windows":
        img = np.empty((h, w, 3), np.float32)
        img[:] = jitter((0.72, 0.55, 0.42), 0.1)  # brick / render wall
        img *= (1 + 0.12 * fine)[..., None]
        ww, wh = max(3, int(w * rng.uniform(0.18, 0.28))), max(4, int(h * rng.uniform(0.12, 0.18)))
        px, py = ww + max(2, int(w * 0.12)), wh + max(2, int(h * 0.08))
        ox, oy = rng.integers(0, px), rng.integers(0, py)
        win = (((cols + ox) % px) < ww) & (((rows + oy) % py) < wh) & (rows < horizon * 1.2)
        glass = jitter((0.25, 0.32, 0.40), 0.15)
        img[win] = glass * (1 + 0.3 * (value_noise(rng, h, w, (3, 2)) - 0.5))[win][..., None]
        ground = rows >= horizon * 1.25
        img[ground] = jitter((0.45, 0.45, 0.46)) * (1 + 0.1 * fine[ground])[..., None]
    elif style == "indoor":
        img = np.empty((h, w, 3), np.float32)
        img[:] = jitter((0.88, 0.85, 0.76), 0.05)
        img *= (1 + 0.05 * (value_noise(rng, h, w, (2, 2)) - 0.5))[..., None]
        floor = rows >= horizon
        plank = max(2, int(w * rng.uniform(0.1, 0.2)))
        wood = jitter((0.62, 0.45, 0.30), 0.1)
        stripes = (((cols + rng.integers(0, plank)) % plank) < 1.0)
        img[floor] = wood * (1 + 0.15 * fine[floor])[..., None]
        img[floor & stripes] *= 0.7
        skirting = np.abs(rows - horizon) < max(1, h * 0.015)
        img[skirting] = 0.95
        if rng.random() < 0.6:  # a door or a poster on the wall
            dx = int(rng.integers(0, max(1, w - w // 3)))
            door = (cols >= dx) & (cols < dx + w // 3) & (rows > horizon * 0.25) & (rows < horizon)
            img[door] = jitter(GARMENT_COLOURS["beige"], 0.2) * 0.8
    elif style == "street":
        img = np.empty((h, w, 3), np.float32)
        img[:] = jitter((0.30, 0.30, 0.32), 0.08)
        img *= (1 + 0.2 * fine + 0.2 * (value_noise(rng, h, w, (5, 3)) - 0.5))[..., None]
        mark_x = w * rng.uniform(0.1, 0.9)
        dash = max(3, int(h * 0.1))
        phase = rng.integers(0, 2 * dash)
        marks = (np.abs(cols - mark_x) < max(1.0, w * 0.04)) & (((rows + phase) % (2 * dash)) < dash)
        img[marks & (rows > horizon)] = (0.85, 0.82, 0.55)
        kerb = rows < horizon
        img[kerb] = jitter((0.55, 0.55, 0.58)) * (1 + 0.1 * fine[kerb])[..., None]
        car = rng.random() < 0.5
        if car:
            cx0 = int(rng.integers(-w // 4, w // 2))
            body = (cols >= cx0) & (cols < cx0 + w * 0.8) & (rows > horizon * 0.4) & (rows < horizon * 0.85)
            img[body] = jitter(list(GARMENT_COLOURS.values())[int(rng.integers(8))], 0.15)
    else:  # hedge
        img = np.empty((h, w, 3), np.float32)
        leaves = value_noise(rng, h, w, (10, 6))
        dark = jitter((0.12, 0.28, 0.12), 0.15)
        light = jitter((0.30, 0.48, 0.22), 0.15)
        img[:] = dark + (light - dark) * leaves[..., None]
        img *= (1 + 0.3 * fine)[..., None]
        path = rows >= horizon * 1.3
        img[path] = jitter((0.58, 0.52, 0.46)) * (1 + 0.12 * fine[path])[..., None]
    if tint is not None:
        img = img * np.asarray(tint, np.float32)
    return np.clip(img, 0.0, 1.0).astype(np.float32)
