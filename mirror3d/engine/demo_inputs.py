"""Uploaded images, masks and boxes for the demo services: decoded safely, checked, refused with
one line.

Everything that arrives over the network passes through here before a model sees it
(:mod:`mirror3d.engine.demo_reconstruct`, :mod:`mirror3d.engine.demo_search`):

- :func:`decode_upload`: bytes → (H, W, 3) uint8 RGB with Pillow only (never pickle, never
  ``torch.load``), by the one image decoder of mirror3d (:mod:`mirror3d.data.images`, which the
  lifting job, the datasets and the search demo use too). In order: the byte cap; the format,
  one of :data:`UPLOAD_FORMATS` (Pillow's
  plug-ins that shell out or parse document formats, such as EPS through Ghostscript, are not
  tried); the pixel cap, read from the header before any pixel is decoded (the idea of Pillow's
  ``Image.MAX_IMAGE_PIXELS`` decompression-bomb check, with a smaller limit); the smallest side;
  the full decode (a truncated file is refused: Pillow's ``LOAD_TRUNCATED_IMAGES`` stays off);
  the EXIF orientation (``ImageOps.exif_transpose``); every mode to RGB — alpha composited on
  white, 16-bit grey scaled by 255/65535, palette through its palette, CMYK / YCbCr / LAB by
  Pillow's conversions.
- :func:`decode_mask_upload`: the same checks, then a (H, W) bool foreground.
- :func:`parse_box`: ``"x0,y0,x1,y1"`` (pixels, x1 / y1 exclusive) → a checked int tuple.
- :func:`resolve_mask`: the mask a request will use: the uploaded one, GrabCut seeded by the
  user's box, or the centred-box GrabCut estimate the lifting job uses
  (:func:`mirror3d.data.masks.estimate_mask`; Rother et al. 2004, "GrabCut"). A mask that is
  empty or covers the whole image is refused, never passed on as a blob.

Every refusal is an :class:`InputError`: a ``ValueError`` with a one-line message and the HTTP
status the REST layer answers with (400, or 413 for too large).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from mirror3d.data.images import IMAGE_FORMATS, ImageError, ImageLimits, open_image_data, to_rgb
from mirror3d.data.masks import alpha_values, binary_mask_array, estimate_mask, mask_values
from mirror3d.utils.errors import UserError

__all__ = ["InputError", "UploadLimits", "UPLOAD_FORMATS", "MASK_SOURCES", "decode_upload", "image_input", "optional_box",
           "decode_mask_upload", "parse_box", "resolve_mask", "to_rgb_array"]

#: Pillow format names an upload may have (Pillow's JPEG opener also reads the multi-picture
#: MPO JPEGs many phones write).
UPLOAD_FORMATS = IMAGE_FORMATS
#: Where :func:`resolve_mask` took the mask from.
MASK_SOURCES = ("upload", "box", "estimate")
#: GrabCut runs on a copy whose longer side is at most this (the mask is scaled back, nearest).
GRABCUT_SIDE = 512


class InputError(UserError, ValueError):
    """Bad input from a user: a one-line message and the HTTP ``status`` to answer with
    (400 bad request, 413 too large)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(" ".join(str(message).split()))
        self.status = int(status)

    @property
    def message(self) -> str:
        return str(self)


