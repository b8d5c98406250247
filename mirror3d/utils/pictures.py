"""Writing pictures people look at: looping GIFs (turntables) and tiled PNG sheets, atomically."""

from __future__ import annotations

import math
import pathlib

import numpy as np
from PIL import Image

from mirror3d.utils.files import atomic_path

__all__ = ["save_gif", "tile_frames", "save_sheet"]


def save_gif(frames: list[np.ndarray], path: str | pathlib.Path, fps: float = 12.0,
             scale: int = 2) -> pathlib.Path:
    """Write frames (H×W×3 uint8) as a looping GIF, upscaled ``scale``× (nearest)."""
    path = pathlib.Path(path)
    imgs = [Image.fromarray(f).resize((f.shape[1] * scale, f.shape[0] * scale), Image.NEAREST)
            for f in frames]
    with atomic_path(path) as tmp:
        imgs[0].save(tmp, format="GIF", save_all=True, append_images=imgs[1:],
                     duration=int(1000 / fps), loop=0)
    return path


def tile_frames(frames: list[np.ndarray], columns: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile equal-size frames (H×W×3 uint8) row by row on white padding; returns the sheet."""
    n = len(frames)
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    h, w = frames[0].shape[:2]
    sheet = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), 255, np.uint8)
    for k, f in enumerate(frames):
        r, c = divmod(k, columns)
        sheet[pad + r * (h + pad): pad + r * (h + pad) + h,
              pad + c * (w + pad): pad + c * (w + pad) + w] = f
    return sheet


def save_sheet(frames: list[np.ndarray], path: str | pathlib.Path, columns: int | None = None,
               pad: int = 2) -> pathlib.Path:
    """:func:`tile_frames` written as a PNG."""
    path = pathlib.Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(tile_frames(frames, columns, pad)).save(tmp, format="PNG")
    return path
