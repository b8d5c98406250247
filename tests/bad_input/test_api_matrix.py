"""The bad-input matrix through the Python API, issue 16: the one image decoder
(:func:`mirror3d.data.decode.decode_image`), ``load_casl`` and ``reconstruct``.

A bad input raises the documented exception type with ONE line naming the thing (the file, the
argument) and what was expected; the image modes Pillow reads decode to the right colours (or
are refused by name), never to plausible wrong pixels.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch
from PIL import Image

from bad_input.bad_fixtures import TINY_CASL, corrupt_file, gray16_png, malicious_checkpoint
from mirror3d.data.decode import decode_image
from mirror3d.models.casl import CaslPredictor, load_casl
from mirror3d.models.casl.inference import MaskError
from mirror3d.models.casl.step import build_casl_model
from mirror3d.utils.checkpoint import CheckpointError, save_checkpoint


def one_line(exc: BaseException, *words: str) -> str:
    """The exception's message: one line, naming every one of ``words`` (case-insensitive)."""
    text = str(exc)
    assert text and "\n" not in text.strip(), text
    for w in words:
        assert w.lower() in text.lower(), f"{w!r} not named in: {text}"
    return text


# ---------------------------------------------------------------------------- decoding
def _save(img: Image.Image, path: pathlib.Path, **kw) -> pathlib.Path:
    img.save(path, **kw)
    return path


def test_16_bit_grey_decodes_to_its_grey_not_white(tmp_path):
    """Issue: an I;16 image lifted to an entirely white cloud."""
    path = gray16_png(tmp_path / "g16.png", 32768)
    with Image.open(path) as im:
        assert im.mode.startswith("I")
    got = decode_image(path).image
    assert got.shape == (16, 8, 3) and np.abs(got.astype(int) - 128).max() <= 1


