"""SynthPeople scenes: camera ids, per-image views (camera, light, background, pose jitter), and
rendering an identity's images in one batch.

Camera ids (Market-style, 1-based in file names, 0-based ``camid`` in code). Camera c has:

- a background style ``BACKGROUND_STYLES[c % 6]`` (pavement, grass, wall with windows, indoor
  floor, street, hedge), drawn afresh for every image and tinted per camera;
- a preferred azimuth sector: centre c·360°/n + U(−15°, 15°), per-image spread N(0, σ_c²) with
  σ_c ∈ [25°, 40°]; together the cameras cover the full circle;
- its own elevation mean U(−8°, 10°) (per image ± 3°, clipped to [−15°, 15°]) and distance
  mean U(2.3, 3.4) (per image ± 0.3, clipped to [2, 6], the CASL Market prior). Distances stay
  in the near part of CASL's range so that people fill the crop as in Market boxes (the person
  spans ≈ 65–100 % of the image height; below 2.25 the head or feet are cut, as in some real
  detector boxes);
- a light bias: l0 mean U(2.75, 3.25) and l1..l3 U(−0.07, 0.07); per image l0 ± 0.1 clipped to
  [2.5, 3.5] and l1..l8 ± 0.02 clipped to [−0.1, 0.1], i.e. inside the range CASL's light
  encoder can represent (the light encoder of Zheng et al. 2022, see mirror3d/models/casl/encoders.py).

So two images from one camera share background style, light and viewpoint sector, and
same-camera matches are easier than cross-camera ones, as in Market-1501.

Look-at offset (bx, by) ~ U(−0.1, 0.1)²: detector crops are roughly centred; 0.1 moves the
person by ≈ 8 % of the image width at distance 3, a realistic box misalignment.

Every float a view stores is rounded to float32 first, so a view rebuilt from the parquet row
renders exactly the same image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mirror3d.data.synth.body import PersonMesh
from mirror3d.data.synth.recipe import draw_pose_jitter, identity_rng
from mirror3d.data.synth.textures import BACKGROUND_STYLES, draw_background
from mirror3d.render import MeshRenderer, look_at_camera

__all__ = ["CameraSpec", "View", "camera_rig", "assign_cameras", "draw_views", "render_views",
           "view_background", "AZIMUTH_RANGE", "ELEVATION_RANGE", "DISTANCE_RANGE", "BIAS_RANGE"]

ELEVATION_RANGE = (-15.0, 15.0)
DISTANCE_RANGE = (2.0, 6.0)
AZIMUTH_RANGE = (-180.0, 180.0)
BIAS_RANGE = 0.1
_RIG_STREAM = 7
_MAX_CAMERAS_PER_ID = 5


def _f32(x, lo: float = -np.inf, hi: float = np.inf) -> float:
    """``x`` rounded to float32 and kept inside [lo, hi] (bounds themselves rounded inward)."""
    lo32, hi32 = np.float32(lo), np.float32(hi)
    if float(lo32) < lo:  # compare in float64 (NumPy would compare in float32)
        lo32 = np.nextafter(lo32, np.float32(np.inf))
    if float(hi32) > hi:
        hi32 = np.nextafter(hi32, np.float32(-np.inf))
    return float(np.clip(np.float32(x), lo32, hi32))


def _wrap(deg: float) -> float:
    """Wrap degrees to [−180, 180)."""
    return (deg + 180.0) % 360.0 - 180.0


@dataclass(frozen=True)
class CameraSpec:
    """One camera id of the rig (see the module docstring)."""

    camid: int
    style: str
    azimuth_centre: float
    azimuth_spread: float
    elevation_mean: float
    distance_mean: float
    light_l0: float
    light_dir: tuple[float, float, float]
    tint: tuple[float, float, float]


@dataclass(frozen=True)
class View:
    """One image of an identity: camera, light, pose jitter and background.

    Attributes:
        camid: 0-based camera id.  azimuth, elevation (degrees), distance, bx, by: camera.
        light: 9 SH coefficients.  pose_jitter: degrees per :data:`POSE_NAMES`.
        bg_seed: seed of the background drawing.  junk: a badly cropped / tiny render.
    """

    camid: int
    azimuth: float
    elevation: float
    distance: float
    bx: float
    by: float
    light: tuple[float, ...]
    pose_jitter: tuple[float, ...]
    bg_seed: int
    junk: bool = False


def camera_rig(n_cameras: int, seed: int) -> list[CameraSpec]:
    """The camera ids of a dataset (deterministic in ``seed``)."""
    if not isinstance(n_cameras, int) or n_cameras < 1:
        raise ValueError(f"n_cameras: expected an int >= 1, got {n_cameras!r}")
    rig = []
    for c in range(n_cameras):
        rng = identity_rng(seed, c, _RIG_STREAM)
        rig.append(CameraSpec(
            camid=c,
            style=BACKGROUND_STYLES[c % len(BACKGROUND_STYLES)],
            azimuth_centre=_wrap(c * 360.0 / n_cameras + rng.uniform(-15, 15)),
            azimuth_spread=float(rng.uniform(25, 40)),
            elevation_mean=float(rng.uniform(-8, 10)),
            distance_mean=float(rng.uniform(2.3, 3.4)),
            light_l0=float(rng.uniform(2.75, 3.25)),
            light_dir=tuple(float(x) for x in rng.uniform(-0.07, 0.07, 3)),
            tint=tuple(float(x) for x in 1.0 + rng.uniform(-0.08, 0.08, 3)),
        ))
    return rig


def assign_cameras(rng: np.random.Generator, n_images: int, n_cameras: int) -> list[int]:
    """Camera ids of an identity's images: k ∈ [2, min(n_cameras, n_images, 5)] distinct
    cameras, each seen at least once, the rest spread unevenly (Dirichlet weights)."""
    if n_images < 1 or n_cameras < 1:
        raise ValueError(f"n_images, n_cameras: expected >= 1, got {n_images}, {n_cameras}")
    k_max = min(n_cameras, n_images, _MAX_CAMERAS_PER_ID)
    k = int(rng.integers(min(2, k_max), k_max + 1))
    cams = sorted(int(c) for c in rng.choice(n_cameras, size=k, replace=False))
    extra = rng.choice(k, size=n_images - k, p=rng.dirichlet(np.full(k, 1.5)))
    ids = cams + [cams[int(e)] for e in extra]
    order = rng.permutation(n_images)
    return [ids[int(i)] for i in order]


def draw_views(rng: np.random.Generator, rig: list[CameraSpec], camids: list[int],
               jitter_deg: float = 3.0, junk: bool = False) -> list[View]:
    """One :class:`View` per entry of ``camids`` (0-based).

    Junk views (``junk=True``) are badly cropped (look-at offset 0.3–0.6 so the person is half
    out of frame) or tiny (distance 12–20).
    """
    n = len(camids)
    jit = draw_pose_jitter(rng, n, jitter_deg)
    views = []
    for i, c in enumerate(camids):
        if not 0 <= c < len(rig):
            raise ValueError(f"camids: camera {c} is outside the rig of {len(rig)} cameras")
        cam = rig[c]
        az = _wrap(cam.azimuth_centre + rng.normal(0.0, cam.azimuth_spread))
        el = float(np.clip(cam.elevation_mean + rng.normal(0, 3.0), *ELEVATION_RANGE))
        dist = float(np.clip(cam.distance_mean + rng.normal(0, 0.3), *DISTANCE_RANGE))
        bx, by = (float(x) for x in rng.uniform(-BIAS_RANGE, BIAS_RANGE, 2))
        light = np.empty(9)
        light[0] = np.clip(cam.light_l0 + rng.normal(0, 0.1), 2.5, 3.5)
        light[1:4] = np.clip(np.asarray(cam.light_dir) + rng.normal(0, 0.02, 3), -0.1, 0.1)
        light[4:] = np.clip(rng.normal(0, 0.02, 5), -0.1, 0.1)
        bg_seed = int(rng.integers(0, 2**62))
        if junk:
            if rng.random() < 0.5:
                sx, sy = rng.choice([-1.0, 1.0], 2)
                bx, by = sx * rng.uniform(0.3, 0.6), sy * rng.uniform(0.25, 0.6)
                dist = float(rng.uniform(2.0, 3.0))
            else:
                dist = float(rng.uniform(12.0, 20.0))
        light_t = (_f32(light[0], 2.5, 3.5),) + tuple(_f32(x, -0.1, 0.1) for x in light[1:])
        b = 1.0 if junk else BIAS_RANGE
        views.append(View(
            camid=int(c), azimuth=_f32(az, AZIMUTH_RANGE[0], AZIMUTH_RANGE[1] - 1e-3),
            elevation=_f32(el, *ELEVATION_RANGE),
            distance=_f32(dist, *((2.0, 20.0) if junk else DISTANCE_RANGE)),
            bx=_f32(bx, -b, b), by=_f32(by, -b, b), light=light_t,
            pose_jitter=tuple(float(x) for x in jit[i]), bg_seed=bg_seed, junk=bool(junk),
        ))
    return views


def view_background(view: View, rig: list[CameraSpec], height: int, width: int) -> np.ndarray:
    """The background of ``view``: (H, W, 3) float32 in [0, 1]."""
    cam = rig[view.camid]
    return draw_background(cam.style, np.random.default_rng(view.bg_seed), height, width,
                           np.asarray(cam.tint))


@torch.no_grad()
def render_views(mesh: PersonMesh, views: list[View], rig: list[CameraSpec],
                 renderer: MeshRenderer, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Render the images of one identity, batched (all share the face list).

    The person is rendered on white and composited onto the unshaded background with the hard
    coverage: rgb = fg·mask + bg·(1 − mask).

    Returns:
        rgb: (N, H, W, 3) uint8.  mask: (N, H, W) bool (hard coverage).
    """
    if not views:
        raise ValueError("views: expected at least one view")
    h, w = renderer.image_size
    rgbs, masks = [], []
    for s in range(0, len(views), batch_size):
        chunk = views[s:s + batch_size]
        b = len(chunk)
        jit = torch.tensor(np.array([v.pose_jitter for v in chunk], np.float32))
        verts = mesh.posed(jit)
        f32 = lambda name: torch.tensor([getattr(v, name) for v in chunk], dtype=torch.float32)  # noqa: E731
        cam = look_at_camera(f32("azimuth"), f32("elevation"), f32("distance"),
                             torch.stack([f32("bx"), f32("by")], -1))
        light = torch.tensor([v.light for v in chunk], dtype=torch.float32)
        tex = mesh.texture[None].expand(b, -1, -1, -1)
        out = renderer.render(verts, mesh.faces, mesh.face_uvs, tex, cam, light)
        mask = out.coverage.numpy() > 0.5
        fg = out.rgb.permute(0, 2, 3, 1).numpy()
        bg = np.stack([view_background(v, rig, h, w) for v in chunk])
        rgb = np.where(mask[..., None], fg, bg)
        rgbs.append(np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8))
        masks.append(mask)
    return np.concatenate(rgbs), np.concatenate(masks)

