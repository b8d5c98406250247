"""Flat lifting: every pixel of an image as a 3D point (x, y, 0) with its colour.

This is the OG-Net paper's "2D image" input (its Table I row "2D image as (x, y, 0)"). The image
plane is scaled so that the image height spans ``height`` world units (default 1.8, a person's
height, matching the scale of the CASL template and of SMPL-based point clouds, which the
ball-query radii 0.1/0.2/0.4 of OG-Net assume), centred on the image centre, +y up.
"""

from __future__ import annotations

import numpy as np

__all__ = ["lift_flat", "pixel_plane_coords", "lift_reid_tree_flat", "image_to_rgb"]


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


def lift_reid_tree_flat(root, out_dir, reader: str = "market1501", shard_size: int = 512,
                        image_size: tuple[int, int] | None = None, progress: bool = True) -> list:
    """Flat-lift every image of a re-id tree into point-cloud shards, in one process.

    Shards ``<out_dir>/<split>-<k>.parquet`` (see :mod:`mirror3d.lifting.shards`); a shard that
    already exists is kept (re-runs resume). The Ray Data pipeline (``jobs/lift.py``) does the
    same across nodes for every lifting mode.

    Args:
        root: dataset root in the layout of ``reader`` (see :func:`mirror3d.data.readers.read_reid`).
        image_size: optional (W, H) resize before lifting.
    Returns:
        the shard paths.
    """
    import pathlib

    from PIL import Image
    from tqdm import tqdm

    from mirror3d.data.readers import read_reid
    from mirror3d.lifting.shards import write_shard

    records, _ = read_reid(reader, root)
    out = pathlib.Path(out_dir)
    paths = []
    for split in ("train", "query", "gallery"):
        recs = [r for r in records if r.split == split]
        chunks = [recs[i:i + shard_size] for i in range(0, len(recs), shard_size)]
        for k, chunk in enumerate(tqdm(chunks, desc=f"lift flat {split}", disable=not progress)):
            path = out / f"{split}-{k:05d}.parquet"
            paths.append(path)
            if path.exists():
                continue
            clouds = []
            for r in chunk:
                try:
                    with Image.open(r.path) as im:
                        im = im.convert("RGB")
                        if image_size is not None:
                            im = im.resize(tuple(image_size), Image.BICUBIC)
                        clouds.append(lift_flat(np.asarray(im)))
                except OSError as exc:
                    raise ValueError(f"image {r.path}: cannot be read ({exc})") from None
            sources = [str(pathlib.Path(r.path).resolve()) for r in chunk]  # for pictures later
            write_shard(path, clouds, [r.pid for r in chunk], [r.camid for r in chunk],
                        [split] * len(chunk), sources, "flat")
    return paths
