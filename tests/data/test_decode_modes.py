"""The one image decoder (mirror3d/data/images.py): every Pillow mode decoded against a hand-made
expectation or refused by name, EXIF orientation, the pixel cap read from the header before any
pixel is decoded, the smallest side, formats that are never tried, masks with alpha, and the same
pixels on every path (lifting / ingestion, datasets, demo uploads)."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from mirror3d.data.decode import decode_image
from mirror3d.data.images import (DEFAULT_LIMITS, SUPPORTED_MODES, ImageError, ImageLimits,
                                  load_rgb, read_header, to_rgb)
from mirror3d.data.masks import load_binary_mask
from mirror3d.data.masks import load_rgb as masks_load_rgb
from mirror3d.engine.demo_inputs import UploadLimits, decode_upload


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def _one_line(err: Exception) -> str:
    msg = str(err)
    assert msg and "\n" not in msg and msg == msg.strip()
    return msg


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_bytes(width: int, height: int, bit_depth: int, colour_type: int, rows) -> bytes:
    """A PNG written chunk by chunk (``rows`` yields each row's bytes without the filter byte),
    so that a huge image never exists as an array."""
    comp = zlib.compressobj(1)
    idat = b"".join(comp.compress(b"\x00" + row) for row in rows) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat)
            + _chunk(b"IEND", b""))


# ------------------------------------------------------------------------ every mode
@pytest.mark.parametrize("mode", Image.MODES)
def test_every_pillow_mode_is_converted_or_refused_by_name(mode):
    img = Image.new(mode, (8, 12))
    if mode == "F":
        with pytest.raises(ImageError, match="'F'") as ei:
            to_rgb(img, "image x.tif")
        assert _one_line(ei.value).startswith("image x.tif: 32-bit float")
        return
    assert mode in SUPPORTED_MODES
    out = to_rgb(img)
    assert out.shape == (12, 8, 3) and out.dtype == np.uint8


def test_16bit_grey_png_is_scaled_not_clipped_to_white(tmp_path):
    v = (np.arange(24 * 16, dtype=np.uint16).reshape(24, 16) * 170)  # 0 .. 65110
    path = _save(Image.fromarray(v), tmp_path / "grey16.png")
    assert Image.open(path).mode == "I;16"
    out = load_rgb(path)
    want = np.round(v.astype(np.float64) * 255 / 65535).astype(np.uint8)
    np.testing.assert_array_equal(out, np.repeat(want[..., None], 3, axis=2))
    assert (out == 255).mean() < 0.01  # Pillow's convert("RGB") clips almost all of it to 255
    assert (np.asarray(Image.open(path).convert("RGB")) == 255).mean() > 0.9


def test_32bit_integer_tiff_in_16bit_range_is_scaled_and_outside_refused(tmp_path):
    ok = Image.new("I", (8, 8))
    ok.putdata([0, 65535, 32768, 1000] * 16)
    out = load_rgb(_save(ok, tmp_path / "i.tif"))
    assert out[0, :4, 0].tolist() == [0, 255, 128, 4]
    bad = Image.new("I", (8, 8))
    bad.putdata([0, 70000] * 32)
    with pytest.raises(ImageError, match=r"i32.tif: 32-bit integer image .*\[0, 70000\]"):
        load_rgb(_save(bad, tmp_path / "i32.tif"))


def test_float_tiff_is_refused_by_name_before_decoding(tmp_path):
    path = _save(Image.new("F", (8, 8), 0.5), tmp_path / "f.tif")
    with pytest.raises(ImageError, match=r"f.tif: 32-bit float images \(Pillow mode 'F'\)"):
        load_rgb(path)
    with pytest.raises(ImageError, match="'F'"):
        read_header(path)


def test_48bit_colour_png_keeps_its_top_8_bits(tmp_path):
    rgb16 = np.zeros((8, 8, 3), np.uint16)
    rgb16[..., 0], rgb16[..., 1], rgb16[..., 2] = 65535, 32768, 256
    data = _png_bytes(8, 8, 16, 2, (rgb16[r].astype(">u2").tobytes() for r in range(8)))
    path = tmp_path / "rgb48.png"
    path.write_bytes(data)
    assert (load_rgb(path) == [255, 128, 1]).all()


def test_palette_with_and_without_transparency(tmp_path):
    idx = (np.arange(8 * 12).reshape(12, 8) % 3).astype(np.uint8)
    pal = [10, 20, 30, 200, 0, 0, 0, 0, 250]
    img = Image.frombytes("P", (8, 12), idx.tobytes())
    img.putpalette(pal + [0] * (768 - len(pal)))
    out = load_rgb(_save(img, tmp_path / "p.png"))
    np.testing.assert_array_equal(out, np.array(pal, np.uint8).reshape(3, 3)[idx])
    clear = load_rgb(_save(img, tmp_path / "pt.png", transparency=2))  # index 2 transparent
    np.testing.assert_array_equal(clear[idx == 2], np.full(((idx == 2).sum(), 3), 255))
    np.testing.assert_array_equal(clear[idx != 2], out[idx != 2])


def test_alpha_is_composited_on_white(tmp_path):
    rgba = np.zeros((12, 8, 4), np.uint8)
    rgba[..., 2] = 200
    rgba[:, :4, 3] = 255                     # opaque blue
    rgba[:, 4:, 3] = 0                       # transparent: white whatever the colour below
    out = load_rgb(_save(Image.fromarray(rgba, "RGBA"), tmp_path / "rgba.png")).astype(int)
    assert (out[:, :4] == [0, 0, 200]).all() and (out[:, 4:] == 255).all()
    la = np.zeros((12, 8, 2), np.uint8)
    la[..., 1] = 128                         # black at half opacity: mid grey
    out = load_rgb(_save(Image.fromarray(la, "LA"), tmp_path / "la.png")).astype(int)
    assert (abs(out - 127) <= 1).all()
    # premultiplied and palette-with-alpha modes exist only in memory
    pa = Image.new("PA", (8, 12))
    pa.putpalette([255, 0, 0] * 256)
    assert (to_rgb(pa) == 255).all()         # alpha 0 everywhere: white
    assert (to_rgb(Image.new("La", (8, 12), (0, 255))) == 0).all()


def test_one_bit_cmyk_lab_hsv_ycbcr(tmp_path):
    bits = np.zeros((12, 8), bool)
    bits[:, :3] = True
    out = load_rgb(_save(Image.fromarray(bits), tmp_path / "b.png"))
    assert (out[:, :3] == 255).all() and (out[:, 3:] == 0).all()
    cmyk = np.zeros((12, 8, 4), np.uint8)
    cmyk[..., 1:3] = 255                     # magenta + yellow = red
    cmyk[6:] = [0, 0, 0, 255]                # key only = black
    out = load_rgb(_save(Image.fromarray(cmyk, "CMYK"), tmp_path / "c.tif"))
    assert (out[:6] == [255, 0, 0]).all() and (out[6:] == 0).all()
    assert (abs(to_rgb(Image.new("LAB", (8, 8), (255, 128, 128))).astype(int) - 255) <= 1).all()
    assert (to_rgb(Image.new("HSV", (8, 8), (0, 255, 255))) == [255, 0, 0]).all()
    ycc = to_rgb(Image.new("YCbCr", (8, 8), (76, 85, 255))).astype(int)
    assert (abs(ycc - [255, 0, 0]) <= 2).all()


def test_exif_orientation_is_applied_and_the_header_says_so(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (20, 10, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6                         # "rotate 90° clockwise to display"
    path = _save(Image.fromarray(arr), tmp_path / "turned.png", exif=exif)
    np.testing.assert_array_equal(load_rgb(path), np.rot90(arr, k=-1))
    head = read_header(path)
    assert (head.width, head.height, head.mode, head.format) == (20, 10, "RGB", "PNG")
    jpeg = load_rgb(_save(Image.fromarray(arr), tmp_path / "turned.jpg", exif=exif, quality=95))
    assert jpeg.shape == (10, 20, 3)


# ------------------------------------------------------------------------ caps and refusals
def test_a_6000x6000_image_is_refused_from_its_header_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    path.write_bytes(_png_bytes(6000, 6000, 8, 0, (bytes(6000) for _ in range(6000))))
    assert path.stat().st_size < 2**20       # small file, 36 M pixels

    def no_decode(self):  # pragma: no cover - runs only if the cap were checked too late
        raise AssertionError("decoded before the pixel cap was checked")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    for call in (load_rgb, read_header, decode_image, masks_load_rgb):
        with pytest.raises(ImageError) as ei:
            call(path)
        assert ei.value.too_large
        assert _one_line(ei.value) == (f"image {path}: 6000x6000 pixels, more than the "
                                       f"25,000,000-pixel limit (max_pixels)")
    big = ImageLimits(max_pixels=40_000_000)
    assert read_header(path, big).width == 6000  # configurable


def test_tiny_images_are_refused_and_the_minimum_is_configurable(tmp_path):
    one = _save(Image.new("RGB", (1, 1), (9, 9, 9)), tmp_path / "one.png")
    with pytest.raises(ImageError, match=r"one.png: 1x1 pixels, smaller than the 8-pixel minimum "
                                         r"side \(min_side\)") as ei:
        decode_image(one)
    assert not ei.value.too_large
    assert load_rgb(one, ImageLimits(min_side=1)).shape == (1, 1, 3)
    thin = _save(Image.new("RGB", (100, 7)), tmp_path / "thin.png")
    with pytest.raises(ImageError, match="100x7 pixels"):
        load_rgb(thin)
    for bad in (0, -3, 1.5, True):
        with pytest.raises(ValueError, match="min_side"):
            ImageLimits(min_side=bad)
    assert DEFAULT_LIMITS == ImageLimits(25_000_000, 8)


@pytest.mark.parametrize("content, words", [
    (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not an image Pillow can read"),
    (b"%PDF-1.4\n1 0 obj <<>> endobj\n", "not an image Pillow can read"),
    (b"", "not an image Pillow can read"),
], ids=["eps-never-tried", "pdf", "empty-file"])
def test_other_formats_are_never_tried(tmp_path, content, words):
    path = tmp_path / "photo.jpg"              # the suffix does not matter, the content does
    path.write_bytes(content)
    with pytest.raises(ImageError, match=words) as ei:
        load_rgb(path)
    assert _one_line(ei.value).startswith(f"image {path}: cannot decode")


def test_a_truncated_file_is_refused_not_half_decoded(tmp_path):
    arr = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    whole = _save(Image.fromarray(arr), tmp_path / "whole.jpg", quality=90).read_bytes()
    path = tmp_path / "half.jpg"
    path.write_bytes(whole[: len(whole) // 2])
    assert read_header(path).width == 64     # the header alone looks fine
    with pytest.raises(ImageError, match="half.jpg: cannot decode, the JPEG file is truncated"):
        load_rgb(path)
    with pytest.raises(FileNotFoundError, match="image file not found: .*nothing.png"):
        load_rgb(tmp_path / "nothing.png")


# ------------------------------------------------------------------------ masks
def test_masks_alpha_labels_and_exif(tmp_path):
    truth = np.zeros((12, 8), bool)
    truth[2:10, 2:6] = True
    layer = np.zeros((12, 8, 4), np.uint8)     # a cut-out: black everywhere, alpha = person
    layer[truth, 3] = 255
    path = _save(Image.fromarray(layer, "RGBA"), tmp_path / "cut.png")
    np.testing.assert_array_equal(load_binary_mask(path), truth)
    labels = _save(Image.fromarray(truth.astype(np.uint8) * 7), tmp_path / "labels.png")
    np.testing.assert_array_equal(load_binary_mask(labels), truth)
    tiny = _save(Image.fromarray(truth[:2, :3].astype(np.uint8)), tmp_path / "tiny.png")
    assert load_binary_mask(tiny).shape == (2, 3)  # masks have no minimum side of their own
    exif = Image.Exif()
    exif[0x0112] = 8                            # "rotate 90° counter-clockwise to display"
    turned = _save(Image.fromarray(truth.astype(np.uint8) * 255), tmp_path / "t.png", exif=exif)
    np.testing.assert_array_equal(load_binary_mask(turned), np.rot90(truth))
    with pytest.raises(ImageError, match="^mask .*f.tif: 32-bit float"):
        load_binary_mask(_save(Image.new("F", (8, 12)), tmp_path / "f.tif"))


# ------------------------------------------------------------------------ one decoder, every path
def test_every_path_decodes_the_same_pixels(tmp_path):
    v = (np.arange(12 * 8, dtype=np.uint16).reshape(12, 8) * 600)
    rgba = np.zeros((12, 8, 4), np.uint8)
    rgba[..., 0], rgba[:, :4, 3] = 90, 255
    files = [_save(Image.fromarray(v), tmp_path / "g16.png"),
             _save(Image.fromarray(rgba, "RGBA"), tmp_path / "rgba.png"),
             _save(Image.fromarray(np.zeros((12, 8, 4), np.uint8) + 40, "CMYK"), tmp_path / "c.tif")]
    for path in files:
        want = load_rgb(path)
        np.testing.assert_array_equal(masks_load_rgb(path), want)         # datasets
        np.testing.assert_array_equal(decode_image(path).image, want)     # lifting, ingestion
        upload = decode_upload(path.read_bytes(), limits=UploadLimits(min_side=8))
        np.testing.assert_array_equal(upload, want)                      # demo uploads
