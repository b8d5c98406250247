"""CASL's training input is counted, never quietly dropped (mirror3d.engine.casl_train data
building, the Market-HQ reader): images without masks, outside the ratio range or over the
cap are counted by reason and listed, and too little usable input fails before training."""

from __future__ import annotations

import dataset_fixtures
import numpy as np
import pytest

from mirror3d.data.readers import read_market_hq
from mirror3d.engine.casl_train import load_casl_data, write_input_report
from mirror3d.jobs import resolve_config
from mirror3d.utils.config import update_config
from mirror3d.utils.errors import DataError
from mirror3d.utils.rundir import read_skipped


@pytest.fixture
def hq(tmp_path):
    """The Market-HQ fixture (5 train images with masks) plus one train image without a mask."""
    root = dataset_fixtures.make_market_hq(tmp_path / "d", size=(16, 32))
    lonely = root / "pytorch" / "train_all" / "0002" / "0002_c1s1_009000_01.jpg.png"
    dataset_fixtures.write_rgb(lonely, size=(16, 32), array=np.zeros((32, 16, 3), np.uint8))
    return root, str(lonely)


def _cfg(root, **updates):
    cfg = resolve_config("train-casl", "smoke", overrides=[
        "--data.root", str(root), "--data.ratio_range", "0.0,1.0", "--data.clean_range", "0.0,1.0",
        "--optim.batch_size", "2"])
    return update_config(cfg, updates) if updates else cfg


def test_market_hq_counts_images_without_a_mask(hq):
    root, lonely = hq
    records, summary = read_market_hq(root)
    assert lonely not in {r.image_path for r in records}
    assert summary.left_out == [(lonely, "train", "no mask")]
    assert "left out 1 (no mask)" in str(summary)


def test_training_input_is_counted_by_reason_and_listed(hq, tmp_path):
    root, lonely = hq
    train, _, _ = load_casl_data(_cfg(root))
    report = train.input_report
    assert (report["read"], report["used"]) == (6, 5) == (report["read"], len(train))
    assert report["skipped"] == {"no mask": 1}
    assert report["counts_line"] == "train-casl: read 6 images, used 5, skipped 1 (no mask 1)"
    (tmp_path / "run").mkdir()
    write_input_report(tmp_path / "run", report)
    assert read_skipped(tmp_path / "run") == [(lonely, "no mask")]

    # a ratio range that leaves some out, and a cap: both counted by their reason
    ratios = sorted(r.fg_ratio for r in read_market_hq(root)[0] if r.split == "train")
    lo = (ratios[0] + ratios[1]) / 2  # the smallest ratio falls outside
    capped, _, _ = load_casl_data(_cfg(root, **{"data.ratio_range": (lo, 1.0),
                                                "data.max_train": 4}))
    skipped = capped.input_report["skipped"]
    assert capped.input_report["read"] == 6 and skipped["no mask"] == 1
    assert skipped["over data.max_train"] == 1
    assert skipped.get("foreground ratio outside data.ratio_range", 0) == 4 - len(capped)
    assert capped.input_report["used"] == len(capped) >= 2


def test_too_little_usable_training_input_fails_before_training(hq):
    root, _ = hq
    with pytest.raises(DataError, match=r"train-casl: read 6 images, used 5, skipped 1 \(no mask "
                                        r"1\): only 83% usable, below min_usable_fraction 0.9"):
        load_casl_data(_cfg(root, **{"data.min_usable_fraction": 0.9}))
    # no training image has a mask: nothing usable, whatever the threshold
    for mask in (root / "seg_hmr" / "train_all").rglob("*.png"):
        mask.unlink()
    with pytest.raises(ValueError, match=r"no training images under .* \(6 left out: no mask"):
        load_casl_data(_cfg(root, **{"data.min_usable_fraction": 0.0}))
