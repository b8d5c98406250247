"""The shard plan (mirror3d/lifting/plan.py): mask lookup by image stem, deterministic shards."""

import numpy as np
import pytest

import dataset_fixtures as fx
from lifting.lift_fixtures import lift_cfg, make_lift_tree
from mirror3d.lifting.plan import MaskIndex, ShardJob, mask_key, plan_shards


def test_mask_index(tmp_path):
    assert mask_key("0002_c1s1_000451_03.jpg_0.45.png") == "0002_c1s1_000451_03"
    assert mask_key("0002_c1s1_000451_03.jpg.png") == "0002_c1s1_000451_03"
    assert mask_key("0002_c1s1_000451_03.png") == "0002_c1s1_000451_03"
    m = np.zeros((4, 4), np.uint8)
    name = "0003_c1s1_000100_00.jpg_0.00.png"
    a = fx.write_mask(tmp_path / "seg_hmr" / "query" / "0003" / name, m)
    b = fx.write_mask(tmp_path / "seg_hmr" / "train_all" / "0003" / name, m)
    fx.write_mask(tmp_path / "pytorch" / "query" / "0003" / "0009_c1s1_000100_00.jpg.png", m)
    idx = MaskIndex(tmp_path)
    assert len(idx) == 1  # seg_hmr only, the RGB folder is not read as masks
    assert idx.find("/x/query/0003_c1s1_000100_00.jpg", "query") == a
    assert idx.find("/x/bounding_box_train/0003_c1s1_000100_00.jpg", "train") == b
    assert idx.find("/x/query/0004_c1s1_000100_00.jpg", "query") is None
    with pytest.raises(FileNotFoundError):
        MaskIndex(tmp_path / "nothing")


def test_plan_is_deterministic_and_cut_per_split(tmp_path):
    tree = make_lift_tree(tmp_path / "data")
    cfg = lift_cfg(tree, tmp_path)
    jobs, _ = plan_shards(cfg)
    again, _ = plan_shards(cfg)
    assert jobs == again
    assert [j.name for j in jobs] == ["train-00000", "train-00001", "train-00002", "train-00003",
                                      "query-00000", "gallery-00000", "gallery-00001",
                                      "gallery-00002"]
    assert all(len(j.paths) <= 4 and len({j.split}) == 1 for j in jobs)
    assert jobs[0].keys[0].startswith("bounding_box_train/")
    query = next(j for j in jobs if j.split == "query")
    assert query.masks[query.paths.index(tree["no_mask"])] == ""
    assert sum(1 for j in jobs for m in j.masks if not m) == 1
    assert ShardJob.from_json(jobs[0].to_json()) == jobs[0]
    only_query, _ = plan_shards(lift_cfg(tree, tmp_path, splits=("query",), mask_dir=None))
    assert [j.name for j in only_query] == ["query-00000"] and only_query[0].masks == [""] * 4
