"""Turntable renders: a mesh seen from a full circle of azimuths (frames for a GIF or a sheet,
see :mod:`mirror3d.utils.pictures`), and a texture that shows orientation.

The ``turntable`` job (:mod:`mirror3d.jobs.turntable`) renders the CASL template sphere with it.
"""

from __future__ import annotations

import colorsys

import numpy as np
import torch
from tqdm import tqdm

from mirror3d.render.camera import look_at_camera
from mirror3d.render.renderer import MeshRenderer

__all__ = ["render_turntable", "demo_texture"]


def demo_texture(height: int = 256, width: int = 64) -> torch.Tensor:
    """A texture that shows orientation: hue follows u, bands follow v. Returns (3, H, W)."""
    img = np.zeros((height, width, 3), dtype=np.float32)
    for j in range(width):
        r, g, b = colorsys.hsv_to_rgb(j / width, 0.65, 1.0)
        img[:, j] = (r, g, b)
    bands = ((np.arange(height) // max(1, height // 16)) % 2).astype(np.float32)
    img *= (0.65 + 0.35 * bands)[:, None, None]
    return torch.from_numpy(img).permute(2, 0, 1).contiguous()


@torch.no_grad()
def render_turntable(
    verts: torch.Tensor,
    faces: torch.Tensor,
    face_uvs: torch.Tensor,
    texture: torch.Tensor,
    light: torch.Tensor,
    renderer: MeshRenderer,
    frames: int = 36,
    elevation: float = 10.0,
    distance: float = 4.0,
    batch_size: int = 12,
    progress: bool = True,
) -> list[np.ndarray]:
    """Render ``frames`` views at azimuths evenly spaced over 360°.

    Args:
        verts: (V, 3).  faces: (F, 3).  face_uvs: (F, 3, 2).  texture: (3, Ht, Wt).  light: (9,).
    Returns:
        a list of H×W×3 uint8 frames.
    """
    if frames < 1:
        raise ValueError(f"frames: expected >= 1, got {frames}")
    azimuths = torch.arange(frames, dtype=torch.float32) * (360.0 / frames)
    out: list[np.ndarray] = []
    steps = range(0, frames, batch_size)
    for s in tqdm(steps, desc="turntable", unit="batch", disable=not progress):
        az = azimuths[s : s + batch_size]
        n = az.shape[0]
        cam = look_at_camera(az, torch.full((n,), float(elevation)), torch.full((n,), float(distance)))
        res = renderer.render(verts[None].expand(n, -1, -1), faces, face_uvs,
                              texture[None].expand(n, -1, -1, -1), cam, light[None].expand(n, -1))
        rgb = (res.rgb.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).round()
        out.extend(rgb.astype(np.uint8))
    return out
