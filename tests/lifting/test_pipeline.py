import dataclasses
import json
import logging
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from mirror3d.cli import main
from mirror3d.data.readers import read_market1501
from mirror3d.lifting.pipeline import (
    LiftConfig,
    MaskIndex,
    ShardLifter,
    mask_key,
    plan_shards,
    run_lift,
)
from mirror3d.lifting.shards import SCHEMA, read_shards

REPO = pathlib.Path(__file__).resolve().parents[2]


def _fixtures():
    import dataset_fixtures

    return dataset_fixtures


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """Market-1501 fixture (27 images) + one corrupt image, and Market-HQ style masks for every
    image but one."""
    fx = _fixtures()
    tmp = tmp_path_factory.mktemp("lift")
    root = fx.make_market1501(tmp)
    corrupt = root / "bounding_box_train" / "0009_c2s1_009999_05.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    folders = {"bounding_box_train": "train_all", "query": "query", "bounding_box_test": "gallery"}
    hq = tmp / "Market-HQ"
    no_mask = root / "query" / sorted(p.name for p in (root / "query").glob("*.jpg"))[0]
    for folder, split_dir in folders.items():
        for k, img in enumerate(sorted((root / folder).glob("*.jpg"))):
            if img == no_mask:
                continue
            _, m = fx.person_pair(8, 16, (0.5 + 0.05 * (k % 3), 0.8))
            pid = img.name.split("_")[0]
            fx.write_mask(hq / "seg_hmr" / split_dir / pid / f"{img.name}_{m.mean():.2f}.png",
                          m.astype(np.uint8) * 255)
    return {"root": root, "masks": hq, "corrupt": str(corrupt), "no_mask": str(no_mask)}


def _cfg(tree, tmp, **kw):
    base = dict(root=str(tree["root"]), mask_dir=str(tree["masks"]), mode="casl-visible+bg",
                reconstructor="oracle-template", image_size=(16, 32), num_points=300,
                min_points=64, shard_size=4, out=str(tmp / "out"), runs_root=str(tmp / "runs"),
                name="t", actors=2, preview=2, progress=False)
    base.update(kw)
    return LiftConfig(**base)


def _same(a, b):
    assert len(a) == len(b)
    assert list(a.path) == list(b.path)
    assert all(np.array_equal(x, y) for x, y in zip(a.points, b.points))
    assert np.array_equal(a.pid, b.pid) and np.array_equal(a.camid, b.camid)
    assert list(a.split) == list(b.split) and list(a.mode) == list(b.mode)


def test_ray_actor_pool_lifts_and_a_rerun_only_redoes_missing_shards(ray_session, tree, tmp_path):
    cfg = _cfg(tree, tmp_path)
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
    import pyarrow.parquet as pq
    assert pq.read_schema(rep.out_dir / "train-00000.parquet").equals(SCHEMA)
    pics = sorted(p.name for p in (rep.run_dir / "pictures").iterdir())
    assert len([p for p in pics if p.endswith(".png")]) == 2
    assert len([p for p in pics if p.endswith(".ply")]) == 2
    assert (rep.run_dir / "config.yaml").exists() and (rep.run_dir / "summary.json").exists()

    # resume: delete one shard, re-run (in a plain loop, no Ray): only that shard is lifted
    # again, and the loop's shard is identical to the actor pool's
    (rep.out_dir / "train-00001.parquet").unlink()
    rep2 = run_lift(dataclasses.replace(cfg, preview=0), use_ray=False)
    assert rep2.lifted_shards == ["train-00001"] and len(rep2.skipped_shards) == 7
    _same(read_shards(rep.out_dir), got)
    assert rep2.summary["rows"] == 26 and rep2.summary["counts"] == s["counts"]


def test_flat_without_masks_counts_bad_images_and_logs(tree, tmp_path, caplog):
    cfg = _cfg(tree, tmp_path, mode="flat", mask_dir=None, num_points=8192, min_points=0,
               preview=0)
    with caplog.at_level(logging.WARNING, logger="mirror3d.lifting.pipeline"):
        rep = run_lift(cfg, use_ray=False)
    assert rep.summary["rows"] == 27 and rep.summary["counts"]["bad"] == 1
    assert "1 unreadable image" in caplog.text and tree["corrupt"] in caplog.text
    got = read_shards(rep.out_dir)
    assert all(p.shape == (16 * 32, 6) for p in got.points)
    assert all(np.all(p[:, 2] == 0) for p in got.points)


