"""The one image decoder of mirror3d: an image file (or uploaded bytes) → (H, W, 3) uint8 RGB.

Every path that reads pictures goes through here: the lifting job and the Ray Data ingestion
(through :func:`mirror3d.data.decode.decode_image`), the training and evaluation datasets
(:func:`mirror3d.data.masks.load_rgb`), the demo's uploads
(:mod:`mirror3d.engine.demo_inputs`) and the search demo. The layering is in
docs/architecture.md.

In order:

1. the file exists (else ``FileNotFoundError``);
2. the format, read from the content (never from the suffix), is one of :data:`IMAGE_FORMATS`
   — Pillow's plug-ins that shell out or parse document formats (EPS through Ghostscript, PDF,
   ...) are never tried;
3. the size from the header, before any pixel is decoded: at most ``limits.max_pixels`` (W·H)
   and at least ``limits.min_side`` on the smaller side (:class:`ImageLimits`); Pillow's own
   decompression-bomb guard (``Image.MAX_IMAGE_PIXELS``) stays on as a last ceiling;
4. the mode, one of :data:`SUPPORTED_MODES` (else refused by name);
5. the full decode (a truncated file is refused: Pillow's ``LOAD_TRUNCATED_IMAGES`` stays off);
6. the EXIF orientation (``ImageOps.exif_transpose``): the picture as a viewer shows it;
7. the mode to RGB (:func:`to_rgb`): transparency (``LA``, ``La``, ``PA``, ``RGBA``, ``RGBa``, or
   ``P`` / ``L`` / ``RGB`` with a transparent colour) composited on white; 16-bit grey
   (``I;16*``, and ``I`` holding 0..65535) scaled by 255/65535; ``1``, ``L``, ``P``, ``RGBX``,
   ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` through Pillow's conversions; 32-bit float ``F`` and
   ``I`` images outside 0..65535 are refused (no scale can be guessed for them).

Every refusal is an :class:`ImageError` (a ``ValueError`` and a user error) with one line naming the file and
what was expected; ``too_large`` marks the pixel-cap refusals (the demo answers them with 413).
An embedded ICC colour profile is not applied (the pixels are taken as sRGB).
"""

from __future__ import annotations

import io
import os
import pathlib
import warnings
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mirror3d.utils.errors import DataError

__all__ = ["IMAGE_FORMATS", "SUPPORTED_MODES", "DEFAULT_LIMITS", "ImageError", "ImageLimits",
           "ImageHeader", "open_image_file", "open_image_data", "read_header", "to_rgb",
           "load_rgb"]

#: Pillow format names an image file may have (Pillow's JPEG opener also reads the multi-picture
#: MPO JPEGs many phones write; PPM covers PBM / PGM / PPM).
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "PPM")

_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_PLAIN_MODES = ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")
#: Pillow modes :func:`to_rgb` converts (``I`` only with values in 0..65535).
SUPPORTED_MODES = _PLAIN_MODES + _ALPHA_MODES + _SIXTEEN_BIT + ("I",)
_FLOAT_REFUSED = ("{what}: 32-bit float images (Pillow mode 'F') are not supported, no value "
                  "range can be assumed; save it as an 8- or 16-bit image")


class ImageError(DataError):
    """An image (or mask) file that cannot be used: one line naming it and what was expected
    (a :class:`~mirror3d.utils.errors.DataError`, so a ``ValueError`` and a user error the
    command line prints as that line).

    Attributes:
        too_large: the refusal is the pixel cap (or Pillow's decompression-bomb guard).
    """

    def __init__(self, message: str, too_large: bool = False) -> None:
        super().__init__(" ".join(str(message).split()))
        self.too_large = bool(too_large)


