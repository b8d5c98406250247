"""Decoding one image (and its foreground mask) from files: the one decode path of mirror3d.

:func:`decode_image` is what the lifting job (:mod:`mirror3d.lifting.lifter`) and the Ray Data
ingestion (:mod:`mirror3d.platform.ingest`) call per record; it is pure (pillow, numpy and, for
estimated masks, OpenCV) and raises on bad data, so each caller applies its own policy: both
list the bad images as ``path<TAB>reason`` lines in a ``bad_images.txt`` of their run directory
(:func:`write_bad_list`, :func:`read_bad_list`). The layering is in docs/architecture.md.

Steps, in order:

1. the image, decoded as (H, W, 3) uint8 RGB by the one image decoder
   (:func:`mirror3d.data.images.load_rgb`: allowed formats, the pixel cap and smallest side of
   ``limits`` read from the header before decoding, every Pillow mode converted or refused by
   name, EXIF orientation applied; a missing file is ``FileNotFoundError``, a refused or
   undecodable one :class:`~mirror3d.data.images.ImageError`, a ``ValueError``);
2. the mask file, if any, binarised as ``value > mask_threshold``
   (:func:`mirror3d.data.masks.load_binary_mask`; label, grey and colour modes are accepted, a
   varying alpha is the mask, float masks are not). A mask of another size than its image is an
   error (:class:`MaskSizeError`, ``mask_mismatch="error"``, the default) or is resized, nearest,
   to the final image size (``mask_mismatch="resize"``, only when asked for);
3. the record's box, if any, enlarged by 10 % per side and cropped
   (:func:`mirror3d.data.transforms.enlarged_bbox`, as CUB's loaders do);
4. the resize to ``image_size = (W, H)``: the image with ``resample`` (bicubic by default), the
   mask with nearest (:func:`mirror3d.data.transforms.resize_pair`);
5. without a mask file, the mask source ``missing_mask``: ``"none"`` (no mask), ``"ones"`` (all
   foreground) or ``"estimate"`` (GrabCut on the decoded image,
   :func:`mirror3d.data.masks.estimate_mask`, seeded with ``seed``).
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from mirror3d.data.images import DEFAULT_LIMITS, ImageError, ImageLimits, load_rgb
from mirror3d.data.masks import estimate_mask, load_binary_mask
from mirror3d.data.transforms import crop_pair, enlarged_bbox, resize_pair
from mirror3d.utils.files import atomic_write

__all__ = ["BAD_LIST_NAME", "MISSING_MASKS", "Decoded", "MaskSizeError", "decode_image",
           "one_line", "write_bad_list", "read_bad_list"]

#: The bad-image list of a run directory: one ``path<TAB>reason`` line per bad image.
BAD_LIST_NAME = "bad_images.txt"
MISSING_MASKS = ("none", "ones", "estimate")


class MaskSizeError(ImageError):
    """A mask file of another size than its image (both sizes named, W x H): bad input, never
    resized unless ``mask_mismatch="resize"`` asks for it."""


@dataclass
class Decoded:
    """A decoded image: ``image`` (H, W, 3) uint8 RGB, ``mask`` (H, W) bool or None, and where
    the mask came from: ``"file"``, ``"estimate"``, ``"ones"`` or ``"none"``."""

    image: np.ndarray
    mask: np.ndarray | None
    mask_source: str


def decode_image(
    path: str | os.PathLike,
    mask_path: str | os.PathLike | None = None,
    *,
    mask_threshold: int = 0,
    missing_mask: Literal["none", "ones", "estimate"] = "none",
    bbox: Sequence[float] | None = None,
    image_size: tuple[int, int] | None = None,
    resample: str = "bicubic",
    seed: int = 0,
    mask_mismatch: Literal["error", "resize"] = "error",
    limits: ImageLimits | None = DEFAULT_LIMITS,
) -> Decoded:
    """Decode an image and its mask (steps in the module docstring).

    Args:
        path: the image file.
        mask_path: its mask file, or None / ``""`` for none.
        mask_threshold: mask values above it are foreground.
        missing_mask: the mask without a mask file: ``"none"``, ``"ones"`` or ``"estimate"``.
        bbox: ``(x, y, w, h)`` box to crop (enlarged by 10 % per side), or None.
        image_size: ``(W, H)`` to resize to, or None to keep the (cropped) size.
        resample: image resize filter (``nearest``, ``bilinear``, ``bicubic``).
        seed: GrabCut seed of an estimated mask.
        mask_mismatch: a mask file of another size than its image: ``"error"``
            (:class:`MaskSizeError`) or ``"resize"``.
        limits: the image's :class:`~mirror3d.data.images.ImageLimits` (pixel cap, smallest
            side); the mask gets the same pixel cap.

    Raises:
        FileNotFoundError: the image does not exist.
        ValueError: an undecodable or refused image or mask
            (:class:`~mirror3d.data.images.ImageError`, the file's path in the message; a missing
            mask file too), a mask of another size (:class:`MaskSizeError`:
            ``mask_mismatch="error"``, or with a box), a box outside the image, a failed mask
            estimation.
    """
    if missing_mask not in MISSING_MASKS:
        raise ValueError(f"missing_mask must be one of {MISSING_MASKS}, got {missing_mask!r}")
    if mask_mismatch not in ("error", "resize"):
        raise ValueError(f"mask_mismatch must be 'error' or 'resize', got {mask_mismatch!r}")
    image = load_rgb(path, limits)
    mask, source = None, "none"
    if mask_path:
        try:
            mask = load_binary_mask(mask_path, mask_threshold, limits)
        except FileNotFoundError as e:
            raise ImageError(str(e)) from None  # "mask file not found: <path>"
        source = "file"
        if mask.shape != image.shape[:2] and (mask_mismatch == "error" or bbox is not None):
            raise MaskSizeError(f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but the "
                                f"image is {image.shape[1]}x{image.shape[0]} (W x H)")
    if bbox is not None:
        left, upper, right, lower = enlarged_bbox(tuple(bbox), image.shape[1], image.shape[0])
        image, mask = crop_pair(image, mask, left, upper, right, lower)
    if image_size is not None:
        image, mask = resize_pair(image, mask, image_size, resample)
    if mask is not None and mask.shape != image.shape[:2]:  # mask_mismatch="resize"
        m = Image.fromarray(mask.astype(np.uint8) * 255)
        mask = np.asarray(m.resize((image.shape[1], image.shape[0]), Image.Resampling.NEAREST)) > 127
    if mask is None and missing_mask == "estimate":
        try:
            mask = estimate_mask(image, seed=seed)
        except ValueError as e:
            raise ValueError(f"mask estimation failed: {e}") from None
        source = "estimate"
    elif mask is None and missing_mask == "ones":
        mask, source = np.ones(image.shape[:2], bool), "ones"
    return Decoded(np.ascontiguousarray(image), mask, source)


def one_line(text: str) -> str:
    """``text`` with tabs and line breaks escaped, for one ``path<TAB>reason`` line."""
    return text.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def write_bad_list(path: str | os.PathLike, rows: Iterable[tuple[str, str]]) -> pathlib.Path:
    """Write ``(image path, reason)`` pairs as ``bad_images.txt`` lines (atomically; an empty
    file when there is none)."""
    text = "".join(f"{one_line(str(p))}\t{one_line(str(r))}\n" for p, r in rows)
    return atomic_write(path, text)


def read_bad_list(path: str | os.PathLike) -> list[tuple[str, str]]:
    """The ``(path, reason)`` pairs of a ``bad_images.txt`` (tabs / newlines come back escaped)."""
    out = []
    for line in pathlib.Path(path).read_text(encoding="utf-8").splitlines():
        if line:
            image, _, reason = line.partition("\t")
            out.append((image, reason))
    return out
