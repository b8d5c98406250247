"""SynthPeople meshes: a clothed person assembled from closed primitives, with one UV atlas.

Primitives (all closed, faces counter-clockwise seen from outside, so every part has a positive
signed volume):

- :func:`lathe`: a surface of revolution with an elliptical cross-section from a profile of
  rings ``(y, rx, rz[, z_offset])`` whose first and last rings are poles (radius 0). Spheres,
  ellipsoids, capsules, frusta with flat caps (skirts, dresses) are lathes.
- :func:`ellipsoid`, :func:`capsule` (a tapered capsule hanging from y = 0 to y = −L).
- :func:`box` (bags).

Every primitive carries per-corner local texture coordinates (s around the part, with s = 0.5 at
the front (+z); t along it, 0 at the bottom pole and 1 at the top, proportional to arc length),
which :func:`mirror3d.data.synth.textures.cell_uv` maps into the part's atlas cell. Vertices are
shared across the UV seam (UVs are per corner), so parts stay watertight.

A person (:class:`PersonMesh`) is a set of parts rigidly attached to nine bones: root (torso,
neck, head, hair, skirt, bag), upper arm and forearm (+ hand) on each side, thigh and shin
(+ foot) on each side. Posing rotates the limbs about the shoulders, elbows, hips and knees
(angles in :data:`~mirror3d.data.synth.recipe.POSE_NAMES`). The mesh is normalised once, at
the identity's base pose: centred on the bounding-box centre and scaled uniformly so that
y ∈ [−0.9, 0.9] (height 1.8, as the CASL template); jittered poses reuse that transform. The
person faces +z (the camera at azimuth 0 sees the front).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mirror3d.data.synth.recipe import POSE_NAMES, PersonRecipe
from mirror3d.data.synth.textures import PaintSpec, cell_uv, paint_atlas

__all__ = [
    "Primitive", "lathe", "ellipsoid", "capsule", "box", "signed_volume",
    "BONES", "PersonMesh", "build_person", "build_person_mesh", "TARGET_HEIGHT",
]

#: Height of every normalised person (y ∈ [−0.9, 0.9]).
TARGET_HEIGHT = 1.8
BONES = ("root", "upper_arm_l", "forearm_l", "upper_arm_r", "forearm_r",
         "thigh_l", "shin_l", "thigh_r", "shin_r")
_LEG_ABDUCT_DEG = 3.0


# ------------------------------------------------------------------------------ primitives
@dataclass
class Primitive:
    """A closed triangle mesh with local texture coordinates.

    Attributes:
        verts: (V, 3) float64.  faces: (F, 3) int64 (CCW from outside).
        st: (F, 3, 2) per-corner local (s, t) in [0, 1].
        ring_t, ring_y: (R,) arc-length parameter and height of each profile ring (lathes).
        circumference: largest cross-section perimeter.
    """

    verts: np.ndarray
    faces: np.ndarray
    st: np.ndarray
    ring_t: np.ndarray | None = None
    ring_y: np.ndarray | None = None
    circumference: float = 1.0

    def transformed(self, rotation: np.ndarray | None = None,
                    translation=(0.0, 0.0, 0.0)) -> "Primitive":
        """A copy with verts ← verts·Rᵀ + translation (a proper rotation keeps the winding)."""
        v = self.verts if rotation is None else self.verts @ np.asarray(rotation, np.float64).T
        return Primitive(v + np.asarray(translation, np.float64), self.faces, self.st,
                         self.ring_t, self.ring_y, self.circumference)


def _ellipse_perimeter(a: float, b: float) -> float:
    return math.pi * (3 * (a + b) - math.sqrt(max((3 * a + b) * (a + 3 * b), 0.0)))


def lathe(rings, n_seg: int = 16) -> Primitive:
    """A closed surface of revolution with elliptical cross-sections.

    Args:
        rings: sequence of (y, rx, rz) or (y, rx, rz, z_offset), bottom to top; the first and
            last ring must have rx = rz = 0 (poles), every other ring rx, rz > 0; y must not
            decrease.
        n_seg: vertices per ring (≥ 3).
    Returns:
        :class:`Primitive`. Ring k, segment j sits at angle θ = 2π(j/n − 0.5):
        (x, y, z) = (rx·sin θ, y, z_offset + rz·cos θ), so s = 0.5 faces +z.
    """
    rings = np.asarray([tuple(r) + (0.0,) * (4 - len(r)) for r in rings], np.float64)
    if rings.ndim != 2 or rings.shape[0] < 3:
        raise ValueError(f"rings: expected at least 3 rings (two poles and one ring), got {len(rings)}")
    if n_seg < 3:
        raise ValueError(f"n_seg: expected >= 3, got {n_seg}")
    if not np.isfinite(rings).all():
        raise ValueError("rings: expected finite values")
    if np.any(rings[[0, -1], 1:3] != 0):
        raise ValueError("rings: the first and last ring must be poles (rx = rz = 0)")
    if np.any(rings[1:-1, 1:3] <= 0):
        raise ValueError("rings: inner rings must have rx > 0 and rz > 0")
    if np.any(np.diff(rings[:, 0]) < 0):
        raise ValueError("rings: y must not decrease from the first ring to the last")
    n_inner = rings.shape[0] - 2
    theta = 2 * np.pi * (np.arange(n_seg) / n_seg - 0.5)
    inner = rings[1:-1]
    ring_pts = np.stack([
        inner[:, 1:2] * np.sin(theta)[None],
        np.repeat(inner[:, 0:1], n_seg, axis=1),
        inner[:, 3:4] + inner[:, 2:3] * np.cos(theta)[None],
    ], axis=-1).reshape(-1, 3)
    bottom = np.array([[0.0, rings[0, 0], rings[0, 3]]])
    top = np.array([[0.0, rings[-1, 0], rings[-1, 3]]])
    verts = np.concatenate([bottom, ring_pts, top])
    ib, it = 0, 1 + n_inner * n_seg

    # arc-length parameter of each ring along the profile (mean radius)
    r_mean = 0.5 * (rings[:, 1] + rings[:, 2])
    seg = np.hypot(np.diff(rings[:, 0]), np.diff(r_mean))
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    ring_t = cum / max(cum[-1], 1e-12)

    j = np.arange(n_seg)
    jn = (j + 1) % n_seg
    s0, s1 = j / n_seg, (j + 1) / n_seg
    faces, st = [], []

    def vid(k, jj):  # inner ring k (0-based), segment jj
        return 1 + k * n_seg + jj

    # bottom cap: (pole, ring0[j+1], ring0[j])
    faces.append(np.stack([np.full(n_seg, ib), vid(0, jn), vid(0, j)], 1))
    st.append(np.stack([np.stack([(s0 + s1) / 2, np.zeros(n_seg)], 1),
                        np.stack([s1, np.full(n_seg, ring_t[1])], 1),
                        np.stack([s0, np.full(n_seg, ring_t[1])], 1)], 1))
    for k in range(n_inner - 1):
        a, b = vid(k, j), vid(k, jn)
        c, d = vid(k + 1, jn), vid(k + 1, j)
        ta, tb = ring_t[k + 1], ring_t[k + 2]
        faces.append(np.stack([a, b, c], 1))
        st.append(np.stack([np.stack([s0, np.full(n_seg, ta)], 1),
                            np.stack([s1, np.full(n_seg, ta)], 1),
                            np.stack([s1, np.full(n_seg, tb)], 1)], 1))
        faces.append(np.stack([a, c, d], 1))
        st.append(np.stack([np.stack([s0, np.full(n_seg, ta)], 1),
                            np.stack([s1, np.full(n_seg, tb)], 1),
                            np.stack([s0, np.full(n_seg, tb)], 1)], 1))
    # top cap: (pole, ringL[j], ringL[j+1])
    k = n_inner - 1
    faces.append(np.stack([np.full(n_seg, it), vid(k, j), vid(k, jn)], 1))
    st.append(np.stack([np.stack([(s0 + s1) / 2, np.ones(n_seg)], 1),
                        np.stack([s0, np.full(n_seg, ring_t[-2])], 1),
                        np.stack([s1, np.full(n_seg, ring_t[-2])], 1)], 1))
    circ = max(_ellipse_perimeter(r[1], r[2]) for r in inner)
    return Primitive(verts, np.concatenate(faces).astype(np.int64), np.concatenate(st),
                     ring_t, rings[:, 0].copy(), circ)


def ellipsoid(radii, center=(0.0, 0.0, 0.0), n_lat: int = 10, n_seg: int = 16) -> Primitive:
    """A closed ellipsoid with semi-axes ``radii`` = (rx, ry, rz) around ``center``."""
    rx, ry, rz = (float(r) for r in radii)
    if min(rx, ry, rz) <= 0:
        raise ValueError(f"radii: expected three values > 0, got {radii}")
    if n_lat < 2:
        raise ValueError(f"n_lat: expected >= 2, got {n_lat}")
    phi = np.linspace(-np.pi / 2, np.pi / 2, n_lat + 1)
    c = np.cos(phi)
    c[[0, -1]] = 0.0
    rings = [(ry * np.sin(p), rx * cc, rz * cc) for p, cc in zip(phi, c)]
    return lathe(rings, n_seg).transformed(None, center)


def capsule(length: float, r_top: float, r_bottom: float, n_seg: int = 12, n_cap: int = 3,
            n_mid: int = 2, depth_ratio: float = 1.0) -> Primitive:
    """A tapered capsule hanging from y = 0 (top sphere centre) to y = −length (bottom one).

    Args:
        depth_ratio: rz / rx of the cross-section (1 = round).
    """
    if length <= 0 or r_top <= 0 or r_bottom <= 0:
        raise ValueError(f"length, r_top, r_bottom: expected > 0, got {length}, {r_top}, {r_bottom}")
    rings = []
    for k in range(n_cap + 1):  # bottom hemisphere, pole first
        p = -np.pi / 2 + k * (np.pi / 2) / n_cap
        r = 0.0 if k == 0 else r_bottom * np.cos(p)
        rings.append((-length + r_bottom * np.sin(p), r, r * depth_ratio))
    for k in range(1, n_mid + 1):
        f = k / (n_mid + 1)
        r = r_bottom + f * (r_top - r_bottom)
        rings.append((-length * (1 - f), r, r * depth_ratio))
    for k in range(n_cap + 1):  # top hemisphere, pole last
        p = k * (np.pi / 2) / n_cap
        r = 0.0 if k == n_cap else r_top * np.cos(p)
        rings.append((r_top * np.sin(p), r, r * depth_ratio))
    return lathe(rings, n_seg)


_BOX_CORNERS = np.array([[-1, -1, -1], [1, -1, -1], [1, 1, -1], [-1, 1, -1],
                         [-1, -1, 1], [1, -1, 1], [1, 1, 1], [-1, 1, 1]], np.float64)
# each side as a quad (a, b, c, d), counter-clockwise seen from outside
_BOX_QUADS = np.array([[4, 5, 6, 7], [1, 0, 3, 2], [5, 1, 2, 6], [0, 4, 7, 3],
                       [7, 6, 2, 3], [0, 1, 5, 4]], np.int64)


def box(half_size, center=(0.0, 0.0, 0.0), rotation: np.ndarray | None = None) -> Primitive:
    """A closed box with half extents ``half_size`` (3,), optionally rotated, at ``center``.
    Each side maps to the whole local (s, t) square."""
    h = np.asarray(half_size, np.float64)
    if h.shape != (3,) or np.any(h <= 0):
        raise ValueError(f"half_size: expected three values > 0, got {half_size}")
    q = _BOX_QUADS
    faces = np.concatenate([q[:, [0, 1, 2]], q[:, [0, 2, 3]]])
    quad_st = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float64)
    st = np.concatenate([np.broadcast_to(quad_st[[0, 1, 2]], (6, 3, 2)),
                         np.broadcast_to(quad_st[[0, 2, 3]], (6, 3, 2))])
    prim = Primitive(_BOX_CORNERS * h, faces, np.ascontiguousarray(st),
                     circumference=float(4 * (h[0] + h[2])))
    return prim.transformed(rotation, center)


def signed_volume(verts, faces) -> float | np.ndarray:
    """Signed volume of a closed mesh (> 0 when faces wind counter-clockwise from outside).

    Args:
        verts: (V, 3) or (B, V, 3) numpy / torch.  faces: (F, 3).
    Returns:
        a float, or (B,) for batched verts.
    """
    v = verts.detach().cpu().numpy() if isinstance(verts, torch.Tensor) else np.asarray(verts)
    f = faces.detach().cpu().numpy() if isinstance(faces, torch.Tensor) else np.asarray(faces)
    a, b, c = v[..., f[:, 0], :], v[..., f[:, 1], :], v[..., f[:, 2], :]
    vol = np.einsum("...i,...i->...", a.astype(np.float64), np.cross(b, c).astype(np.float64))
    out = vol.sum(-1) / 6.0
    return float(out) if np.ndim(out) == 0 else out


def _rot_x_np(deg: float) -> np.ndarray:
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], np.float64)


# ------------------------------------------------------------------------------ the person
@dataclass
class PartRange:
    """Where a part lives in the concatenated mesh: vertices [v0, v1), faces [f0, f1)."""

    bone: int
    v0: int
    v1: int
    f0: int
    f1: int


@dataclass
class PersonMesh:
    """A posable, textured person built from a recipe (see the module docstring).

    Attributes:
        recipe: the identity.
        local_verts: (V, 3) float64, each vertex in its bone's frame.
        bone: (V,) int64 bone of each vertex (index into :data:`BONES`).
        faces: (F, 3) int64.  face_uvs: (F, 3, 2) float32 atlas UVs (v up).
        texture: (3, Ht, Wt) float32 in [0, 1] (8-bit levels).
        parts: name → :class:`PartRange`.
        joints: (4, 3) float64 rest positions of shoulder_l, shoulder_r, hip_l, hip_r (root frame).
        lengths: (upper arm, thigh) lengths.
        centre, scale: the normalisation ``(v − centre)·scale``.
    """

    recipe: PersonRecipe
    local_verts: torch.Tensor
    bone: torch.Tensor
    faces: torch.Tensor
    face_uvs: torch.Tensor
    texture: torch.Tensor
    parts: dict[str, PartRange]
    joints: np.ndarray
    lengths: tuple[float, float]
    centre: np.ndarray
    scale: float

    @property
    def num_verts(self) -> int:
        return int(self.local_verts.shape[0])

    def bone_transforms(self, angles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotations (B, 9, 3, 3) and translations (B, 9, 3) of the bones (float64).

        Args:
            angles: (B, P) pose angles in degrees (:data:`POSE_NAMES` order).
        """
        a = torch.deg2rad(angles.to(torch.float64))
        bsz = a.shape[0]
        ab_l, ab_r, sw_l, sw_r, el_l, el_r, lg_l, lg_r, kn_l, kn_r = a.unbind(-1)
        leg_ab = torch.full((bsz,), math.radians(_LEG_ABDUCT_DEG), dtype=torch.float64)
        j = torch.from_numpy(self.joints)
        l_ua, l_th = self.lengths
        rs = [torch.eye(3, dtype=torch.float64).expand(bsz, 3, 3)]
        ts = [torch.zeros(bsz, 3, dtype=torch.float64)]
        down_ua = torch.tensor([0.0, -l_ua, 0.0], dtype=torch.float64)
        down_th = torch.tensor([0.0, -l_th, 0.0], dtype=torch.float64)
        for side, ab, sw, el, joint in ((1.0, ab_l, sw_l, el_l, j[0]), (-1.0, ab_r, sw_r, el_r, j[1])):
            r_up = _rot_z(side * ab) @ _rot_x(-sw)
            t_up = joint.expand(bsz, 3)
            rs += [r_up, r_up @ _rot_x(-el)]
            ts += [t_up, t_up + r_up @ down_ua]
        for side, lg, kn, joint in ((1.0, lg_l, kn_l, j[2]), (-1.0, lg_r, kn_r, j[3])):
            r_th = _rot_z(side * leg_ab) @ _rot_x(-lg)
            t_th = joint.expand(bsz, 3)
            rs += [r_th, r_th @ _rot_x(kn)]
            ts += [t_th, t_th + r_th @ down_th]
        return torch.stack(rs, 1), torch.stack(ts, 1)

    def _pose_unnormalised(self, angles: torch.Tensor) -> torch.Tensor:
        rot, trans = self.bone_transforms(angles)
        r = rot[:, self.bone]  # (B, V, 3, 3)
        return (r * self.local_verts[None, :, None, :]).sum(-1) + trans[:, self.bone]

    def posed(self, pose_jitter: torch.Tensor | np.ndarray | None = None) -> torch.Tensor:
        """Normalised vertices at the base pose plus ``pose_jitter``.

        Args:
            pose_jitter: (B, P) or (P,) degrees, or None (base pose, B = 1).
        Returns:
            (B, V, 3) float32.
        """
        p = len(POSE_NAMES)
        if pose_jitter is None:
            pose_jitter = torch.zeros(1, p)
        jit = torch.as_tensor(np.asarray(pose_jitter) if not isinstance(pose_jitter, torch.Tensor)
                              else pose_jitter)
        if jit.dim() == 1:
            jit = jit[None]
        if jit.dim() != 2 or jit.shape[1] != p:
            raise ValueError(f"pose_jitter: expected shape (B, {p}) or ({p},), got {tuple(jit.shape)}")
        if not torch.isfinite(jit).all():
            raise ValueError("pose_jitter: expected finite angles")
        base = torch.tensor(self.recipe.pose, dtype=torch.float64)
        angles = base[None] + jit.to(torch.float64)
        v = self._pose_unnormalised(angles)
        centre = torch.from_numpy(self.centre)
        return ((v - centre) * self.scale).to(torch.float32)


