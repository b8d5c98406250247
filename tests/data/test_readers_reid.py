"""Re-id readers on tiny trees in the real Market-1501 / Duke / CUHK03-NP / MSMT17 layouts."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mirror3d.data.readers.reid import (
    parse_reid_name,
    read_cuhk03_np,
    read_dukemtmc,
    read_market1501,
    read_msmt17,
    read_reid,
    MARKET_PATTERN,
    MSMT17_PATTERN,
)


import dataset_fixtures as fx  # noqa: E402


def _counts(summary, split):
    c = summary.splits[split]
    return c.ids, c.images, c.cameras


# ---------------------------------------------------------------------------- names


def test_parse_market_names():
    assert parse_reid_name("0002_c3s1_000551_01.jpg", MARKET_PATTERN) == (2, 2)
    assert parse_reid_name("-1_c1s1_000401_03.jpg", MARKET_PATTERN) == (-1, 0)
    assert parse_reid_name("0000_c6s2_012345_00.jpg", MARKET_PATTERN) == (0, 5)
    with pytest.raises(ValueError, match="c0"):
        parse_reid_name("0002_c0s1_000551_01.jpg", MARKET_PATTERN)
    with pytest.raises(ValueError, match="PPPP_cCsS_FFFFFF_NN"):
        parse_reid_name("2_c1.jpg", MARKET_PATTERN)


def test_parse_msmt17_name_camera_is_third_field():
    assert parse_reid_name("0012_003_14_0303noon_0042_1.jpg", MSMT17_PATTERN) == (12, 13)
    with pytest.raises(ValueError, match="0303morning"):
        parse_reid_name("0012_c1s1_000551_01.jpg", MSMT17_PATTERN)


# ---------------------------------------------------------------------------- Market-1501


def test_market_counts_per_split(tmp_path):
    records, summary = read_market1501(fx.make_market1501(tmp_path))
    assert _counts(summary, "train") == (3, 12, 2)
    assert _counts(summary, "query") == (2, 4, 2)
    assert _counts(summary, "gallery") == (2, 11, 2)
    assert summary.splits["gallery"].distractor_images == 2
    assert summary.splits["gallery"].junk_images == 1
    assert summary.skipped == 0
    assert len(records) == 27
    # Thumbs.db / readme.txt are not images and are ignored
    assert not any(Path(r.path).suffix != ".jpg" for r in records)
    assert {r.camid for r in records} == {0, 1}


def test_market_train_relabel_keeps_original_pid(tmp_path):
    records, _ = read_market1501(fx.make_market1501(tmp_path))
    train = [r for r in records if r.split == "train"]
    assert {(r.pid, r.label) for r in train} == {(2, 0), (7, 1), (9, 2)}
    for r in records:
        if r.split != "train":
            assert r.label == r.pid


def test_market_distractor_and_junk_kept_in_gallery(tmp_path):
    records, _ = read_market1501(fx.make_market1501(tmp_path))
    gallery = [r for r in records if r.split == "gallery"]
    assert sum(r.pid == 0 for r in gallery) == 2
    assert sum(r.pid == -1 for r in gallery) == 1
    assert all(r.pid not in (0, -1) for r in records if r.split != "gallery")
    junk = [r for r in gallery if r.pid == -1][0]
    assert Path(junk.path).name.startswith("-1_c")


def test_market_missing_folder_names_path_and_layout(tmp_path):
    root = fx.make_market1501(tmp_path, missing="query")
    with pytest.raises(FileNotFoundError) as err:
        read_market1501(root)
    assert str(root / "query") in str(err.value)
    assert "bounding_box_train" in str(err.value)  # the expected layout


def test_market_bad_name_raises_names_file_and_pattern(tmp_path):
    root = fx.make_market1501(tmp_path, bad_name="bogus_photo.jpg")
    with pytest.raises(ValueError) as err:
        read_market1501(root)
    assert "bogus_photo.jpg" in str(err.value)
    assert "PPPP_cCsS_FFFFFF_NN" in str(err.value)


def test_market_skip_bad_counts_and_logs(tmp_path, caplog):
    root = fx.make_market1501(tmp_path, bad_name="bogus_photo.jpg")
    with caplog.at_level(logging.WARNING):
        records, summary = read_market1501(root, skip_bad=True)
    assert summary.skipped == 1
    assert summary.skipped_names[0].endswith("bogus_photo.jpg")
    assert _counts(summary, "train") == (3, 12, 2)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "skipped 1" in warnings[0] and "bogus_photo.jpg" in warnings[0]


def test_market_distractor_in_query_is_bad(tmp_path):
    root = fx.make_market1501(tmp_path)
    fx.write_rgb(root / "query" / "0000_c1s1_000001_01.jpg")
    with pytest.raises(ValueError, match="only allowed in the gallery"):
        read_market1501(root)
    _, summary = read_market1501(root, skip_bad=True)
    assert summary.skipped == 1


# ---------------------------------------------------------------------------- Duke, CUHK03-NP


def test_duke_counts_and_bad_name(tmp_path):
    records, summary = read_dukemtmc(fx.make_dukemtmc(tmp_path / "ok"))
    assert _counts(summary, "train") == (3, 12, 2)
    assert _counts(summary, "query") == (2, 4, 2)
    assert _counts(summary, "gallery") == (2, 8, 2)
    assert sorted({r.label for r in records if r.split == "train"}) == [0, 1, 2]
    # a Market-style name is not a Duke name
    root = fx.make_dukemtmc(tmp_path / "bad", bad_name="0002_c1s1_000551_01.jpg")
    with pytest.raises(ValueError, match="PPPP_cC_fFFFFFFF"):
        read_dukemtmc(root)


def test_cuhk03_np_detected_counts_and_missing(tmp_path):
    records, summary = read_cuhk03_np(fx.make_cuhk03_np(tmp_path / "ok"))
    assert _counts(summary, "train") == (3, 12, 2)
    assert _counts(summary, "query") == (2, 4, 2)
    assert _counts(summary, "gallery") == (2, 8, 2)
    assert all(r.path.endswith(".png") and "/detected/" in r.path for r in records)
    root = fx.make_cuhk03_np(tmp_path / "missing", missing="bounding_box_test")
    with pytest.raises(FileNotFoundError, match="detected/bounding_box_test"):
        read_cuhk03_np(root)


# ---------------------------------------------------------------------------- MSMT17


def test_msmt17_counts_camid_and_val(tmp_path):
    root = fx.make_msmt17(tmp_path)
    records, summary = read_msmt17(root)
    assert _counts(summary, "train") == (3, 12, 2)
    assert _counts(summary, "query") == (2, 4, 2)
    assert _counts(summary, "gallery") == (2, 8, 2)  # pid 0 is a real person in MSMT17
    for r in records:
        assert r.camid == int(Path(r.path).name.split("_")[2]) - 1
        assert Path(r.path).is_file()
    _, with_val = read_msmt17(root, include_val=True)
    assert _counts(with_val, "train") == (3, 15, 2)


def test_msmt17_v2_folders(tmp_path):
    records, summary = read_msmt17(fx.make_msmt17(tmp_path, version="V2"))
    assert _counts(summary, "train") == (3, 12, 2)
    assert all("mask_train_v2" in r.path for r in records if r.split == "train")
    assert all("mask_test_v2" in r.path for r in records if r.split != "train")


def test_msmt17_missing_list_file(tmp_path):
    root = fx.make_msmt17(tmp_path, missing="list_query.txt")
    with pytest.raises(FileNotFoundError) as err:
        read_msmt17(root)
    assert str(root / "list_query.txt") in str(err.value)
    assert "list_{train,val,query,gallery}.txt" in str(err.value)


def test_msmt17_bad_line_and_skip(tmp_path, caplog):
    root = fx.make_msmt17(tmp_path, bad_line="0001/garbage.jpg 1")
    with pytest.raises(ValueError) as err:
        read_msmt17(root)
    assert "garbage.jpg" in str(err.value) and "list_train.txt" in str(err.value)
    with caplog.at_level(logging.WARNING):
        _, summary = read_msmt17(root, skip_bad=True)
    assert summary.skipped == 1
    assert _counts(summary, "train") == (3, 12, 2)


def test_msmt17_listed_file_missing(tmp_path):
    root = fx.make_msmt17(tmp_path)
    line = (root / "list_gallery.txt").read_text().splitlines()[0]
    (root / "test" / line.split()[0]).unlink()
    with pytest.raises(FileNotFoundError, match=line.split()[0].split("/")[1]):
        read_msmt17(root)
    _, summary = read_msmt17(root, skip_bad=True)
    assert summary.splits["gallery"].images == 7


def test_read_reid_dispatch(tmp_path):
    _, summary = read_reid("market1501", fx.make_market1501(tmp_path))
    assert summary.splits["train"].images == 12
    with pytest.raises(ValueError, match="market1501"):
        read_reid("viper", tmp_path)
