"""Pictures of lifted clouds: z-buffered point splats from three viewpoints, and PLY export.

Views (object frame, +y up, the camera of the photo on the +z side):

- ``front``: seen from +z — right = +x, up = +y;
- ``side``: seen from +x — right = −z, up = +y;
- ``top``: seen from +y — right = +x, up = −z (the front of the person at the bottom).

Projections are orthographic; every view of one picture shares one scale (the largest that fits
the cloud into 90 % of every panel), so sizes compare across views. Each point is a square of
``radius`` pixels; where points overlap the one nearest the viewer wins (a z-buffer, not
painter's order by chance).
"""

from __future__ import annotations

import os
import pathlib

import matplotlib
import numpy as np
import trimesh

matplotlib.use("Agg", force=False)  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402  (after the backend choice)

__all__ = ["VIEWS", "splat", "fit_scale", "render_views", "save_lift_picture", "export_ply",
           "load_ply"]

#: view name → (right axis, up axis, axis pointing at the viewer), object frame.
VIEWS: dict[str, tuple[tuple[float, float, float], ...]] = {
    "front": ((1, 0, 0), (0, 1, 0), (0, 0, 1)),
    "side": ((0, 0, -1), (0, 1, 0), (1, 0, 0)),
    "top": ((1, 0, 0), (0, 0, -1), (0, 1, 0)),
}


