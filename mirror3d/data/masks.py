"""Foreground masks: loading, binarisation, foreground ratio, ratio file names, estimation.

Conventions (the mask files of CASL's datasets as the authors' public code prepares and reads them;
CASL: Zheng et al. 2022, "3D Magic Mirror", arXiv:2204.13096):

- A mask pixel is foreground when its value is ``> threshold``: 0 for Market-HQ (``seg_hmr``)
  and ATR (any parsing label > 0), 160 for CUB's soft segmentations.
- Prepared mask files carry their foreground fraction with two decimals in the name,
  ``<stem>_<ratio>.png`` (e.g. ``0002_c1s1_000451_03.jpg_0.45.png``).
- Training sets keep a sample only when ``lo < ratio < hi`` (strict on both sides).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
import torch
from PIL import Image

from mirror3d.data.images import DEFAULT_LIMITS, ImageError, ImageLimits, open_image_file, to_rgb
from mirror3d.data.images import load_rgb as _load_rgb

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm"})

_RATIO_NAME = re.compile(r"_(\d+(?:\.\d+)?)\.png$", re.IGNORECASE)

R = TypeVar("R")


def is_image_file(path: str | Path) -> bool:
    """True when the file suffix (case-insensitive) is one of :data:`IMAGE_SUFFIXES`."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def open_image(path: str | Path, mode: str | None = None,
               limits: ImageLimits | None = DEFAULT_LIMITS) -> Image.Image:
    """Open, check and fully decode an image file, upright, with the one image decoder
    (:func:`mirror3d.data.images.open_image_file`: allowed formats, pixel cap and smallest side
    from the header, EXIF orientation).

    Args:
        path: the file.
        mode: None keeps the file's own Pillow mode; ``"RGB"`` converts as
            :func:`mirror3d.data.images.to_rgb` does (alpha on white, 16-bit grey scaled); any
            other mode by Pillow's ``convert``.
        limits: :class:`~mirror3d.data.images.ImageLimits` (None: no size checks).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: (:class:`~mirror3d.data.images.ImageError`) the file is refused or cannot be
            decoded (corrupt or not an image); names the path.
    """
    img = open_image_file(path, limits)
    if mode is None:
        return img
    with img:
        if mode == "RGB":
            return Image.fromarray(to_rgb(img, f"image {path}"))
        return img.convert(mode)


def load_rgb(path: str | Path, limits: ImageLimits | None = DEFAULT_LIMITS) -> np.ndarray:
    """Load an image file as RGB with the one image decoder
    (:func:`mirror3d.data.images.load_rgb`).

    Returns:
        image: (H, W, 3) uint8.
    """
    return _load_rgb(path, limits)


