"""trim_metrics (mirror3d/utils/rundir.py): a resumed run drops the metric lines that its lost
attempt wrote after the checkpoint it resumes from, so that every epoch is logged once."""

import json
import os

import pytest

from mirror3d.utils.rundir import append_metrics, trim_metrics


def _records(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_records_after_the_checkpoint_epoch_are_dropped_the_others_kept_in_order(tmp_path):
    for epoch in range(5):
        append_metrics(tmp_path, {"epoch": epoch, "loss": 1.0 / (epoch + 1)})
    append_metrics(tmp_path, {"note": "no epoch key"})
    assert trim_metrics(tmp_path, 2) == 2
    recs = _records(tmp_path / "metrics.jsonl")
    assert [r.get("epoch") for r in recs] == [0, 1, 2, None]
    assert recs[1] == {"epoch": 1, "loss": 0.5}  # kept lines are unchanged
    # the resumed run appends after the kept lines: each epoch once
    for epoch in (3, 4):
        append_metrics(tmp_path, {"epoch": epoch})
    assert [r.get("epoch") for r in _records(tmp_path / "metrics.jsonl")] == [0, 1, 2, None, 3, 4]


def test_other_file_and_key_as_casls_learning_curve_by_step(tmp_path):
    for step in (0, 4, 8, 12):
        append_metrics(tmp_path, {"step": step, "epoch": step // 4}, "curve.jsonl")
    # resumed at step 8 (the checkpoint's step counter): the point at step 8 is logged again
    assert trim_metrics(tmp_path, 7, "curve.jsonl", key="step") == 2
    assert [r["step"] for r in _records(tmp_path / "curve.jsonl")] == [0, 4]
    assert not (tmp_path / "metrics.jsonl").exists()


def test_a_torn_last_line_is_dropped_a_corrupt_middle_line_refused(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 0}\n{"epoch": 1}\n{"epoch": 2, "lo')  # the writer died mid-line
    assert trim_metrics(tmp_path, 5) == 1
    assert path.read_text() == '{"epoch": 0}\n{"epoch": 1}\n'
    path.write_text('{"epoch": 0}\nnot json\n{"epoch": 1}\n')
    with pytest.raises(ValueError, match="line 2"):
        trim_metrics(tmp_path, 0)
    assert path.read_text() == '{"epoch": 0}\nnot json\n{"epoch": 1}\n'  # left as it was


def test_nothing_to_drop_leaves_the_file_untouched_and_no_file_is_fine(tmp_path):
    assert trim_metrics(tmp_path, 3) == 0  # no metrics.jsonl yet (a fresh run dir)
    append_metrics(tmp_path, {"epoch": 0})
    path = tmp_path / "metrics.jsonl"
    os.utime(path, ns=(1, 1))
    assert trim_metrics(tmp_path, 0) == 0
    assert path.stat().st_mtime_ns == 1
    assert trim_metrics(tmp_path, -1) == 1 and path.read_text() == ""  # resumed before epoch 0