@dataclass(frozen=True)
class ImageLimits:
    """What an image may be, checked from its header before decoding.

    Attributes:
        max_pixels: the largest W·H (25 megapixels: a 6000×4000 photo passes, a 6000×6000 one
            does not).
        min_side: the smallest allowed min(W, H) (8 pixels: a 1×1 image is no picture of a
            person).
    """

    max_pixels: int = 25_000_000
    min_side: int = 8

    def __post_init__(self) -> None:
        for name in ("max_pixels", "min_side"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {v!r}")


#: The limits every decode path applies unless given others.
DEFAULT_LIMITS = ImageLimits()


@dataclass(frozen=True)
class ImageHeader:
    """What :func:`read_header` learns without decoding: the displayed size (EXIF orientation
    applied), the stored Pillow mode and the format."""

    width: int
    height: int
    mode: str
    format: str


def _orientation_swaps(img: Image.Image) -> bool:
    """True when the EXIF orientation (5..8) turns the picture by 90° for display."""
    try:
        return img.getexif().get(0x0112) in (5, 6, 7, 8)
    except Exception:  # a broken EXIF block: exif_transpose decides at decode time
        return False


def _open_header(source: str | os.PathLike | BinaryIO, what: str, limits: ImageLimits | None,
                 min_side: bool) -> Image.Image:
    """Steps 2-4 of the module docstring: an opened, not yet decoded Pillow image.

    ``limits`` None skips the size checks; ``min_side`` False skips only the smallest side
    (masks are compared with their image instead).
    """
    Image.init()  # register every plug-in, so that `formats` names only known ones (idempotent)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own cap below
            img = Image.open(source, formats=list(IMAGE_FORMATS))
    except Image.DecompressionBombError:
        raise ImageError(f"{what}: the header declares more pixels than Pillow's "
                         f"decompression-bomb limit ({2 * (Image.MAX_IMAGE_PIXELS or 0):,})",
                         too_large=True) from None
    except UnidentifiedImageError:
        raise ImageError(f"{what}: cannot decode, not an image Pillow can read as one of "
                         f"{', '.join(IMAGE_FORMATS)}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise ImageError(f"{what}: cannot decode, not an image Pillow can read as one of "
                         f"{', '.join(IMAGE_FORMATS)} ({reason})") from None
    try:
        if limits is not None:
            w, h = img.size
            if w * h > limits.max_pixels:
                raise ImageError(f"{what}: {w}x{h} pixels, more than the "
                                 f"{limits.max_pixels:,}-pixel limit (max_pixels)", too_large=True)
            if min_side and min(w, h) < limits.min_side:
                raise ImageError(f"{what}: {w}x{h} pixels, smaller than the "
                                 f"{limits.min_side}-pixel minimum side (min_side)")
        if img.mode == "F":
            raise ImageError(_FLOAT_REFUSED.format(what=what))
        if img.mode not in SUPPORTED_MODES:
            raise ImageError(f"{what}: Pillow mode {img.mode!r} is not supported (expected one "
                             f"of {', '.join(SUPPORTED_MODES)})")
    except ImageError:
        img.close()
        raise
    return img


def _decode(img: Image.Image, what: str) -> Image.Image:
    """Steps 5-6: the full decode and the EXIF orientation."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
            out = ImageOps.exif_transpose(img)
    except Image.DecompressionBombError:
        img.close()
        raise ImageError(f"{what}: too many pixels to decode (Pillow's decompression-bomb "
                         f"limit)", too_large=True) from None
    except (OSError, SyntaxError, ValueError, EOFError, TypeError) as err:
        img.close()
        reason = " ".join(str(err).split()) or type(err).__name__
        raise ImageError(f"{what}: cannot decode, the {img.format or 'image'} file is "
                         f"truncated or corrupt ({reason})") from None
    if out is not img:
        img.close()
    return out


def _name(path: str | os.PathLike) -> str:
    return f"image {path}"


def open_image_file(path: str | os.PathLike, limits: ImageLimits | None = DEFAULT_LIMITS,
                    what: str | None = None, min_side: bool = True) -> Image.Image:
    """Open, check and fully decode an image file, upright (EXIF orientation applied), in its
    own Pillow mode (steps 1-6 of the module docstring).

    Args:
        path: the file.
        limits: :class:`ImageLimits`; None skips the size checks.
        what: how messages name it (default ``"image <path>"``).
        min_side: False skips the smallest-side check (masks).

    Raises:
        FileNotFoundError: no such file.
        ImageError: any other refusal, naming the file.
    """
    path = pathlib.Path(path)
    what = what or _name(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what.split(' ', 1)[0]} file not found: {path}")
    with open(path, "rb") as fh:
        img = _open_header(fh, what, limits, min_side)
        return _decode(img, what)


def open_image_data(data: bytes | bytearray | memoryview, what: str = "image",
                    limits: ImageLimits | None = DEFAULT_LIMITS, min_side: bool = True
                    ) -> Image.Image:
    """:func:`open_image_file` for bytes in memory (an upload): a decoded, upright Pillow image.

    Raises:
        ImageError: naming ``what``.
    """
    return _decode(_open_header(io.BytesIO(bytes(data)), what, limits, min_side), what)


def read_header(path: str | os.PathLike, limits: ImageLimits | None = DEFAULT_LIMITS,
                what: str | None = None, min_side: bool = True) -> ImageHeader:
    """The cheap check of an image file, without decoding its pixels (for checking a whole
    dataset before any work starts): format, pixel cap, smallest side and mode as
    :func:`open_image_file` checks them. A truncated file is found only when decoding.

    Returns:
        :class:`ImageHeader` with the displayed width and height (EXIF orientation applied).

    Raises:
        FileNotFoundError, ImageError: as :func:`open_image_file`.
    """
    path = pathlib.Path(path)
    what = what or _name(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what.split(' ', 1)[0]} file not found: {path}")
    with open(path, "rb") as fh, _open_header(fh, what, limits, min_side) as img:
        w, h = img.size
        if _orientation_swaps(img):
            w, h = h, w
        return ImageHeader(int(w), int(h), img.mode, str(img.format))


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in _ALPHA_MODES or (
        img.mode in ("P", "L", "RGB", "1") and "transparency" in img.info)


def to_rgb(img: Image.Image, what: str = "image") -> np.ndarray:
    """A decoded Pillow image of any supported mode → (H, W, 3) uint8 RGB (step 7 of the module
    docstring).

    Raises:
        ImageError: ``F`` (float) images, ``I`` images with values outside 0..65535, modes not
            in :data:`SUPPORTED_MODES`; naming ``what``.
    """
    mode = img.mode
    if mode == "F":
        raise ImageError(_FLOAT_REFUSED.format(what=what))
    if mode in _SIXTEEN_BIT or mode == "I":
        values = np.asarray(img)
        if mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageError(f"{what}: 32-bit integer image (Pillow mode 'I') with values in "
                             f"[{values.min()}, {values.max()}], expected 0..65535 (16-bit grey)")
        grey = values.astype(np.float64) * (255.0 / 65535.0)
        return np.repeat(np.round(grey).astype(np.uint8)[..., None], 3, axis=2)
    if mode not in SUPPORTED_MODES:
        raise ImageError(f"{what}: Pillow mode {mode!r} is not supported (expected one of "
                         f"{', '.join(SUPPORTED_MODES)})")
    if _has_alpha(img):
        if mode == "La":  # premultiplied grey + alpha: Pillow converts it only to LA
            img = img.convert("LA")
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.array(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.uint8)
    return np.array(img.convert("RGB"), dtype=np.uint8)


def load_rgb(path: str | os.PathLike, limits: ImageLimits | None = DEFAULT_LIMITS) -> np.ndarray:
    """Decode an image file (every step of the module docstring).

    Returns:
        image: (H, W, 3) uint8 RGB, upright.

    Raises:
        FileNotFoundError: no such file.
        ImageError: a refused or undecodable file, naming it.
    """
    what = _name(path)
    with open_image_file(path, limits, what) as img:
        return to_rgb(img, what)