def _rot_x(a: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(a), torch.sin(a)
    o, z = torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([torch.stack([o, z, z], -1), torch.stack([z, c, -s], -1),
                        torch.stack([z, s, c], -1)], -2)


def _rot_z(a: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(a), torch.sin(a)
    o, z = torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([torch.stack([c, -s, z], -1), torch.stack([s, c, z], -1),
                        torch.stack([z, z, o], -1)], -2)


def _skirt_hem(recipe: PersonRecipe, hip_rx, hip_rz, y_hip, y_hem, r_knee) -> tuple[float, float]:
    """Hem radii wide enough for the legs of the base pose (plus jitter) to stay mostly inside."""
    pose = dict(zip(POSE_NAMES, recipe.pose))
    swing = math.radians(max(abs(pose["leg_swing_l"]), abs(pose["leg_swing_r"])) + 6.0)
    drop = y_hip - y_hem
    rz = max(1.25 * hip_rz, drop * math.sin(swing) + 1.1 * r_knee)
    rx = max(1.12 * hip_rx, 0.9 * hip_rx + drop * math.sin(math.radians(_LEG_ABDUCT_DEG + 4)) + r_knee)
    return rx, rz


def build_person(recipe: PersonRecipe, cell: int = 64, n_seg: int = 16,
                 fabric_noise: bool = True) -> PersonMesh:
    """Assemble the posable textured mesh of ``recipe`` (deterministic).

    Args:
        cell: atlas texels per part cell.
        n_seg: segments around the torso, head, skirt (limbs use 3/4 of it).
        fabric_noise: add the ±4 % texture noise (seeded from the recipe).
    """
    if not isinstance(recipe, PersonRecipe):
        raise ValueError(f"recipe: expected a PersonRecipe, got {type(recipe).__name__}")
    r = recipe
    H, g, sw, hs = r.height, r.girth, r.shoulder_width, r.head_size
    limb_seg = max(8, (3 * n_seg) // 4)

    y_hip = r.leg_fraction * H
    ankle = 0.045 * H
    l_th = l_sh = 0.5 * (y_hip - ankle)
    head_r = np.array([0.046, 0.064, 0.056]) * H * hs
    y_hc = H - head_r[1]
    y_sh = y_hc - head_r[1] - 0.045 * H
    y_w = y_hip + 0.36 * (y_sh - y_hip)
    y_ch = y_hip + 0.75 * (y_sh - y_hip)
    hip_rx, hip_rz = 0.09 * H * g ** 0.8, 0.06 * H * g
    waist_rx, waist_rz = 0.078 * H * g, 0.055 * H * g
    chest_rx, chest_rz = 0.092 * H * sw ** 0.7 * g ** 0.4, 0.064 * H * g ** 0.8
    r_ua, r_el, r_wr = 0.026 * H * g ** 0.5, 0.021 * H * g ** 0.5, 0.016 * H * g ** 0.3
    r_th, r_kn, r_an = 0.05 * H * g ** 0.8, 0.032 * H * g ** 0.5, 0.021 * H * g ** 0.3
    l_ua, l_fa = 0.175 * H, 0.145 * H
    sh_x = max(0.1 * H * sw, hip_rx + r_el + 0.004 * H)
    hip_x = max(hip_rx - 0.9 * r_th, 0.3 * hip_rx)

    parts: list[tuple[str, int, Primitive, PaintSpec]] = []

    def spec(part, kind, prim, bands=(), **extra):
        return PaintSpec(part, kind, list(bands), prim.ring_t, prim.ring_y, prim.circumference, extra)

    # torso
    y_cr = y_hip - 0.05 * H
    torso_rings = [
        (y_cr, 0, 0, 0),
        (y_cr + 0.012 * H, 0.72 * hip_rx, 0.78 * hip_rz, 0),
        (y_hip, 0.97 * hip_rx, hip_rz, -0.004 * H),
        (y_hip + 0.05 * H, hip_rx, 0.98 * hip_rz, -0.002 * H),
        (y_w, waist_rx, waist_rz, 0),
        (0.5 * (y_w + y_ch), 0.5 * (waist_rx + chest_rx), 0.5 * (waist_rz + chest_rz), 0.003 * H),
        (y_ch, chest_rx, chest_rz, 0.006 * H),
        (y_sh - 0.02 * H, 0.96 * sh_x, 0.88 * chest_rz, 0.002 * H),
        (y_sh + 0.012 * H, 0.8 * sh_x, 0.62 * chest_rz, 0),
        (y_sh + 0.032 * H, 0.35 * sh_x, 0.45 * chest_rz, 0),
        (y_sh + 0.036 * H, 0, 0, 0),
    ]
    torso = lathe(torso_rings, n_seg)
    t_w, t_ch, t_neck = torso.ring_t[4], torso.ring_t[6], torso.ring_t[8]
    lower = "dress" if r.lower_kind == "dress" else "lower"
    parts.append(("torso", 0, torso, spec("torso", "torso", torso,
                                         [(0.0, t_w, lower), (t_w, 1.0, "upper" if lower != "dress" else "dress")],
                                         waist_t=t_w, chest_t=t_ch, neck_t=t_neck)))
    neck = capsule(y_hc - 0.4 * head_r[1] - y_sh, 0.028 * H * g ** 0.4, 0.03 * H * g ** 0.4,
                   limb_seg).transformed(None, (0, y_hc - 0.4 * head_r[1], 0))
    parts.append(("neck", 0, neck, spec("neck", "solid", neck, material="skin")))
    head = ellipsoid(head_r, (0, y_hc, 0), n_lat=10, n_seg=n_seg)
    parts.append(("head", 0, head, spec("head", "head", head)))
    if r.hair_style == "long":
        hair = ellipsoid(head_r * np.array([1.02, 1.3, 0.6]),
                         (0, y_hc - 0.55 * head_r[1], -0.42 * head_r[2]), n_lat=8, n_seg=n_seg)
        parts.append(("hair", 0, hair, spec("hair", "hair", hair)))
    elif r.hair_style == "ponytail":
        tail = capsule(1.4 * head_r[1], 0.3 * head_r[0], 0.18 * head_r[0], limb_seg).transformed(
            _rot_x_np(25.0), (0, y_hc + 0.15 * head_r[1], -0.88 * head_r[2]))
        parts.append(("hair", 0, tail, spec("hair", "hair", tail)))

    # arms (the bone frame has its origin at the joint; limbs hang along −y)
    for sfx, b_up, b_fa in (("l", 1, 2), ("r", 3, 4)):
        upper = capsule(l_ua, r_ua, r_el, limb_seg)
        bands = [(0.0, 1.0, "upper")] if r.sleeves == "long" else [(0.0, 0.45, "skin"), (0.45, 1.0, "upper")]
        parts.append((f"upper_arm_{sfx}", b_up, upper, spec(f"upper_arm_{sfx}", "limb", upper, bands)))
        # (the forearm's top ring is a little smaller than the upper arm's bottom ring, so no
        # two parts share a vertex position: an OBJ round trip that merges equal positions
        # gives back the same mesh)
        fore = capsule(l_fa, 0.96 * r_el, r_wr, limb_seg)
        bands = [(0.0, 1.0, "upper" if r.sleeves == "long" else "skin")]
        parts.append((f"forearm_{sfx}", b_fa, fore, spec(f"forearm_{sfx}", "limb", fore, bands)))
        hand = ellipsoid(np.array([0.014, 0.042, 0.026]) * H, (0, -l_fa - 0.04 * H, 0.002 * H),
                         n_lat=6, n_seg=limb_seg)
        parts.append((f"hand_{sfx}", b_fa, hand, spec(f"hand_{sfx}", "solid", hand, material="skin")))
    # legs
    for sfx, b_th, b_sh in (("l", 5, 6), ("r", 7, 8)):
        thigh = capsule(l_th, r_th, r_kn, limb_seg)
        if r.lower_kind == "trousers":
            bands = [(0.0, 1.0, "lower")]
        elif r.lower_kind == "shorts":
            bands = [(0.0, 0.55, "skin"), (0.55, 1.0, "lower")]
        else:
            bands = [(0.0, 1.0, "skin")]
        parts.append((f"thigh_{sfx}", b_th, thigh, spec(f"thigh_{sfx}", "limb", thigh, bands)))
        shin = capsule(l_sh, 0.96 * r_kn, r_an, limb_seg)
        bands = [(0.0, 1.0, "lower" if r.lower_kind == "trousers" else "skin")]
        parts.append((f"shin_{sfx}", b_sh, shin, spec(f"shin_{sfx}", "limb", shin, bands)))
        foot = ellipsoid(np.array([0.032, 0.026, 0.072]) * H, (0, -l_sh - 0.019 * H, 0.03 * H),
                         n_lat=6, n_seg=limb_seg)
        parts.append((f"foot_{sfx}", b_sh, foot, spec(f"foot_{sfx}", "solid", foot, material="shoe")))

    # skirt / dress: a closed flared frustum from the waist to the hem, flat caps
    if r.lower_kind in ("skirt", "dress"):
        y_knee = y_hip - l_th
        y_hem = y_knee + r.skirt_length * (y_hip - y_knee)
        hem_rx, hem_rz = _skirt_hem(r, hip_rx, hip_rz, y_hip, y_hem, r_kn)
        y_top = y_w + 0.01 * H
        rings = [(y_hem, 0, 0, 0), (y_hem, hem_rx, hem_rz, 0)]
        if y_hem < y_hip - 0.02 * H:
            rings.append((y_hip, max(1.06 * hip_rx, hem_rx * 0.9), max(1.08 * hip_rz, 0.9 * hem_rz), -0.004 * H))
        rings += [(y_top, 1.05 * waist_rx, 1.08 * waist_rz, 0), (y_top, 0, 0, 0)]
        skirt = lathe(rings, n_seg)
        parts.append(("skirt", 0, skirt, spec("skirt", "skirt", skirt, [(0.0, 1.0, lower)],
                                             rim_t=skirt.ring_t[1])))
    # bags
    if r.bag == "backpack":
        bag = box((0.75 * chest_rx, 0.105 * H, 0.04 * H), (0, y_ch - 0.03 * H, -(0.8 * chest_rz + 0.04 * H)))
        parts.append(("bag", 0, bag, spec("bag", "bag", bag)))
    elif r.bag == "handbag":
        bag = box((0.018 * H, 0.055 * H, 0.07 * H),
                  (r.bag_side * (hip_rx + 0.012 * H), y_hip - 0.01 * H, -0.02 * H))
        parts.append(("bag", 0, bag, spec("bag", "bag", bag)))

    # concatenate
    verts, bones, faces, uvs, ranges = [], [], [], [], {}
    nv = nf = 0
    for name, bone, prim, _ in parts:
        verts.append(prim.verts)
        bones.append(np.full(len(prim.verts), bone, np.int64))
        faces.append(prim.faces + nv)
        uvs.append(cell_uv(name, prim.st, cell))
        ranges[name] = PartRange(bone, nv, nv + len(prim.verts), nf, nf + len(prim.faces))
        nv += len(prim.verts)
        nf += len(prim.faces)
    noise_rng = np.random.default_rng(np.random.SeedSequence([r.recipe_id, 2])) if fabric_noise else None
    texture = paint_atlas([p[3] for p in parts], r, cell, noise_rng)
    # shoulder joints sit a little inside the torso so the arm's top sphere does not bulge
    y_sj, x_sj = y_sh - 0.7 * r_ua, sh_x - 0.2 * r_ua
    joints = np.array([[x_sj, y_sj, 0.0], [-x_sj, y_sj, 0.0], [hip_x, y_hip, 0.0], [-hip_x, y_hip, 0.0]])
    mesh = PersonMesh(
        recipe=r,
        local_verts=torch.from_numpy(np.concatenate(verts)),
        bone=torch.from_numpy(np.concatenate(bones)),
        faces=torch.from_numpy(np.concatenate(faces)),
        face_uvs=torch.from_numpy(np.concatenate(uvs).astype(np.float32)),
        texture=torch.from_numpy(texture),
        parts=ranges,
        joints=joints,
        lengths=(l_ua, l_th),
        centre=np.zeros(3),
        scale=1.0,
    )
    # normalise at the base pose: bounding-box centre to the origin, height to 1.8
    base = mesh._pose_unnormalised(torch.tensor(r.pose, dtype=torch.float64)[None])[0].numpy()
    lo, hi = base.min(0), base.max(0)
    mesh.centre = (lo + hi) / 2.0
    mesh.scale = TARGET_HEIGHT / float(hi[1] - lo[1])
    return mesh


def build_person_mesh(recipe: PersonRecipe, pose_jitter=None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The exact mesh of one image: ``recipe`` posed at its base pose plus ``pose_jitter``.

    Args:
        recipe: the identity (e.g. from ``gt/recipes.jsonl``).
        pose_jitter: (P,) degrees in :data:`POSE_NAMES` order (the parquet ``pose_jitter``
            column), or None for the base (rest) pose.
    Returns:
        verts (V, 3) float32, faces (F, 3) int64, face_uvs (F, 3, 2) float32 (v up),
        texture (3, Ht, Wt) float32 in [0, 1].
    """
    mesh = build_person(recipe)
    if pose_jitter is not None:
        pj = np.asarray(pose_jitter, dtype=np.float32)
        if pj.shape != (len(POSE_NAMES),):
            raise ValueError(f"pose_jitter: expected shape ({len(POSE_NAMES)},), got {pj.shape}")
        pose_jitter = pj[None]
    return mesh.posed(pose_jitter)[0], mesh.faces, mesh.face_uvs, mesh.texture
