"""The one decode path (mirror3d/data/decode.py): image + mask files → arrays, in order crop,
resize, mask source; errors that name the file; the bad-image list."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dataset_fixtures as fx
from mirror3d.data.decode import (BAD_LIST_NAME, decode_image, read_bad_list,
                                  write_bad_list)
from mirror3d.data.images import ImageLimits
from mirror3d.data.masks import estimate_mask, load_binary_mask, load_rgb
from mirror3d.data.transforms import crop_pair, enlarged_bbox, resize_pair


@pytest.fixture
def pair(tmp_path):
    image, mask = fx.person_pair(32, 48, (0.5, 0.6), seed=1)
    ipath = fx.write_rgb(tmp_path / "img.png", array=image)
    mpath = fx.write_mask(tmp_path / "mask.png", mask.astype(np.uint8) * 255)
    return ipath, mpath, image, mask


def test_image_and_mask_file(pair):
    ipath, mpath, image, mask = pair
    d = decode_image(ipath, mpath)
    assert d.mask_source == "file" and d.image.dtype == np.uint8 and d.mask.dtype == bool
    np.testing.assert_array_equal(d.image, image)
    np.testing.assert_array_equal(d.mask, mask)
    plain = decode_image(ipath)
    assert plain.mask is None and plain.mask_source == "none"
    assert decode_image(ipath, "").mask is None  # "" is no mask, as in the lifting plan


def test_crop_then_resize_like_the_transforms(pair):
    ipath, mpath, image, mask = pair
    box = (4.0, 6.0, 20.0, 30.0)
    d = decode_image(ipath, mpath, bbox=box, image_size=(10, 14), resample="bilinear")
    ref_i, ref_m = crop_pair(image, mask, *enlarged_bbox(box, 32, 48))
    ref_i, ref_m = resize_pair(ref_i, ref_m, (10, 14), "bilinear")
    np.testing.assert_array_equal(d.image, ref_i)
    np.testing.assert_array_equal(d.mask, ref_m)


def test_mask_sources_without_a_file(pair):
    ipath, _, image, _ = pair
    ones = decode_image(ipath, missing_mask="ones", image_size=(16, 24))
    assert ones.mask_source == "ones" and ones.mask.shape == (24, 16) and ones.mask.all()
    est = decode_image(ipath, missing_mask="estimate", image_size=(16, 24), seed=5)
    assert est.mask_source == "estimate"
    small = resize_pair(image, None, (16, 24))[0]
    np.testing.assert_array_equal(est.mask, estimate_mask(small, seed=5))  # on the decoded image
    with pytest.raises(ValueError, match="missing_mask"):
        decode_image(ipath, missing_mask="zeros")


def test_a_mask_of_another_size(tmp_path, pair):
    ipath, _, image, mask = pair
    wide = fx.write_mask(tmp_path / "wide.png", np.pad(mask.astype(np.uint8) * 255, ((0, 0), (0, 1))))
    with pytest.raises(ValueError, match=r"33x48 but the image is 32x48"):
        decode_image(ipath, wide)
    with pytest.raises(ValueError, match="33x48"):  # a box needs aligned pixels
        decode_image(ipath, wide, bbox=(0, 0, 10, 10), mask_mismatch="resize")
    d = decode_image(ipath, wide, mask_mismatch="resize")  # nearest, to the image's size
    m = np.asarray(Image.fromarray(load_binary_mask(wide).astype(np.uint8) * 255)
                   .resize((32, 48), Image.NEAREST)) > 127
    np.testing.assert_array_equal(d.mask, m)
    r = decode_image(ipath, wide, image_size=(16, 24), mask_mismatch="resize")
    assert r.mask.shape == (24, 16)


def test_bad_files_raise_naming_the_file(tmp_path, pair):
    ipath, mpath, _, _ = pair
    with pytest.raises(FileNotFoundError, match="nothing.jpg"):
        decode_image(tmp_path / "nothing.jpg")
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ValueError, match="^image .*garbage.jpg: cannot decode"):
        decode_image(garbage)
    with pytest.raises(ValueError, match=r"^mask .*garbage.jpg"):
        decode_image(ipath, garbage)
    with pytest.raises(ValueError, match=r"^mask .*none.png"):
        decode_image(ipath, tmp_path / "none.png")
    tiny = fx.write_rgb(tmp_path / "tiny.png", size=(3, 3))
    with pytest.raises(ValueError, match="tiny.png: 3x3 pixels, smaller than the 8-pixel minimum"):
        decode_image(tiny)
    with pytest.raises(ValueError, match="mask estimation failed"):
        decode_image(tiny, missing_mask="estimate", limits=ImageLimits(min_side=1))
    np.testing.assert_array_equal(decode_image(ipath).image, load_rgb(ipath))


def test_bad_list_round_trip(tmp_path):
    rows = [("a/b.jpg", "ValueError: cannot decode"), ("c\td.jpg", "two\nlines")]
    path = write_bad_list(tmp_path / BAD_LIST_NAME, rows)
    assert path.read_text().count("\n") == 2
    assert read_bad_list(path) == [("a/b.jpg", "ValueError: cannot decode"),
                                   ("c\\td.jpg", "two\\nlines")]
    assert read_bad_list(write_bad_list(tmp_path / "empty.txt", [])) == []
    assert Path(tmp_path / "empty.txt").read_text() == ""