@dataclass(frozen=True)
class UploadLimits:
    """What an upload may be.

    Attributes:
        max_bytes: size of the uploaded file (10 MiB).
        max_pixels: W·H read from the header, checked before decoding (25 megapixels).
        min_side: the smaller of W, H (images only; masks are checked against their image).
    """

    max_bytes: int = 10 * 2**20
    max_pixels: int = 25_000_000
    min_side: int = 16

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_pixels", "min_side"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {v!r}")


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def _open_checked(data, what: str, limits: UploadLimits, min_side: int | None) -> Image.Image:
    """Size cap, then the one image decoder's checks (:func:`mirror3d.data.images.
    open_image_data`: format, pixel cap from the header, smallest side, full decode, EXIF
    transpose).

    Returns a loaded Pillow image in its own mode.
    """
    if isinstance(data, memoryview):
        data = data.tobytes()
    if not isinstance(data, (bytes, bytearray)):
        raise InputError(f"{what}: expected the uploaded file's bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise InputError(f"{what}: empty upload (0 bytes)")
    if len(data) > limits.max_bytes:
        raise InputError(f"{what}: the upload is {_mb(len(data))}, more than the "
                         f"{_mb(limits.max_bytes)} limit", status=413)
    image_limits = ImageLimits(max_pixels=limits.max_pixels, min_side=min_side or 1)
    try:
        return open_image_data(data, what, image_limits, min_side=min_side is not None)
    except ImageError as e:
        raise InputError(str(e), status=413 if e.too_large else 400) from None


def to_rgb_array(img: Image.Image, what: str = "image") -> np.ndarray:
    """A decoded Pillow image of any mode → (H, W, 3) uint8 RGB, by the one image decoder's
    conversion (:func:`mirror3d.data.images.to_rgb`).

    Transparency is composited on white; 16-bit grey (``I;16*``, and ``I`` holding 0..65535) is
    scaled by 255/65535; ``F`` (float) images and ``I`` images outside 0..65535 are refused;
    every other mode (1, L, P, CMYK, YCbCr, LAB, HSV) goes through Pillow's ``convert("RGB")``.

    Raises:
        InputError: a refused mode.
    """
    try:
        return to_rgb(img, what)
    except ImageError as e:
        raise InputError(str(e)) from None


def decode_upload(data: bytes, what: str = "image", limits: UploadLimits = UploadLimits()
                  ) -> np.ndarray:
    """Decode an uploaded image (the checks and conversions of the module docstring).

    Args:
        data: the file's bytes.
        what: the field name used in messages.
        limits: :class:`UploadLimits`.

    Returns:
        (H, W, 3) uint8 RGB, upright (EXIF orientation applied).

    Raises:
        InputError: 413 over the byte or pixel cap; 400 not an image of an allowed format,
            truncated or corrupt, smaller than ``limits.min_side``, a float image.
    """
    return to_rgb_array(_open_checked(data, what, limits, limits.min_side), what)


def image_input(image, limits: UploadLimits = UploadLimits()) -> np.ndarray:
    """A service's image argument: uploaded bytes (:func:`decode_upload`) or an array, checked.

    Returns:
        (H, W, 3) uint8 RGB.

    Raises:
        InputError: undecodable bytes (as :func:`decode_upload`) or an array of another shape
            or dtype.
    """
    if isinstance(image, (bytes, bytearray, memoryview)):
        image = decode_upload(image, "image", limits)
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"image: expected (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    return image


def decode_mask_upload(data: bytes, shape: tuple[int, int], limits: UploadLimits = UploadLimits(),
                       what: str = "mask") -> np.ndarray:
    """Decode an uploaded mask for an image of ``shape`` = (H, W).

    Any mode: with transparency (an RGBA brush layer, an LA or palette PNG with a transparent
    index) the foreground is alpha > 127 — unless the alpha is the same everywhere, then the
    grey values decide. Without: the stored values (palette PNGs give their indices, label masks
    their labels, colour masks their grey, :func:`mirror3d.data.masks.mask_values`) are
    foreground when > 0 for palette masks or masks whose values are all 0 / 1, else when > 127
    (so JPEG noise around 0 stays background).

    Returns:
        (H, W) bool foreground (possibly empty: :func:`resolve_mask` refuses that).

    Raises:
        InputError: as :func:`decode_upload`, and a mask of another size than the image (both
            sizes named, W x H).
    """
    img = _open_checked(data, what, limits, None)
    h, w = int(shape[0]), int(shape[1])
    if img.size != (w, h):
        raise InputError(f"{what}: {img.size[0]}x{img.size[1]} pixels but the image is {w}x{h} "
                         f"(W x H); draw the mask on the same image")
    alpha = alpha_values(img)
    if alpha is not None:
        return alpha > 127
    if img.mode in ("LA", "La", "PA", "RGBA", "RGBa") or "transparency" in img.info:
        img = img.convert("LA").convert("L") if img.mode == "La" else img.convert("RGB")
    values = mask_values(img)
    if img.mode == "P" or values.max(initial=0) <= 1:
        return values > 0
    if img.mode.startswith("I") and values.max() > 255:  # 16-bit grey: half of 65535
        return values > 32767
    return values > 127


_BOX_SPLIT = re.compile(r"[,\s]+")


def parse_box(box, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """A box the user drew → ``(x0, y0, x1, y1)`` ints, pixels of the image of ``shape`` (H, W),
    x1 / y1 exclusive.

    Accepted: a string ``"x0,y0,x1,y1"`` (commas and/or spaces) or a sequence of four numbers
    (floats are rounded). It must lie inside the image (0 ≤ x0 < x1 ≤ W, 0 ≤ y0 < y1 ≤ H), be at
    least 2×2 pixels, and leave background outside it (GrabCut learns the background there).

    Raises:
        InputError: anything else, in one line naming the box and the image size.
    """
    h, w = int(shape[0]), int(shape[1])
    raw = box
    if isinstance(box, (bytes, bytearray)):
        box = box.decode("utf-8", "replace")
    if isinstance(box, str):
        parts = [p for p in _BOX_SPLIT.split(box.strip()) if p]
        try:
            vals = [float(p) for p in parts]
        except ValueError:
            raise InputError(f"box: expected 'x0,y0,x1,y1' (pixels), got {raw!r}") from None
    elif isinstance(box, Sequence) or isinstance(box, np.ndarray):
        try:
            vals = [float(v) for v in np.asarray(box, dtype=object).ravel()]
        except (TypeError, ValueError):
            raise InputError(f"box: expected four numbers x0,y0,x1,y1, got {raw!r}") from None
    else:
        raise InputError(f"box: expected 'x0,y0,x1,y1' or four numbers, got "
                         f"{type(box).__name__}")
    if len(vals) != 4:
        raise InputError(f"box: expected four numbers x0,y0,x1,y1, got {len(vals)} ({raw!r})")
    if not all(math.isfinite(v) for v in vals):
        raise InputError(f"box: expected finite numbers, got {raw!r}")
    x0, y0, x1, y1 = (int(round(v)) for v in vals)
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise InputError(f"box: ({x0}, {y0}, {x1}, {y1}) is not inside the {w}x{h} image with "
                         f"x0 < x1 and y0 < y1 (x0,y0,x1,y1 in pixels)")
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise InputError(f"box: ({x0}, {y0}, {x1}, {y1}) is smaller than 2x2 pixels")
    if (x0, y0, x1, y1) == (0, 0, w, h):
        raise InputError(f"box: ({x0}, {y0}, {x1}, {y1}) covers the whole {w}x{h} image; draw "
                         f"it around the person, leaving some background outside")
    return x0, y0, x1, y1


def optional_box(box, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """:func:`parse_box`, with no box (None, or a blank string as an empty form field sends)
    → None."""
    if box is None or (isinstance(box, str) and not box.strip()):
        return None
    return parse_box(box, shape)


def _grabcut(image: np.ndarray, box: tuple[int, int, int, int] | None, seed: int) -> np.ndarray:
    """GrabCut (:func:`~mirror3d.data.masks.estimate_mask`) on a copy at most
    :data:`GRABCUT_SIDE` pixels long (the box scaled with it), the mask scaled back (nearest).

    Returns (H, W) bool.
    """
    h, w = image.shape[:2]
    scale = min(1.0, GRABCUT_SIDE / max(h, w))
    work, rect = image, box
    if scale < 1.0:
        sw, sh = max(4, round(w * scale)), max(4, round(h * scale))
        work = np.asarray(Image.fromarray(image).resize((sw, sh), Image.Resampling.BILINEAR))
        if box is not None:
            fx, fy = sw / w, sh / h
            x0, y0 = int(math.floor(box[0] * fx)), int(math.floor(box[1] * fy))
            x1 = max(x0 + 1, min(sw, int(math.ceil(box[2] * fx))))
            y1 = max(y0 + 1, min(sh, int(math.ceil(box[3] * fy))))
            if (x0, y0, x1, y1) == (0, 0, sw, sh):  # a thin margin vanished when scaled down
                x0, y0, x1, y1 = (1 if box[0] else 0), (1 if box[1] else 0), \
                    (sw - 1 if box[2] < w else sw), (sh - 1 if box[3] < h else sh)
            rect = (x0, y0, x1, y1)
    if min(work.shape[:2]) < 4:
        raise InputError(f"image: {w}x{h} pixels is too small to estimate a mask (GrabCut "
                         f"needs 4x4); upload a mask")
    m = estimate_mask(work, seed=seed, rect=rect)
    if m.shape != (h, w):
        m = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize(
            (w, h), Image.Resampling.NEAREST)) > 127
    return m


def resolve_mask(image: np.ndarray, mask: np.ndarray | None = None, box=None, seed: int = 0
                 ) -> tuple[np.ndarray, str]:
    """The foreground mask a request uses, and where it came from.

    Args:
        image: (H, W, 3) uint8 RGB.
        mask: (H, W) mask the user gave — bool, or values all 0/1 or all 0/255
            (:func:`mirror3d.data.masks.binary_mask_array`) —, or None. Wins over ``box``.
        box: a box for :func:`parse_box`, or None: GrabCut initialised with it.
        seed: GrabCut's RNG seed (deterministic results).

    Neither: the estimate the lifting job makes for images without a mask file (GrabCut from a
    centred box of 80 % x 90 %, :func:`mirror3d.data.masks.estimate_mask`).

    Returns:
        (mask (H, W) bool, source: ``"upload"`` | ``"box"`` | ``"estimate"``).

    Raises:
        InputError: a mask of another shape or with other values, a bad box, or a mask that is
            empty or covers the whole image (the message says how to fix it).
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"image: expected (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    if mask is not None:
        m = np.asarray(mask)
        if m.ndim == 3 and m.shape[2] == 1:
            m = m[..., 0]
        if m.shape != (h, w):
            shown = f"{m.shape[1]}x{m.shape[0]}" if m.ndim == 2 else str(m.shape)
            raise InputError(f"mask: {shown} pixels but the image is {w}x{h} (W x H)")
        try:
            fg = binary_mask_array(m, "mask")  # the API's rule: bool, 0/1 or 0/255
        except ValueError as e:
            raise InputError(str(e)) from None
        source, how = "upload", "in the uploaded mask"
    elif box is not None:
        fg = _grabcut(image, parse_box(box, (h, w)), seed)
        source, how = "box", "after GrabCut from the box"
    else:
        fg = _grabcut(image, None, seed)
        source, how = "estimate", "after GrabCut from a centred box (the automatic estimate)"
    if not fg.any():
        raise InputError(f"mask: empty (no foreground pixel) {how}; draw the person on the mask "
                         f"or give a box")
    if fg.all():
        raise InputError(f"mask: covers the whole image (no background pixel) {how}; erase the "
                         f"background on the mask or give a box")
    return np.ascontiguousarray(fg, dtype=bool), source
