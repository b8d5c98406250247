"""The lifting job on a Ray Data actor pool (mirror3d/platform/lifting.py): the pool lifts,
a re-run in one process redoes only the missing shard, identically."""

import dataclasses
import json
import os

import pyarrow.parquet as pq

from lifting.lift_fixtures import assert_same_samples, lift_cfg, make_lift_tree
from mirror3d.data.decode import BAD_LIST_NAME, read_bad_list
from mirror3d.data.readers import read_market1501
from mirror3d.lifting.shards import SCHEMA, read_shards
from mirror3d.platform.lifting import run_lift


def test_ray_actor_pool_lifts_and_a_rerun_only_redoes_missing_shards(ray_session, tmp_path):
    tree = make_lift_tree(tmp_path / "data")
    cfg = lift_cfg(tree, tmp_path)
    rep = run_lift(cfg)
    s = rep.summary
    names = {"train-00000", "train-00001", "train-00002", "train-00003", "query-00000",
             "gallery-00000", "gallery-00001", "gallery-00002"}
    assert set(rep.lifted_shards) == names and rep.skipped_shards == []
    # train-00003 holds only the corrupt image: no parquet, a meta file with 0 rows
    assert {p.stem for p in rep.out_dir.glob("*.parquet")} == names - {"train-00003"}
    assert json.loads((rep.out_dir / "_meta" / "train-00003.json").read_text())["rows"] == 0
    assert s["images"] == 28 and s["rows"] == 26
    assert s["counts"]["bad"] == 1 and s["bad"][0][0] == tree["corrupt"]
    assert s["counts"]["no_mask"] == 1 and s["no_mask"] == [tree["no_mask"]]
    metas = [json.loads((rep.out_dir / "_meta" / f"{n}.json").read_text()) for n in names]
    assert 1 <= len({m["worker"] for m in metas}) <= 2  # the pool's actors did the work

    got = read_shards(rep.out_dir)
    assert len(got) == 26 and set(got.mode) == {"casl-visible+bg"}
    records = {r.path: r for r in read_market1501(tree["root"])[0]}
    for i, path in enumerate(got.path):
        r = records[path]
        assert (got.pid[i], got.camid[i], got.split[i]) == (r.pid, r.camid, r.split)
        assert 64 <= len(got.points[i]) <= 300
    assert pq.read_schema(rep.out_dir / "train-00000.parquet").equals(SCHEMA)
    pics = sorted(p.name for p in (rep.run_dir / "pictures").iterdir())
    assert len([p for p in pics if p.endswith(".png")]) == 2
    assert len([p for p in pics if p.endswith(".ply")]) == 2
    assert (rep.run_dir / "config.yaml").exists() and (rep.run_dir / "summary.json").exists()
    assert [p for p, _ in read_bad_list(rep.run_dir / BAD_LIST_NAME)] == [tree["corrupt"]]

    # resume: delete one shard, re-run (in a plain loop, no Ray): only that shard is lifted
    # again, and the loop's shard is identical to the actor pool's
    (rep.out_dir / "train-00001.parquet").unlink()
    rep2 = run_lift(dataclasses.replace(cfg, preview=0, overwrite=True), use_ray=False)
    assert rep2.lifted_shards == ["train-00001"] and len(rep2.skipped_shards) == 7
    assert_same_samples(read_shards(rep.out_dir), got)
    assert rep2.summary["rows"] == 26 and rep2.summary["counts"] == s["counts"]
    # cfg.no_ray also keeps Ray out (and, being no content setting, resumes the same out dir)
    (rep.out_dir / "query-00000.parquet").unlink()
    rep3 = run_lift(dataclasses.replace(cfg, preview=0, no_ray=True), run_dir=False)
    assert rep3.lifted_shards == ["query-00000"]
    meta = json.loads((rep.out_dir / "_meta" / "query-00000.json").read_text())
    assert meta["worker"] == os.getpid()  # lifted here, not by an actor
    assert_same_samples(read_shards(rep.out_dir), got)