def test_reject_policy_counts_and_empty_shards_stay_done(tree, tmp_path):
    cfg = _cfg(tree, tmp_path, mode="casl-visible", num_points=20000, min_points=20000,
               oversample=0.5, short="reject", preview=0)
    rep = run_lift(cfg, use_ray=False, run_dir=False)
    assert rep.summary["counts"]["rejected"] == 26 and rep.summary["rows"] == 0
    assert "min_points" in rep.summary["rejected"][0][1]
    assert not list(rep.out_dir.glob("*.parquet"))
    again = run_lift(cfg, use_ray=False, run_dir=False)
    assert again.lifted_shards == [] and again.summary["counts"]["rejected"] == 26

    padded = run_lift(dataclasses.replace(cfg, short="pad", out=str(tmp_path / "pad")),
                      use_ray=False, run_dir=False)
    assert padded.summary["counts"]["padded"] == 26 and padded.summary["rows"] == 26
    assert all(len(p) == 20000 for p in read_shards(padded.out_dir).points)


def test_missing_masks_can_be_estimated(tree, tmp_path):
    cfg = _cfg(tree, tmp_path, mode="casl-visible", splits=("query",), missing_mask="estimate",
               preview=0)
    rep = run_lift(cfg, use_ray=False, run_dir=False)
    c = rep.summary["counts"]
    assert c["no_mask"] == 0 and rep.summary["estimated"] == [tree["no_mask"]]
    assert rep.summary["rows"] + c["rejected"] == 4 and rep.summary["rows"] >= 3


def test_other_settings_are_refused_unless_overwrite(tree, tmp_path):
    cfg = _cfg(tree, tmp_path, mode="flat", mask_dir=None, splits=("query",), preview=0,
               num_points=100, min_points=0)
    run_lift(cfg, use_ray=False, run_dir=False)
    changed = dataclasses.replace(cfg, num_points=50)
    with pytest.raises(ValueError, match="num_points"):
        run_lift(changed, use_ray=False, run_dir=False)
    rep = run_lift(dataclasses.replace(changed, overwrite=True), use_ray=False, run_dir=False)
    assert rep.lifted_shards == ["query-00000"]
    assert all(len(p) == 50 for p in read_shards(rep.out_dir).points)


def test_configuration_errors(tree, tmp_path):
    with pytest.raises(ValueError, match="mask_dir"):
        run_lift(_cfg(tree, tmp_path, mask_dir=None))
    with pytest.raises(ValueError, match="checkpoint"):
        run_lift(_cfg(tree, tmp_path, reconstructor="casl"))
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        run_lift(_cfg(tree, tmp_path, reconstructor="casl", checkpoint=str(tmp_path / "x.pt")))
    with pytest.raises(ValueError, match="cannot import"):
        run_lift(_cfg(tree, tmp_path, reconstructor="no_such_module_xyz:load"))
    with pytest.raises(ValueError, match="min_points"):
        from mirror3d.utils.config import config_from_dict
        config_from_dict(LiftConfig, {"num_points": 10, "min_points": 20})
    assert not (tmp_path / "out").exists()


def test_plan_and_actor_reuse_one_reconstructor(tree, tmp_path):
    cfg = _cfg(tree, tmp_path)
    jobs, _ = plan_shards(cfg)
    again, _ = plan_shards(cfg)
    assert jobs == again
    assert [j.name for j in jobs][:2] == ["train-00000", "train-00001"]
    assert all(len(j.paths) <= 4 and len(set(j.pids)) >= 1 for j in jobs)
    assert jobs[0].keys[0].startswith("bounding_box_train/")
    lifter = ShardLifter(cfg)
    rec = lifter.reconstructor
    train = [j for j in jobs if j.split == "train"]
    for j in train:
        lifter.lift_job(j)
    assert lifter.reconstructor is rec
    masked = sum(1 for j in train for m in j.masks if m)
    assert rec.calls == masked - 1  # the corrupt image never reaches the model


def test_mask_index(tmp_path):
    assert mask_key("0002_c1s1_000451_03.jpg_0.45.png") == "0002_c1s1_000451_03"
    assert mask_key("0002_c1s1_000451_03.jpg.png") == "0002_c1s1_000451_03"
    assert mask_key("0002_c1s1_000451_03.png") == "0002_c1s1_000451_03"
    fx = _fixtures()
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


def test_cli_and_job_script(tree, tmp_path):
    out = tmp_path / "cli"
    code = main(["lift", "--no-ray", "--root", str(tree["root"]), "--mode", "flat",
                 "--splits", "query", "--out", str(out), "--runs_root", str(tmp_path / "runs"),
                 "--preview", "1", "--num_points", "64", "--min_points", "0",
                 "--image_size", "8,16"])
    assert code == 0
    got = read_shards(out)
    assert len(got) == 4 and all(p.shape == (64, 6) for p in got.points)
    assert len(list((tmp_path / "runs" / "lift").glob("*/pictures/*.png"))) == 1
    assert main(["lift", "--no-ray", "--mode", "casl-visible", "--root", str(tree["root"]),
                 "--out", str(tmp_path / "x")]) == 1  # no mask_dir: one-line error
    res = subprocess.run([sys.executable, str(REPO / "jobs" / "lift.py"), "--help"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "--mode" in res.stdout and "--num_points" in res.stdout