def _check_points(points: np.ndarray, name: str = "points") -> np.ndarray:
    p = np.asarray(points)
    if p.ndim != 2 or p.shape[1] != 6 or p.shape[0] == 0:
        raise ValueError(f"{name}: expected shape (N>0, 6) [x, y, z, r, g, b], got {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return p.astype(np.float64)


def splat(
    points: np.ndarray,
    view: str = "front",
    size: tuple[int, int] = (256, 128),
    radius: int = 1,
    center: np.ndarray | None = None,
    scale: float | None = None,
    background: float = 1.0,
) -> np.ndarray:
    """Orthographic, z-buffered splat of a coloured cloud.

    Args:
        points: (N, 6) [x, y, z, r, g, b], rgb in [0, 1].
        view: a key of :data:`VIEWS`.
        size: (H, W) of the picture.
        radius: half-size of each point's square in pixels (0 = one pixel).
        center: (3,) the point drawn at the picture centre (default: the bounding-box centre).
        scale: pixels per object unit (default: :func:`fit_scale` for this view).
        background: grey level of empty pixels.
    Returns:
        (H, W, 3) float32 in [0, 1].
    """
    p = _check_points(points)
    if view not in VIEWS:
        raise ValueError(f"view: expected one of {sorted(VIEWS)}, got {view!r}")
    h, w = (int(s) for s in size)
    if h <= 0 or w <= 0:
        raise ValueError(f"size: expected (H, W) > 0, got {size!r}")
    if not isinstance(radius, (int, np.integer)) or radius < 0:
        raise ValueError(f"radius: expected an int >= 0, got {radius!r}")
    xyz, rgb = p[:, :3], np.clip(p[:, 3:], 0.0, 1.0)
    lo, hi = xyz.min(0), xyz.max(0)
    c = (lo + hi) / 2 if center is None else np.asarray(center, np.float64)
    scale = fit_scale(p, (view,), (h, w)) if scale is None else float(scale)
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale: expected a finite value > 0, got {scale!r}")
    right, up, toward = (np.asarray(a, np.float64) for a in VIEWS[view])
    q = xyz - c
    col = np.floor(q @ right * scale + w / 2).astype(np.int64)
    row = np.floor(h / 2 - q @ up * scale).astype(np.int64)
    near = q @ toward  # larger = nearer the viewer
    offs = np.arange(-radius, radius + 1)
    dr, dc = (a.reshape(-1) for a in np.meshgrid(offs, offs, indexing="ij"))
    rows = (row[:, None] + dr[None]).reshape(-1)
    cols = (col[:, None] + dc[None]).reshape(-1)
    src = np.repeat(np.arange(len(p)), len(dr))
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    rows, cols, src = rows[inside], cols[inside], src[inside]
    pix = rows * w + cols
    order = np.lexsort((-near[src], pix))  # by pixel, nearest first
    pix, src = pix[order], src[order]
    first = np.ones(len(pix), bool)
    first[1:] = pix[1:] != pix[:-1]
    out = np.full((h * w, 3), background, np.float32)
    out[pix[first]] = rgb[src[first]]
    return out.reshape(h, w, 3)


def fit_scale(points: np.ndarray, views=("front", "side", "top"), size=(256, 128)) -> float:
    """Pixels per object unit such that the cloud's bounding box fills at most 90 % of the width
    and height of an (H, W) panel in every one of ``views``."""
    p = _check_points(points)
    h, w = size
    ext = p[:, :3].max(0) - p[:, :3].min(0)
    best = np.inf
    for v in views:
        right, up, _ = (np.abs(np.asarray(a, np.float64)) for a in VIEWS[v])
        ew, eh = float(ext @ right), float(ext @ up)
        best = min(best, 0.9 * w / ew if ew > 0 else np.inf, 0.9 * h / eh if eh > 0 else np.inf)
    return float(best) if np.isfinite(best) else 1.0


def render_views(points: np.ndarray, views=("front", "side", "top"), size=(256, 128),
                 radius: int = 1) -> list[np.ndarray]:
    """Splats of ``points`` from several views with one shared centre and scale."""
    p = _check_points(points)
    lo, hi = p[:, :3].min(0), p[:, :3].max(0)
    scale = fit_scale(p, views, size)
    return [splat(p, v, size, radius, center=(lo + hi) / 2, scale=scale) for v in views]


def save_lift_picture(points: np.ndarray, image: np.ndarray | None, path: str | os.PathLike,
                      title: str | None = None, size: tuple[int, int] = (256, 128),
                      radius: int = 1) -> pathlib.Path:
    """One PNG: the input image (if given) next to the cloud from the front, side and top.

    Args:
        points: (N, 6).  image: (H, W, 3) uint8 or None.
        size: (H, W) of each view panel.
    """

    panels = render_views(points, size=size, radius=radius)
    names = ["front", "side", "top"]
    if image is not None:
        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"image: expected an H×W×3 array, got shape {img.shape}")
        panels.insert(0, img)
        names.insert(0, "input")
    fig, axes = plt.subplots(1, len(panels), figsize=(2.0 * len(panels), 3.6), dpi=100)
    for ax, panel, name in zip(axes, panels, names):
        ax.imshow(panel, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title or f"{len(points)} points", fontsize=9)
    fig.tight_layout()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def export_ply(points: np.ndarray, path: str | os.PathLike) -> pathlib.Path:
    """Write a coloured point cloud (N, 6) as PLY (binary; colours as uint8 RGBA)."""
    p = _check_points(points)
    colors = np.round(np.clip(p[:, 3:], 0, 1) * 255).astype(np.uint8)
    rgba = np.concatenate([colors, np.full((len(p), 1), 255, np.uint8)], axis=1)
    cloud = trimesh.PointCloud(vertices=p[:, :3].astype(np.float32), colors=rgba)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cloud.export(path, file_type="ply")
    return path


def load_ply(path: str | os.PathLike) -> np.ndarray:
    """Read a PLY point cloud back as (N, 6) float32 [x, y, z, r, g, b] (rgb in [0, 1])."""
    cloud = trimesh.load(path, file_type="ply", process=False)
    if not isinstance(cloud, trimesh.PointCloud):
        raise ValueError(f"path: {path} does not hold a point cloud (got {type(cloud).__name__})")
    xyz = np.asarray(cloud.vertices, np.float32)
    colors = np.asarray(cloud.colors)
    if colors.shape[0] != xyz.shape[0]:
        raise ValueError(f"path: {path} has no per-point colours")
    return np.concatenate([xyz, colors[:, :3].astype(np.float32) / 255.0], axis=1)
