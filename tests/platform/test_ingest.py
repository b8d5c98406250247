"""Ray Data ingestion: decoded columns, bad-data policy, masks, torch batches, train shards."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from mirror3d.data.decode import BAD_LIST_NAME, read_bad_list
from mirror3d.data.masks import estimate_mask, load_binary_mask, load_rgb
from mirror3d.data.readers import read_cub, read_image_folder, read_market1501, read_market_hq
from mirror3d.data.transforms import crop_pair, enlarged_bbox, resize_pair
from mirror3d.platform.ingest import (
    COLUMNS,
    MASK_COLUMNS,
    SUMMARY_NAME,
    IngestError,
    TensorCollate,
    decode_batch,
    ingest,
    records_to_dataset,
    records_to_table,
    train_shards,
)


def _truncate(path: str, keep: float = 0.5) -> None:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])


def _garbage(path: str, seed: int) -> None:
    Path(path).write_bytes(np.random.default_rng(seed).integers(0, 256, 300, dtype=np.uint8).tobytes())


def _numpy_batch(table) -> dict[str, np.ndarray]:
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


# ------------------------------------------------------------------------------ no Ray needed


def test_decode_batch_marks_bad_rows_and_keeps_shapes(data_fixtures, tmp_path):
    records, _ = read_market1501(data_fixtures.make_market1501(tmp_path))
    records = records[:3]
    _garbage(records[1].path, seed=1)
    out = decode_batch(_numpy_batch(records_to_table(records)))
    assert out["ok"].tolist() == [True, False, True]
    assert out["error"][0] == "" and out["error"][1].startswith("ImageError") and records[1].path in out["error"][1]
    # the placeholder takes the good rows' size, so the column stays one stacked array
    assert out["image"].dtype == np.uint8 and out["image"].shape == (3, 16, 8, 3)
    np.testing.assert_array_equal(out["image"][0], load_rgb(records[0].path))
    assert out["mask"].shape == (3, 16, 8) and out["mask"][0].min() == 1
    check = decode_batch(_numpy_batch(records_to_table(records)), check_only=True)
    assert set(check) == {"path", "ok", "error", "row"} and check["row"].tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="passed the check pass"):
        decode_batch(_numpy_batch(records_to_table(records)), strict=True)


def test_bad_arguments_raise_before_ray(data_fixtures, tmp_path):
    records, _ = read_market1501(data_fixtures.make_market1501(tmp_path))
    run = tmp_path / "run"
    cases = [
        (dict(records=[]), "records is empty"),
        (dict(records=records + ["x.jpg"]), r"records\[27\] must be a ReidRecord"),
        (dict(image_size=(0, 5)), "image_size"),
        (dict(image_size=(5,)), "image_size"),
        (dict(resample="lanczos"), "resample"),
        (dict(max_failure_rate=1.5), "max_failure_rate"),
        (dict(missing_mask="zeros"), "missing_mask"),
        (dict(num_blocks=0), "num_blocks"),
        (dict(batch_size=0), "batch_size"),
    ]
    for kwargs, match in cases:
        kwargs = {"records": records, **kwargs}
        with pytest.raises(ValueError, match=match):
            ingest(run_dir=run, **kwargs)
    assert not run.exists()
    with pytest.raises(ValueError, match="n must be a positive int"):
        train_shards(None, 0)


def test_tensor_collate():
    batch = {"image": np.zeros((2, 4, 3, 3), np.uint8), "pid": np.array([3, 5]), "path": np.array(["a", "b"]),
             "mask_estimated": np.array([True, False])}
    out = TensorCollate()(batch)
    assert set(out) == {"image", "pid", "mask_estimated"}
    assert out["image"].shape == (2, 4, 3, 3) and out["image"].dtype == torch.uint8
    assert out["pid"].tolist() == [3, 5] and out["mask_estimated"].dtype == torch.bool
    with pytest.raises(ValueError, match="'mask' is not in the batch"):
        TensorCollate(columns=("image", "mask"))(batch)
    ragged = np.empty(2, dtype=object)
    ragged[:] = [np.zeros((4, 3, 3), np.uint8), np.zeros((5, 3, 3), np.uint8)]
    with pytest.raises(ValueError, match="set image_size"):
        TensorCollate()({"image": ragged})


# ------------------------------------------------------------------------------ with Ray


def test_market_rows(ray_session, data_fixtures, tmp_path):
    records, _ = read_market1501(data_fixtures.make_market1501(tmp_path))
    run = tmp_path / "run"
    res = ingest(records, run, num_blocks=4)
    rows = res.dataset.take_all()
    assert (res.total, res.good, res.bad) == (27, 27, 0) and len(rows) == 27
    assert set(rows[0]) == set(COLUMNS)
    by_path = {r["path"]: r for r in rows}
    assert set(by_path) == {r.path for r in records}
    for rec in records:
        row = by_path[rec.path]
        assert (row["pid"], row["camid"], row["label"], row["split"], row["dataset"]) == (
            rec.pid, rec.camid, rec.label, rec.split, rec.dataset)
        assert row["image"].dtype == np.uint8 and row["image"].shape == (16, 8, 3)
        np.testing.assert_array_equal(row["image"], load_rgb(rec.path))
        # re-id data has no masks: all-ones, and said so
        assert row["mask"].dtype == np.uint8 and row["mask"].shape == (16, 8) and (row["mask"] == 1).all()
        assert row["mask_source"] == "ones" and row["mask_estimated"] and row["mask_path"] == ""
    assert {r["pid"] for r in rows} == {-1, 0, 2, 3, 5, 7, 9}
    assert (run / BAD_LIST_NAME).read_text() == ""
    summary = json.loads((run / SUMMARY_NAME).read_text())
    assert (summary["total"], summary["good"], summary["bad"]) == (27, 27, 0)


@pytest.mark.parametrize("materialize", [True, False])
def test_one_corrupt_jpeg_is_listed_and_dropped(ray_session, data_fixtures, tmp_path, caplog, materialize):
    records, _ = read_market1501(data_fixtures.make_market1501(tmp_path))
    bad_path = records[5].path
    _truncate(bad_path)
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="mirror3d.platform.ingest"):
        res = ingest(records, run, materialize=materialize)
    assert (res.total, res.good, res.bad) == (27, 26, 1)
    assert res.failure_rate == pytest.approx(1 / 27)
    listed = read_bad_list(run / BAD_LIST_NAME)
    assert [p for p, _ in listed] == [bad_path] and listed == res.bad_rows
    assert listed[0][1].startswith("ImageError") and "cannot decode" in listed[0][1]
    assert json.loads((run / SUMMARY_NAME).read_text())["bad"] == 1
    paths = {r["path"] for r in res.dataset.select_columns(["path"]).take_all()}
    assert paths == {r.path for r in records} - {bad_path}
    warnings = [r.getMessage() for r in caplog.records if r.name == "mirror3d.platform.ingest"]
    assert len(warnings) == 1 and "dropped 1 of 27" in warnings[0] and str(run / BAD_LIST_NAME) in warnings[0]


def test_mostly_corrupt_stops_with_one_clear_line(ray_session, data_fixtures, tmp_path):
    records, _ = read_market1501(data_fixtures.make_market1501(tmp_path))
    broken = [r.path for r in records[:20]]
    for i, path in enumerate(broken):
        if i == 0:
            Path(path).unlink()
        elif i % 2:
            _garbage(path, seed=i)
        else:
            _truncate(path, keep=0.3)
    run = tmp_path / "run"
    with pytest.raises(IngestError) as info:
        ingest(records, run)
    message = str(info.value)
    assert "\n" not in message
    assert f"{20 / 27:.1%}" in message and "5.0%" in message and str(run / BAD_LIST_NAME) in message
    listed = read_bad_list(run / BAD_LIST_NAME)
    assert sorted(p for p, _ in listed) == sorted(broken)
    assert next(reason for p, reason in listed if p == broken[0]).startswith("FileNotFoundError")


def test_recon_masks_binary_aligned_and_labelled(ray_session, data_fixtures, tmp_path):
    hq, _ = read_market_hq(data_fixtures.make_market_hq(tmp_path / "a"))
    cub, _ = read_cub(data_fixtures.make_cub(tmp_path / "b"))
    plain, _ = read_image_folder(data_fixtures.make_image_folder(tmp_path / "c", n=2, with_masks=False)[0])
    mism, _ = read_image_folder(*data_fixtures.make_image_folder(tmp_path / "d", n=3, mismatched=True),
                                compute_ratio=False, dataset="mism")
    records = hq + cub + plain + mism
    assert len(records) == 16
    run = tmp_path / "run"
    res = ingest(records, run, max_failure_rate=0.1)  # 1 / 16 = 6.25 %: allowed by this threshold
    assert (res.good, res.bad) == (15, 1)
    [(bad_path, reason)] = read_bad_list(run / BAD_LIST_NAME)
    assert bad_path == mism[0].image_path and "mask" in reason and "33x48" in reason
    rows = {r["path"]: r for r in res.dataset.take_all()}
    assert len(rows) == 15
    for rec in hq + cub + plain + mism[1:]:
        row = rows[rec.image_path]
        image, mask = row["image"], row["mask"]
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
        assert image.dtype == np.uint8 and mask.shape == image.shape[:2]
        assert row["pid"] == (-1 if rec.pid is None else rec.pid) and row["camid"] == -1
        ref_image = load_rgb(rec.image_path)
        if rec.mask_path is None:
            assert row["mask_source"] == "estimate" and row["mask_estimated"]
            ref_mask = estimate_mask(ref_image, seed=0)
        else:
            assert row["mask_source"] == "file" and not row["mask_estimated"] and row["mask_path"] == rec.mask_path
            ref_mask = load_binary_mask(rec.mask_path, rec.mask_threshold)
        if rec.bbox is not None:
            ref_image, ref_mask = crop_pair(ref_image, ref_mask, *enlarged_bbox(rec.bbox, *ref_image.shape[1::-1]))
        np.testing.assert_array_equal(image, ref_image)
        np.testing.assert_array_equal(mask, ref_mask.astype(np.uint8))
    # the fixtures hold both foreground and background
    assert all(rows[r.image_path]["mask"].any() and not rows[r.image_path]["mask"].all() for r in hq)


def test_iter_torch_batches_stack_with_image_size(ray_session, data_fixtures, tmp_path):
    records, _ = read_market1501(data_fixtures.make_market1501(tmp_path))
    odd = records[0]
    data_fixtures.write_rgb(Path(odd.path), size=(12, 24), seed=odd.pid)  # another size than the rest
    res = ingest(records, tmp_path / "run", image_size=(6, 10), resample="bilinear")
    references = {resize_pair(load_rgb(r.path), None, (6, 10), "bilinear")[0].tobytes() for r in records}
    seen_pids = []
    for batch in res.dataset.iter_torch_batches(batch_size=8, collate_fn=TensorCollate()):
        b = batch["image"].shape[0]
        assert batch["image"].shape == (b, 10, 6, 3) and batch["image"].dtype == torch.uint8
        assert batch["mask"].shape == (b, 10, 6) and batch["mask"].dtype == torch.uint8
        assert batch["pid"].dtype == torch.int64 and batch["mask_estimated"].dtype == torch.bool
        assert all(img.numpy().tobytes() in references for img in batch["image"])
        seen_pids += batch["pid"].tolist()
    assert sorted(seen_pids) == sorted(r.pid for r in records)


def test_records_to_dataset_keeps_bad_rows_and_sizes(ray_session, data_fixtures, tmp_path):
    records, _ = read_market1501(data_fixtures.make_market1501(tmp_path))
    _garbage(records[2].path, seed=7)
    odd = records[20]
    data_fixtures.write_rgb(Path(odd.path), size=(12, 24), seed=odd.pid)
    ds = records_to_dataset(records, with_masks=False, num_blocks=3)  # no resize: sizes differ
    rows = ds.take_all()
    assert len(rows) == 27 and not any(name in rows[0] for name in MASK_COLUMNS)
    status = {r["path"]: (r["ok"], r["error"]) for r in rows}
    assert [p for p, (ok, _) in status.items() if not ok] == [records[2].path]
    assert status[records[2].path][1].startswith("ImageError")
    for row in rows:
        if row["ok"]:
            np.testing.assert_array_equal(row["image"], load_rgb(row["path"]))
    assert {r["path"]: r["image"].shape for r in rows}[odd.path] == (24, 12, 3)


def test_train_shards_are_disjoint_and_cover(ray_session, data_fixtures, tmp_path):
    records, _ = read_market1501(data_fixtures.make_market1501(tmp_path))
    res = ingest(records, tmp_path / "run", with_masks=False, num_blocks=6)
    shards = train_shards(res.dataset, 2)  # equal=True, as DDP needs
    got: list[list[str]] = [[], []]

    def consume(k: int) -> None:
        for batch in shards[k].iter_batches(batch_size=4, batch_format="numpy"):
            got[k].extend(str(p) for p in batch["path"])

    threads = [threading.Thread(target=consume, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    # disjoint, equal, and at most n - 1 = 1 of the 27 rows left out for equality
    assert not set(got[0]) & set(got[1])
    assert len(got[0]) == len(got[1]) == 13
    assert set(got[0] + got[1]) <= {r.path for r in records}
