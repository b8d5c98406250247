"""Flat lifting: every pixel of an image as a 3D point (x, y, 0) with its colour.

This is the OG-Net paper's "2D image" input (its Table I row "2D image as (x, y, 0)"). The image
plane is scaled so that the image height spans ``height`` world units (default 1.8, a person's
height, matching the scale of the CASL template and of SMPL-based point clouds, which the
ball-query radii 0.1/0.2/0.4 of OG-Net assume), centred on the image centre, +y up.
"""

from __future__ import annotations

import numpy as np

__all__ = ["lift_flat", "pixel_plane_coords", "image_to_rgb"]


def pixel_plane_coords(h: int, w: int, height: float = 1.8) -> np.ndarray:
    """(H·W, 2) float32 (x, y) of pixel centres, row-major, row 0 at the top (+y)."""
    if h <= 0 or w <= 0:
        raise ValueError(f"image size: expected H > 0 and W > 0, got {h}×{w}")
    s = height / h
    jj, ii = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    x = (jj + 0.5 - w / 2.0) * s
    y = (h / 2.0 - ii - 0.5) * s
    return np.stack([x.reshape(-1), y.reshape(-1)], axis=1).astype(np.float32)


def image_to_rgb(image: np.ndarray) -> np.ndarray:
    """Validate an H×W×3 image (uint8, or float in [0, 1]) → (H, W, 3) float32 in [0, 1]."""
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image: expected an H×W×3 array, got shape {img.shape}")
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    if np.issubdtype(img.dtype, np.floating):
        if not np.isfinite(img).all() or img.min() < 0 or img.max() > 1:
            raise ValueError("image: float images must be finite and in [0, 1]")
        return img.astype(np.float32)
    raise ValueError(f"image: expected uint8 or float in [0, 1], got {img.dtype}")


def lift_flat(image: np.ndarray, mask: np.ndarray | None = None, height: float = 1.8,
              foreground_only: bool = False) -> np.ndarray:
    """Lift an image to points.

    Args:
        image: H×W×3 uint8 (or float in [0, 1]).
        mask: optional H×W bool/0-1 foreground mask, required when ``foreground_only``.
        height: world units spanned by the image height.
        foreground_only: keep only mask pixels (the OG-Net paper keeps all pixels: False).
    Returns:
        (N, 6) float32 [x, y, 0, r, g, b] with rgb in [0, 1]; N = H·W, or the mask's count.
    """
    img = np.asarray(image)
    rgb = image_to_rgb(img)
    h, w = img.shape[:2]
    xy = pixel_plane_coords(h, w, height)
    pts = np.concatenate([xy, np.zeros((h * w, 1), np.float32), rgb.reshape(-1, 3)], axis=1)
    if foreground_only:
        if mask is None:
            raise ValueError("mask: foreground_only lifting needs a mask")
        m = np.asarray(mask)
        if m.shape != (h, w):
            raise ValueError(f"mask: expected shape {(h, w)} like the image, got {m.shape}")
        keep = m.reshape(-1) > 0
        if not keep.any():
            raise ValueError("mask: empty (no foreground pixel)")
        pts = pts[keep]
    return pts
