"""The lifting driver without Ray (mirror3d/lifting/run.py): counts, bad-image list, resume
settings, policies, configuration errors."""

import dataclasses
import json
import logging

import numpy as np
import pytest

from lifting.lift_fixtures import lift_cfg, make_lift_tree
from mirror3d.data.decode import BAD_LIST_NAME, read_bad_list
from mirror3d.lifting.config import LiftConfig
from mirror3d.lifting.run import SETTINGS_FILE, lift_dataset
from mirror3d.lifting.shards import read_shards
from mirror3d.utils.config import config_from_dict
from mirror3d.utils.errors import DataError
from mirror3d.utils.rundir import read_skipped


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_lift_tree(tmp_path_factory.mktemp("lift"))


def test_flat_without_masks_counts_and_lists_bad_images(tree, tmp_path, caplog):
    cfg = lift_cfg(tree, tmp_path, mode="flat", mask_dir=None, num_points=8192, min_points=0,
                   preview=1)
    with caplog.at_level(logging.WARNING, logger="mirror3d.lifting.run"):
        rep = lift_dataset(cfg)
    assert rep.summary["rows"] == 27 and rep.summary["counts"]["bad"] == 1
    assert "1 unreadable image" in caplog.text and tree["corrupt"] in caplog.text
    got = read_shards(rep.out_dir)
    assert all(p.shape == (16 * 32, 6) for p in got.points)
    assert all(np.all(p[:, 2] == 0) for p in got.points)
    # the run dir: config, summary, the bad-image list (path<TAB>reason) and one picture
    [(path, reason)] = read_bad_list(rep.run_dir / BAD_LIST_NAME)
    assert path == tree["corrupt"] and "cannot decode" in reason
    assert json.loads((rep.run_dir / "summary.json").read_text()) == rep.summary
    assert (rep.run_dir / "config.yaml").exists()
    assert len(list((rep.run_dir / "pictures").glob("*.png"))) == 1
    assert (rep.out_dir / "_meta" / SETTINGS_FILE).exists()
    assert (rep.out_dir / "_meta" / "summary.json").exists()


def test_an_empty_bad_list_is_written_too(tree, tmp_path):
    cfg = lift_cfg(tree, tmp_path, mode="flat", mask_dir=None, splits=("query",), min_points=0,
                   num_points=64, preview=0)
    rep = lift_dataset(cfg)
    assert (rep.run_dir / BAD_LIST_NAME).read_text() == ""


def test_reject_policy_counts_and_empty_shards_stay_done(tree, tmp_path):
    cfg = lift_cfg(tree, tmp_path, mode="casl-visible", num_points=20000, min_points=20000,
                   oversample=0.5, short="reject", preview=0)
    # every cloud rejected: no usable sample, so the job fails with its counts (no run dir)
    with pytest.raises(DataError, match=r"lift: read 28 images, used 0, skipped 28 \(unreadable "
                                        r"1, no mask 1, too few points 26\): no usable images"):
        lift_dataset(cfg)
    assert not (tmp_path / "runs").exists()
    out = tmp_path / "out"
    summary = json.loads((out / "_meta" / "summary.json").read_text())
    assert summary["counts"]["rejected"] == 26 and summary["rows"] == 0
    assert "min_points" in summary["rejected"][0][1]
    skipped = read_skipped(out / "_meta")
    assert len(skipped) == 28 and sum("too few points: " in r for _, r in skipped) == 26
    assert not list(out.glob("*.parquet"))
    ran = []
    with pytest.raises(DataError, match="no usable images"):  # the shards stay done
        lift_dataset(cfg, lift_shards=lambda c, jobs: ran.append(jobs), run_dir=False)
    assert ran == []

    padded = lift_dataset(dataclasses.replace(cfg, short="pad", out=str(tmp_path / "pad")),
                          run_dir=False)
    assert padded.summary["counts"]["padded"] == 26 and padded.summary["rows"] == 26
    assert all(len(p) == 20000 for p in read_shards(padded.out_dir).points)


def test_missing_masks_can_be_estimated(tree, tmp_path):
    cfg = lift_cfg(tree, tmp_path, mode="casl-visible", splits=("query",),
                   missing_mask="estimate", preview=0)
    rep = lift_dataset(cfg, run_dir=False)
    c = rep.summary["counts"]
    assert c["no_mask"] == 0 and rep.summary["estimated"] == [tree["no_mask"]]
    assert rep.summary["rows"] + c["rejected"] == 4 and rep.summary["rows"] >= 3
    skip = lift_dataset(dataclasses.replace(cfg, missing_mask="skip", out=str(tmp_path / "s")),
                        run_dir=False)
    assert skip.summary["no_mask"] == [tree["no_mask"]] and skip.summary["counts"]["estimated"] == 0


def test_other_settings_are_refused_unless_overwrite(tree, tmp_path):
    cfg = lift_cfg(tree, tmp_path, mode="flat", mask_dir=None, splits=("query",), preview=0,
                   num_points=100, min_points=0)
    lift_dataset(cfg, run_dir=False)
    changed = dataclasses.replace(cfg, num_points=50)
    with pytest.raises(ValueError, match="num_points 100 .now 50."):
        lift_dataset(changed, run_dir=False)
    # settings that do not change the content (pool size, pictures, ...) resume
    same = lift_dataset(dataclasses.replace(cfg, actors=1, preview=3), run_dir=False)
    assert same.lifted_shards == [] and same.skipped_shards == ["query-00000"]
    # test-time refinement changes the content: another refine_steps re-lifts
    with pytest.raises(ValueError, match="refine_steps 0 .now 5."):
        lift_dataset(dataclasses.replace(cfg, refine_steps=5), run_dir=False)
    rep = lift_dataset(dataclasses.replace(changed, overwrite=True), run_dir=False)
    assert rep.lifted_shards == ["query-00000"]
    assert all(len(p) == 50 for p in read_shards(rep.out_dir).points)


def test_configuration_errors(tree, tmp_path):
    with pytest.raises(ValueError, match="mask_dir"):
        lift_dataset(lift_cfg(tree, tmp_path, mask_dir=None))
    with pytest.raises(ValueError, match="checkpoint"):
        lift_dataset(lift_cfg(tree, tmp_path, reconstructor="casl"))
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        lift_dataset(lift_cfg(tree, tmp_path, reconstructor="casl",
                              checkpoint=str(tmp_path / "x.pt")))
    with pytest.raises(ValueError, match="cannot import"):
        lift_dataset(lift_cfg(tree, tmp_path, reconstructor="no_such_module_xyz:load"))
    with pytest.raises(ValueError, match="expected casl"):
        lift_dataset(lift_cfg(tree, tmp_path, reconstructor="nonsense"))
    with pytest.raises(ValueError, match="refine_steps: 3 asks for test-time refinement"):
        lift_dataset(lift_cfg(tree, tmp_path, refine_steps=3))  # the oracle does not refine
    with pytest.raises(ValueError, match="min_points"):
        config_from_dict(LiftConfig, {"num_points": 10, "min_points": 20})
    empty = tmp_path / "empty"
    for folder in ("bounding_box_train", "query", "bounding_box_test"):
        (empty / folder).mkdir(parents=True)
    with pytest.raises(ValueError, match="no image"):
        lift_dataset(lift_cfg(tree, tmp_path, root=str(empty), mode="flat", mask_dir=None))
    assert not (tmp_path / "out").exists()