def mask_values(img: Image.Image) -> np.ndarray:
    """Raw mask values of a PIL image as a 2-D array.

    Label images (modes ``P``, ``L``, ``I``, ``I;16*``, ``1``) give their stored values, so a
    palette PNG yields class indices, not palette colours, and a 16-bit label mask its labels.
    Colour masks are converted to grey (``L``, as the reference loaders do); an alpha channel is
    dropped (:func:`load_binary_mask` reads a varying alpha as the mask instead).

    Returns:
        values: (H, W) integer array.
    """
    if img.mode in ("P", "L", "I", "I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(img).astype(np.int64)
    if img.mode == "1":
        return np.asarray(img).astype(np.int64) * 255
    if img.mode == "F":
        raise ValueError(f"float ('F' mode) masks are not supported: {getattr(img, 'filename', img)}")
    if img.mode == "La":
        img = img.convert("LA")
    return np.asarray(img.convert("RGB").convert("L")).astype(np.int64)


def alpha_values(img: Image.Image) -> np.ndarray | None:
    """The (H, W) alpha of a mask image with transparency that is not the same everywhere (a
    brush layer or a cut-out), else None."""
    has_alpha = img.mode in ("LA", "La", "PA", "RGBA", "RGBa") or (
        img.mode in ("P", "L", "RGB") and "transparency" in img.info)
    if not has_alpha:
        return None
    src = img.convert("LA") if img.mode == "La" else img
    alpha = np.asarray(src.convert("RGBA"))[..., 3]
    return alpha.astype(np.int64) if alpha.min() != alpha.max() else None


def load_binary_mask(path: str | Path, threshold: int = 0,
                     limits: ImageLimits | None = DEFAULT_LIMITS) -> np.ndarray:
    """Load a mask file and binarise it as ``value > threshold``.

    The file goes through the one image decoder's checks (format, pixel cap, full decode, EXIF
    orientation; not the smallest side: a mask is compared with its image). The values are
    :func:`mask_values` (labels, or the grey of a colour mask), or the alpha channel when the
    mask has a transparency that varies (:func:`alpha_values`).

    Args:
        path: mask file (PNG usually).
        threshold: 0 for Market-HQ / ATR (any label > 0 is foreground), 160 for CUB.
        limits: :class:`~mirror3d.data.images.ImageLimits` (``max_pixels`` is used).

    Returns:
        mask: (H, W) bool.

    Raises:
        FileNotFoundError: no such file.
        ValueError: an undecodable or refused file, a float mask; naming the path.
    """
    if not isinstance(threshold, (int, np.integer)) or not 0 <= threshold < 255:
        raise ValueError(f"threshold must be an int in [0, 255), got {threshold!r}")
    with open_image_file(path, limits, f"mask {path}", min_side=False) as img:
        try:
            values = alpha_values(img)
            if values is None:
                values = mask_values(img)
        except ValueError as err:
            raise ImageError(f"mask {path}: cannot read it as a mask: {err}") from err
    return values > threshold


def foreground_ratio(mask: np.ndarray | torch.Tensor) -> float:
    """Fraction of foreground pixels of a binary mask.

    Args:
        mask: (H, W) bool or {0, 1}-valued array / tensor.

    Returns:
        ratio in [0, 1].
    """
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.size == 0:
        raise ValueError(f"mask must be a non-empty (H, W) array, got shape {mask.shape}")
    if mask.dtype != bool:
        if not np.isin(mask, (0, 1)).all():
            raise ValueError("mask must be boolean or contain only 0 and 1")
        mask = mask.astype(bool)
    return float(mask.mean())


def binary_mask_array(mask: np.ndarray | torch.Tensor, name: str = "mask") -> np.ndarray:
    """The foreground of an in-memory mask given to the API: a bool array, or numbers (integer or
    float) that are all 0/1 or all 0/255 — a ``uint8`` 0/1 mask is a mask, not "empty"; soft or
    other-valued masks are refused (threshold them first), never guessed.

    Args:
        mask: (H, W) array or tensor.
        name: how messages name it.

    Returns:
        (H, W) bool (same shape as given).

    Raises:
        ValueError: naming ``name``: NaN / inf, other values, a dtype that is not bool or numeric.
    """
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    m = np.asarray(mask)
    if m.dtype == np.bool_:
        return m
    if not (np.issubdtype(m.dtype, np.integer) or np.issubdtype(m.dtype, np.floating)):
        raise ValueError(f"{name}: expected a bool, integer or float mask, got dtype {m.dtype}")
    if np.issubdtype(m.dtype, np.floating) and not np.isfinite(m).all():
        raise ValueError(f"{name}: expected finite values, got NaN/inf")
    values = np.unique(m)
    if np.isin(values, (0, 1)).all():
        return m == 1
    if np.isin(values, (0, 255)).all():
        return m == 255
    shown = ", ".join(f"{v:g}" for v in values[:4]) + (", ..." if len(values) > 4 else "")
    raise ValueError(f"{name}: expected a bool mask or values 0/1 or 0/255, got values "
                     f"{{{shown}}} ({len(values)} distinct); threshold it first (e.g. mask > 127)")


def ratio_from_filename(name: str | Path) -> float:
    """Foreground ratio written in a prepared mask name ``<stem>_<ratio>.png``.

    ``"0002_c1s1_000451_03.jpg_0.45.png"`` -> 0.45. (The reference reads ``name[-8:-4]``,
    which is the same for the two-decimal ratios it writes.)

    Raises:
        ValueError: the name does not end in ``_<ratio>.png`` with a ratio in [0, 1].
    """
    base = Path(name).name
    match = _RATIO_NAME.search(base)
    if match is None:
        raise ValueError(f"mask name {base!r} does not match the pattern '<stem>_<ratio>.png' "
                         "(e.g. 'img.jpg_0.45.png')")
    ratio = float(match.group(1))
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio {ratio} in mask name {base!r} is outside [0, 1]")
    return ratio


def strip_ratio_suffix(name: str) -> str:
    """``"dataset10k_1848_0.20.png"`` -> ``"dataset10k_1848"``; ValueError if there is none."""
    base = Path(name).name
    match = _RATIO_NAME.search(base)
    if match is None:
        raise ValueError(f"mask name {base!r} does not match the pattern '<stem>_<ratio>.png'")
    return base[: match.start()]


def mask_name_with_ratio(stem: str, ratio: float) -> str:
    """``mask_name_with_ratio("img.jpg", 0.4512)`` -> ``"img.jpg_0.45.png"`` (two decimals)."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    return f"{stem}_{ratio:.2f}.png"


def keep_by_ratio(records: Iterable[R], lo: float, hi: float) -> list[R]:
    """Records whose ``fg_ratio`` satisfies ``lo < fg_ratio < hi`` (strict, as the reference).

    Raises:
        ValueError: ``lo >= hi``, or a record has ``fg_ratio is None`` (compute it first).
    """
    if not lo < hi:
        raise ValueError(f"ratio range needs lo < hi, got ({lo}, {hi})")
    kept = []
    for rec in records:
        ratio = getattr(rec, "fg_ratio", None)
        if ratio is None:
            name = getattr(rec, "image_path", rec)
            raise ValueError(f"record {name} has no fg_ratio; compute it before filtering by ratio")
        if lo < ratio < hi:
            kept.append(rec)
    return kept


def check_nonempty(mask: np.ndarray, name: str | Path) -> None:
    """Raise ValueError naming ``name`` when ``mask`` (H, W) has no foreground pixel."""
    if not np.asarray(mask).any():
        raise ValueError(f"mask of {name} is empty (no foreground pixel); it cannot be a training sample")


def estimate_mask(
    image: np.ndarray | Image.Image,
    box_fraction: tuple[float, float] = (0.8, 0.9),
    iterations: int = 5,
    seed: int = 0,
    rect: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """Estimate a foreground mask with OpenCV GrabCut initialised from a centred box (or from
    the box ``rect`` a user drew).

    The box is centred, ``box_fraction[0]`` of the width and ``box_fraction[1]`` of the height
    (defaults 80 % x 90 %: a 10 % margin left/right and 5 % top/bottom, at least 1 px).
    Pixels outside the box are fixed background; GrabCut then runs ``iterations`` rounds of
    GMM fitting (5 components each for foreground and background) and graph cuts, and the
    pixels labelled foreground or probably-foreground form the mask. GrabCut's k-means
    initialisation draws from OpenCV's global RNG, which is reseeded with ``seed``
    (``cv2.setRNGSeed``) before each call, so the result is deterministic.

    Args:
        image: (H, W, 3) uint8 RGB array or a PIL image; H, W >= 4.
        box_fraction: (width, height) fractions of the initial box, each in (0, 1].
        iterations: GrabCut iterations (>= 1).
        seed: OpenCV RNG seed.
        rect: ``(x0, y0, x1, y1)`` pixel box (x1, y1 exclusive) used instead of the centred
            ``box_fraction`` box; it must lie inside the image and leave background outside it.

    Returns:
        mask: (H, W) bool. It can be empty (e.g. a uniform image); callers that train on it
        check with :func:`check_nonempty`.
    """
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be an (H, W, 3) uint8 RGB array, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    if h < 4 or w < 4:
        raise ValueError(f"image must be at least 4x4 pixels for GrabCut, got {w}x{h}")
    fw, fh = box_fraction
    if not (0.0 < fw <= 1.0 and 0.0 < fh <= 1.0):
        raise ValueError(f"box_fraction must be in (0, 1], got {box_fraction}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if rect is None:
        mx = max(1, int(round(w * (1.0 - fw) / 2.0)))
        my = max(1, int(round(h * (1.0 - fh) / 2.0)))
        box = (mx, my, w - 2 * mx, h - 2 * my)
    else:
        x0, y0, x1, y1 = (int(v) for v in rect)
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            raise ValueError(f"rect: expected 0 <= x0 < x1 <= {w} and 0 <= y0 < y1 <= {h}, "
                             f"got {tuple(rect)}")
        if (x1 - x0) * (y1 - y0) == w * h:
            raise ValueError(f"rect: {tuple(rect)} covers the whole {w}x{h} image; GrabCut needs "
                             f"background outside the box")
        box = (x0, y0, x1 - x0, y1 - y0)
    labels = np.zeros((h, w), np.uint8)
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    cv2.setRNGSeed(int(seed))
    cv2.grabCut(bgr, labels, box, bgd, fgd, int(iterations), cv2.GC_INIT_WITH_RECT)
    return (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
