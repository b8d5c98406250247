"""Uploads for the demo (mirror3d/engine/demo_inputs.py): the bad-input matrix of issue #14
refused with a status and one line, every image mode decoded against a hand-made expectation,
masks and boxes."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from mirror3d.engine.demo_inputs import (InputError, UploadLimits, decode_mask_upload,
                                         decode_upload, parse_box, resolve_mask)


def _png(arr_or_img, **kw) -> bytes:
    img = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(arr_or_img)
    buf = io.BytesIO()
    img.save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


def _noise(h=48, w=32, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_constant_png(side: int = 10_000) -> bytes:
    """A valid side×side grey PNG of zeros, built row by row (≈100 KB, no side² array)."""
    comp = zlib.compressobj(1)
    row = b"\x00" * (side + 1)  # filter byte + pixels
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat)
            + _chunk(b"IEND", b""))


def _truncated_jpeg() -> bytes:
    data = _png(_noise(64, 64), format="JPEG", quality=90)
    return data[: len(data) // 2]


def _one_line(e: InputError) -> str:
    msg = str(e)
    assert msg and "\n" not in msg and msg == msg.strip()
    return msg


# ------------------------------------------------------------------------ the bad-input matrix
@pytest.mark.parametrize("data, status, words", [
    (b"definitely not an image", 400, "not an image"),
    (b"", 400, "empty"),
    (_truncated_jpeg(), 400, "truncated"),
    (_png(np.zeros((1, 1, 3), np.uint8)), 400, "1x1 pixels, smaller than the 16-pixel"),
    (_png(np.zeros((200, 8, 3), np.uint8)), 400, "8x200"),
    (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", 400, "not an image"),
], ids=["non-image", "empty", "truncated-jpeg", "1x1", "too-thin", "eps-not-tried"])
def test_bad_images_are_refused_with_a_status_and_one_line(data, status, words):
    with pytest.raises(InputError) as ei:
        decode_upload(data)
    assert ei.value.status == status and isinstance(ei.value, ValueError)
    assert words in _one_line(ei.value)


def test_a_10000x10000_image_is_refused_from_its_header_before_decoding(monkeypatch):
    data = huge_constant_png()
    assert len(data) < 2**20  # small file, 10^8 pixels
    with pytest.warns(Image.DecompressionBombWarning), Image.open(io.BytesIO(data)) as im:
        assert im.size == (10_000, 10_000)  # a real PNG of that size (Pillow warns, too)

    def no_decode(self):  # pragma: no cover - called only if the cap is checked too late
        raise AssertionError("decoded before the pixel cap was checked")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    with pytest.raises(InputError) as ei:
        decode_upload(data)
    assert ei.value.status == 413
    assert "10000x10000 pixels, more than the 25,000,000-pixel limit" in _one_line(ei.value)


def test_byte_cap_is_413_and_limits_are_configurable():
    data = _png(_noise())
    with pytest.raises(InputError) as ei:
        decode_upload(data, limits=UploadLimits(max_bytes=100))
    assert ei.value.status == 413 and "limit" in _one_line(ei.value)
    with pytest.raises(InputError, match="pixel limit") as ei:
        decode_upload(data, limits=UploadLimits(max_pixels=100))
    assert ei.value.status == 413
    assert decode_upload(data, limits=UploadLimits(min_side=4)).shape == (48, 32, 3)
    with pytest.raises(ValueError, match="max_bytes"):
        UploadLimits(max_bytes=0)


def test_empty_wrong_size_mask_and_bad_boxes():
    img = _noise(40, 30)
    with pytest.raises(InputError, match="mask: empty .* draw the person on the mask or give a "
                                         "box") as ei:
        resolve_mask(img, np.zeros((40, 30), bool))
    assert ei.value.status == 400 and _one_line(ei.value)
    with pytest.raises(InputError, match="covers the whole image"):
        resolve_mask(img, np.ones((40, 30), np.uint8) * 255)
    # an uploaded mask of another size names both sizes (W x H)
    with pytest.raises(InputError, match=r"mask: 20x10 pixels but the image is 30x40") as ei:
        decode_mask_upload(_png(np.zeros((10, 20), np.uint8)), (40, 30))
    _one_line(ei.value)
    with pytest.raises(InputError, match=r"mask: 31x40 pixels but the image is 30x40"):
        resolve_mask(img, np.ones((40, 31), bool))
    # an estimate on a uniform image finds nobody
    with pytest.raises(InputError, match="mask: empty .*automatic estimate"):
        resolve_mask(np.full((40, 30, 3), 128, np.uint8))
    for box, words in [("1,2,3", "four numbers"), ("a,b,c,d", "expected 'x0,y0,x1,y1'"),
                       ((0, 0, 31, 10), "not inside the 30x40 image"),
                       ("5,5,5,9", "not inside"), ((-1, 0, 4, 4), "not inside"),
                       ("0,0,30,40", "covers the whole 30x40 image"),
                       ((1, 1, 2, 9), "smaller than 2x2"), (("nan", 0, 4, 4), "finite"),
                       (3.5, "expected 'x0,y0,x1,y1' or four numbers")]:
        with pytest.raises(InputError, match=words) as ei:
            parse_box(box, (40, 30))
        assert ei.value.status == 400 and _one_line(ei.value)


def test_parse_box_forms():
    assert parse_box("1,2,10,20", (40, 30)) == (1, 2, 10, 20)
    assert parse_box(" 1 2, 10 20 ", (40, 30)) == (1, 2, 10, 20)
    assert parse_box([1.4, 2.6, 10, 20], (40, 30)) == (1, 3, 10, 20)
    assert parse_box(np.array([0, 0, 30, 39]), (40, 30)) == (0, 0, 30, 39)


# ------------------------------------------------------------------------ modes
def test_rgb_and_grey_decode_exactly():
    arr = _noise()
    assert np.array_equal(decode_upload(_png(arr)), arr)
    grey = arr[..., 0]
    out = decode_upload(_png(Image.fromarray(grey, "L")))
    assert np.array_equal(out, np.repeat(grey[..., None], 3, 2))


def test_16bit_grey_is_scaled_not_clipped():
    v = np.arange(48 * 32, dtype=np.uint16).reshape(48, 32) * 42  # 0 .. 64470
    img = Image.fromarray(v)
    assert img.mode == "I;16"
    out = decode_upload(_png(img))
    want = np.round(v.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert np.array_equal(out, np.repeat(want[..., None], 3, 2))
    assert out.max() > 200  # clipping would have saturated almost everything at 255


def test_palette_goes_through_its_palette():
    idx = (np.arange(48 * 32).reshape(48, 32) % 4).astype(np.uint8)
    pal = [10, 20, 30, 200, 0, 0, 0, 200, 0, 0, 0, 200]
    img = Image.fromarray(idx, "L").convert("P")
    img.putpalette(pal + [0] * (768 - len(pal)))
    img.frombytes(idx.tobytes())
    out = decode_upload(_png(img))
    assert np.array_equal(out, np.array(pal, np.uint8).reshape(4, 3)[idx])


def test_rgba_is_composited_on_white():
    rgba = np.zeros((48, 32, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:, :16, 3] = 255   # opaque red
    rgba[:, 16:, 3] = 0     # fully transparent: white, whatever the colour
    rgba[:8, :, 3] = 128    # half: red over white
    out = decode_upload(_png(Image.fromarray(rgba, "RGBA"))).astype(int)
    assert (out[8:, :16] == [255, 0, 0]).all()
    assert (out[8:, 16:] == [255, 255, 255]).all()
    half = round(255 * (1 - 128 / 255))  # 127: the white showing through
    assert (out[:8, :, 0] == 255).all() and (abs(out[:8, :, 1:] - half) <= 1).all()
    # a palette PNG with a transparent index
    p = Image.fromarray(np.zeros((48, 32), np.uint8), "L").convert("P")
    p.putpalette([0, 0, 0] * 256)
    out = decode_upload(_png(p, transparency=0))
    assert (out == 255).all()


def test_cmyk_is_converted():
    cmyk = np.zeros((48, 32, 4), np.uint8)
    cmyk[..., 1:3] = 255               # magenta + yellow = red
    cmyk[24:, :, :] = [0, 0, 0, 255]   # key only = black
    out = decode_upload(_png(Image.fromarray(cmyk, "CMYK"), format="TIFF"))
    assert (out[:24] == [255, 0, 0]).all() and (out[24:] == 0).all()
    jpeg = decode_upload(_png(Image.fromarray(cmyk, "CMYK"), format="JPEG", quality=95))
    assert jpeg.shape == (48, 32, 3)
    assert np.abs(jpeg[4:20, 4:28].astype(int) - [255, 0, 0]).max() < 40


def test_exif_orientation_is_applied():
    arr = _noise(40, 20)                       # H 40, W 20 as stored
    exif = Image.Exif()
    exif[0x0112] = 6                           # "rotate 90° clockwise to display"
    out = decode_upload(_png(Image.fromarray(arr), exif=exif))
    assert np.array_equal(out, np.rot90(arr, k=-1))  # displayed: H 20, W 40
    jpeg = decode_upload(_png(Image.fromarray(arr), format="JPEG", exif=exif, quality=95))
    assert jpeg.shape == (20, 40, 3)


# ------------------------------------------------------------------------ masks
def test_mask_uploads_of_every_kind():
    h, w = 40, 30
    truth = np.zeros((h, w), bool)
    truth[5:30, 8:20] = True
    m = decode_mask_upload(_png((truth * 255).astype(np.uint8)), (h, w))
    assert np.array_equal(m, truth)
    m = decode_mask_upload(_png(truth.astype(np.uint8)), (h, w))       # 0/1 values
    assert np.array_equal(m, truth)
    layer = np.zeros((h, w, 4), np.uint8)                              # a brush layer
    layer[truth] = [255, 0, 255, 255]
    assert np.array_equal(decode_mask_upload(_png(Image.fromarray(layer, "RGBA")), (h, w)), truth)
    labels = Image.fromarray(truth.astype(np.uint8) * 3, "L").convert("P")  # label 3 = person
    labels.putpalette([0, 0, 0] * 256)
    labels.frombytes((truth.astype(np.uint8) * 3).tobytes())
    assert np.array_equal(decode_mask_upload(_png(labels), (h, w)), truth)
    noisy = decode_mask_upload(_png((truth * 255).astype(np.uint8), format="JPEG", quality=80),
                               (h, w))
    assert (noisy != truth).mean() < 0.02
    with pytest.raises(InputError, match="mask: cannot decode, not an image"):
        decode_mask_upload(b"nope", (h, w))


def test_resolve_mask_sources():
    rng = np.random.default_rng(0)
    img = np.full((80, 60, 3), 220, np.uint8) + rng.integers(0, 10, (80, 60, 3), dtype=np.uint8)
    img[15:70, 20:40] = [30, 60, 150]                          # the "person"
    m, src = resolve_mask(img, (img[..., 0] < 100).astype(np.uint8))
    assert src == "upload" and m.dtype == bool and m[40, 30] and not m[2, 2]
    m, src = resolve_mask(img, box="15,10,45,75")
    assert src == "box" and m[40, 30] and not m[:, :15].any() and not m[:, 45:].any()
    m, src = resolve_mask(img)
    assert src == "estimate" and m[40, 30] and m.mean() < 0.5
    assert np.array_equal(resolve_mask(img, seed=3)[0], resolve_mask(img, seed=3)[0])
    # a large photo: GrabCut runs on a smaller copy, the mask comes back at full size
    big = np.asarray(Image.fromarray(img).resize((600, 800), Image.NEAREST))
    m, _ = resolve_mask(big, box=(150, 100, 450, 750))
    assert m.shape == (800, 600) and m[400, 300] and not m[:, :150].any()