def test_32_bit_int_grey_decodes_or_is_refused_by_mode(tmp_path):
    path = _save(Image.fromarray(np.full((16, 8), 65535 // 4, np.int32), mode="I"),
                 tmp_path / "i32.tiff")
    try:
        got = decode_image(path).image
    except ValueError as e:
        one_line(e, "i32.tiff", "'I'")
    else:
        assert np.abs(got.astype(int) - 64).max() <= 1


def test_float_image_is_refused_by_mode(tmp_path):
    path = _save(Image.fromarray(np.full((16, 8), 0.5, np.float32), mode="F"),
                 tmp_path / "float.tiff")
    with pytest.raises(ValueError) as e:
        decode_image(path)
    one_line(e.value, "float.tiff", "'F'")


def test_palette_with_transparency_keeps_its_colours(tmp_path):
    values = np.zeros((16, 8), np.uint8)
    values[:, 4:] = 1
    img = Image.frombytes("P", (8, 16), values.tobytes())
    img.putpalette([10, 200, 30, 250, 20, 40] + [0, 0, 0] * 254)
    img.info["transparency"] = 0  # index 0 transparent
    path = _save(img, tmp_path / "pal.png", transparency=0)
    got = decode_image(path).image
    assert (got[:, 4:] == (250, 20, 40)).all()  # opaque: the palette colour, not an index
    assert (got[:, :4] == (255, 255, 255)).all()  # transparent: on white, not its hidden colour


def test_cmyk_jpeg_decodes_to_its_colour(tmp_path):
    path = _save(Image.new("CMYK", (8, 16), (0, 255, 255, 0)), tmp_path / "cmyk.jpg",
                 quality=95)
    got = decode_image(path).image
    assert np.abs(got.astype(int) - (255, 0, 0)).max() <= 12


@pytest.mark.parametrize("mode", ["LA", "RGBA"])
def test_alpha_keeps_opaque_colours_and_composites_on_white(tmp_path, mode):
    colour = (90, 90, 90) if mode == "LA" else (20, 120, 220)
    arr = np.zeros((16, 8, 4), np.uint8)
    arr[..., :3] = colour
    arr[:, 4:, 3] = 255
    img = Image.fromarray(arr, "RGBA")
    if mode == "LA":
        img = img.convert("LA")
    path = _save(img, tmp_path / f"{mode}.png")
    got = decode_image(path).image
    assert (got[:, 4:] == colour).all() and (got[:, :4] == 255).all()


def test_one_bit_image(tmp_path):
    arr = np.zeros((16, 8), bool)
    arr[:8] = True
    path = _save(Image.fromarray(arr), tmp_path / "bits.png")
    got = decode_image(path).image
    assert (got[:8] == 255).all() and (got[8:] == 0).all()


def test_exif_orientation_is_applied(tmp_path):
    """A phone photo stored sideways with EXIF orientation 6 decodes upright (as viewers show
    it): stored 16 wide × 8 high → decoded 8 wide × 16 high."""
    img = Image.new("RGB", (16, 8), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save(img, tmp_path / "phone.jpg", exif=exif.tobytes())
    assert decode_image(path).image.shape == (16, 8, 3)


def test_truncated_image_names_the_file(tmp_path):
    full = tmp_path / "full.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 16, 3), np.uint8)).save(full)
    cut = tmp_path / "cut.png"
    cut.write_bytes(full.read_bytes()[:120])
    with pytest.raises(ValueError) as e:
        decode_image(cut)
    one_line(e.value, "cut.png")


def test_not_an_image_names_the_file(tmp_path):
    with pytest.raises(ValueError) as e:
        decode_image(corrupt_file(tmp_path / "photo.jpg"))
    one_line(e.value, "photo.jpg")


def test_missing_image_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        decode_image(tmp_path / "gone.jpg")
    one_line(e.value, "gone.jpg")


def test_huge_image_is_refused_before_decoding(tmp_path):
    """Issue: a 6000×6000 image became one 36 M-point cloud without a warning."""
    path = _save(Image.new("L", (6000, 6000), 128), tmp_path / "huge.png")
    with pytest.raises(ValueError) as e:
        decode_image(path)
    one_line(e.value, "huge.png", "6000x6000", "pixel")


def test_tiny_image_is_refused(tmp_path):
    """Issue: a 1×1 image became a 1-point cloud repeated to the sample size."""
    path = _save(Image.new("RGB", (1, 1), (1, 2, 3)), tmp_path / "dot.png")
    with pytest.raises(ValueError) as e:
        decode_image(path)
    one_line(e.value, "dot.png", "1x1")


def test_mask_of_another_size_is_an_error_by_default(tmp_path):
    """Issue: masks of another size than their image were resized without a word."""
    img = _save(Image.new("RGB", (8, 16), (1, 2, 3)), tmp_path / "img.png")
    mask = _save(Image.new("L", (9, 16), 255), tmp_path / "img_mask.png")
    with pytest.raises(ValueError) as e:
        decode_image(img, mask)
    one_line(e.value, "img_mask.png", "9x16", "8x16")


def test_float_mask_is_refused(tmp_path):
    img = _save(Image.new("RGB", (8, 16), (1, 2, 3)), tmp_path / "img.png")
    mask = _save(Image.fromarray(np.ones((16, 8), np.float32), mode="F"), tmp_path / "m.tiff")
    with pytest.raises(ValueError) as e:
        decode_image(img, mask)
    one_line(e.value, "m.tiff")


def test_mask_that_is_not_an_image(tmp_path):
    img = _save(Image.new("RGB", (8, 16), (1, 2, 3)), tmp_path / "img.png")
    with pytest.raises(ValueError) as e:
        decode_image(img, corrupt_file(tmp_path / "m.png", b"\x89PNG\r\n\x1a\n"))
    one_line(e.value, "m.png")


# ---------------------------------------------------------------------------- load_casl
@pytest.fixture(scope="module")
def casl_file(tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("casl") / "model_final.pt"
    return save_checkpoint(path, "casl", {"model": build_casl_model(TINY_CASL).state_dict(),
                                          "config": TINY_CASL})


def test_load_casl_right_tag_without_config(tmp_path):
    """Issue: the right tag but no config raised KeyError, the API promises CheckpointError."""
    path = save_checkpoint(tmp_path / "noconfig.pt", "casl", {"model": {}})
    with pytest.raises(CheckpointError) as e:
        load_casl(path)
    one_line(e.value, "noconfig.pt", "config")


def test_load_casl_of_a_reid_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "reid.pt", "reid", {"model": {}, "config": {}})
    with pytest.raises(CheckpointError) as e:
        load_casl(path)
    one_line(e.value, "reid.pt", "casl", "reid")


def test_load_casl_never_runs_a_pickle(tmp_path):
    path = malicious_checkpoint(tmp_path / "evil.pt", tmp_path / "payload-ran")
    with pytest.raises(CheckpointError) as e:
        load_casl(path)
    one_line(e.value, "evil.pt")
    assert not (tmp_path / "payload-ran").exists()


def test_load_casl_truncated(tmp_path, casl_file):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(casl_file.read_bytes()[:200])
    with pytest.raises(CheckpointError) as e:
        load_casl(cut)
    one_line(e.value, "cut.pt")


def test_load_casl_missing(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_casl(tmp_path / "nowhere" / "model_final.pt")
    one_line(e.value, "nowhere")


def test_load_casl_weights_of_another_model(tmp_path, casl_file):
    bigger = {**TINY_CASL, "net": {**TINY_CASL["net"], "shape_hidden": 32}}
    state = torch.load(casl_file, weights_only=True)
    path = save_checkpoint(tmp_path / "mixed.pt", "casl", {"model": state["model"],
                                                           "config": bigger})
    with pytest.raises(CheckpointError) as e:
        load_casl(path)
    one_line(e.value, "mixed.pt")


# ---------------------------------------------------------------------------- reconstruct
@pytest.fixture(scope="module")
def predictor() -> CaslPredictor:
    return CaslPredictor(build_casl_model(TINY_CASL), TINY_CASL)


def _pair(h: int = 32, w: int = 16):
    img = np.full((h, w, 3), 240, np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[6:26, 4:12] = 1
    img[mask.astype(bool)] = (30, 60, 200)
    return img, mask


def test_uint8_zero_one_mask_is_a_mask_not_empty(predictor):
    """Issue: a uint8 0/1 mask was reported as "empty"."""
    img, mask = _pair()
    rec = predictor.reconstruct(img, mask)
    assert torch.isfinite(rec.vertices).all()
    assert predictor.prepare(img, mask)[0, 3].sum() == predictor.prepare(img, mask * 255)[0, 3].sum()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_image(predictor, bad):
    """Issue: NaN became 0 and a camera came back."""
    img, mask = _pair()
    x = img.astype(np.float32) / 255.0
    x[3, 3, 1] = bad
    with pytest.raises(ValueError) as e:
        predictor.reconstruct(x, mask)
    one_line(e.value, "image", "finite")


def test_float_image_in_0_255(predictor):
    """Issue: float images in 0..255 were clamped to white."""
    img, mask = _pair()
    with pytest.raises(ValueError) as e:
        predictor.reconstruct(img.astype(np.float32), mask)
    one_line(e.value, "image", "[0, 1]")


def test_float_tensor_image_with_nan(predictor):
    img, mask = _pair()
    t = torch.from_numpy(img).permute(2, 0, 1).float() / 255.0
    t[0, 0, 0] = float("nan")
    with pytest.raises(ValueError) as e:
        predictor.reconstruct(t, torch.from_numpy(mask))
    one_line(e.value, "image")


def test_negative_float_image(predictor):
    img, mask = _pair()
    with pytest.raises(ValueError) as e:
        predictor.reconstruct(img.astype(np.float32) / 255.0 - 0.5, mask)
    one_line(e.value, "image", "[0, 1]")


def test_grey_image_array(predictor):
    img, mask = _pair()
    with pytest.raises(ValueError) as e:
        predictor.reconstruct(img[..., 0], mask)
    one_line(e.value, "image", "H×W×3")


def test_integer_image_beyond_uint8(predictor):
    img, mask = _pair()
    with pytest.raises(ValueError) as e:
        predictor.reconstruct(img.astype(np.int32) * 300, mask)
    one_line(e.value, "image")


def test_mask_of_another_shape(predictor):
    img, mask = _pair()
    with pytest.raises(ValueError) as e:
        predictor.reconstruct(img, mask[:, :-1])
    one_line(e.value, "mask", "shape")


def test_mask_with_nan(predictor):
    img, mask = _pair()
    m = mask.astype(np.float32)
    m[0, 0] = np.nan
    with pytest.raises(ValueError) as e:
        predictor.reconstruct(img, m)
    one_line(e.value, "mask", "finite")


def test_mask_with_other_labels(predictor):
    img, mask = _pair()
    with pytest.raises(ValueError) as e:
        predictor.reconstruct(img, mask.astype(np.int32) * 1000)
    one_line(e.value, "mask")


@pytest.mark.parametrize("fill", [0, 1])
def test_empty_or_full_mask(predictor, fill):
    img, _ = _pair()
    with pytest.raises(MaskError) as e:
        predictor.reconstruct(img, np.full(img.shape[:2], fill, np.uint8))
    one_line(e.value, "mask")


def test_negative_refine_steps(predictor):
    img, mask = _pair()
    with pytest.raises(ValueError) as e:
        predictor.reconstruct(img, mask, refine_steps=-1)
    one_line(e.value, "refine_steps")
