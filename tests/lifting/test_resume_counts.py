"""Lifting runs are never overwritten or resumed into by mistake (mirror3d/lifting/run.py): the
out dir's settings hold the dataset's identity and the shard size, a failed start leaves nothing
that blocks the corrected re-run, an existing run name is refused unless --overwrite, and every
run ends with its counts and the skipped images with reasons. All in one process (no Ray)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import pytest

from lifting.lift_fixtures import lift_cfg, make_lift_tree
from mirror3d.cli import main
from mirror3d.lifting.run import SETTINGS_FILE, lift_dataset
from mirror3d.lifting.shards import read_shards
from mirror3d.utils.errors import DataError
from mirror3d.utils.rundir import SKIPPED_FILE, RunExistsError, read_skipped


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_lift_tree(tmp_path_factory.mktemp("lift"))


def _flat(tree, tmp_path, **kw):
    """A fast flat-mode config over the query split (4 images, one shard per 2 images)."""
    base = dict(mode="flat", mask_dir=None, splits=("query",), num_points=32, min_points=0,
                image_size=(8, 16), shard_size=2, preview=0)
    return lift_cfg(tree, tmp_path, **{**base, **kw})


def _files(folder) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_another_shard_size_is_refused_not_claimed(tree, tmp_path):
    cfg = _flat(tree, tmp_path)
    first = lift_dataset(cfg, run_dir=False)
    assert first.lifted_shards == ["query-00000", "query-00001"]
    before = _files(first.out_dir)
    with pytest.raises(ValueError, match=r"holds 2 shard\(s\) lifted with other settings "
                                         r"\(shard_size 2 \(now 3\)\)"):
        lift_dataset(dataclasses.replace(cfg, shard_size=3), run_dir=False)
    assert _files(first.out_dir) == before  # nothing touched
    # --overwrite replaces them: the new plan's shards only
    rep = lift_dataset(dataclasses.replace(cfg, shard_size=3, overwrite=True), run_dir=False)
    assert sorted(p.stem for p in rep.out_dir.glob("*.parquet")) == ["query-00000", "query-00001"]
    assert len(read_shards(rep.out_dir)) == 4
    assert json.loads((rep.out_dir / "_meta" / SETTINGS_FILE).read_text())["shard_size"] == 3


def test_another_dataset_at_the_same_root_is_refused(tree, tmp_path):
    root = tmp_path / "Market-1501"
    shutil.copytree(tree["root"], root)
    cfg = _flat(tree, tmp_path, root=str(root))
    lift_dataset(cfg, run_dir=False)
    assert lift_dataset(cfg, run_dir=False).lifted_shards == []  # the same files: resumed
    # the dataset is regenerated in place: one image replaced by another of the same name
    image = sorted((root / "query").glob("*.jpg"))[1]
    image.write_bytes(image.read_bytes() + b"\0")
    with pytest.raises(ValueError, match=r"lifted with other settings \(dataset "):
        lift_dataset(cfg, run_dir=False)
    # an image removed: refused as well
    image.unlink()
    with pytest.raises(ValueError, match=r"\(dataset \{'bytes'"):
        lift_dataset(cfg, run_dir=False)


def test_a_failed_start_leaves_nothing_that_blocks_the_next(tree, tmp_path):
    cfg = _flat(tree, tmp_path)

    def crash(c, jobs):
        raise RuntimeError("the worker died before its first shard")

    with pytest.raises(RuntimeError, match="worker died"):
        lift_dataset(cfg, lift_shards=crash)
    assert not (tmp_path / "out").exists()  # no settings file, no empty out dir
    assert not (tmp_path / "runs").exists()
    # the corrected re-run, with other settings, is not refused
    rep = lift_dataset(dataclasses.replace(cfg, num_points=16))
    assert rep.lifted_shards == ["query-00000", "query-00001"]
    assert all(len(p) == 16 for p in read_shards(rep.out_dir).points)


def test_settings_no_shard_was_finished_with_do_not_block(tree, tmp_path):
    """A settings file left by a start killed before its first shard (no cleanup ran)."""
    cfg = _flat(tree, tmp_path)
    meta = tmp_path / "out" / "_meta"
    meta.mkdir(parents=True)
    (meta / SETTINGS_FILE).write_text(json.dumps({"num_points": 999, "mode": "flat"}))
    (tmp_path / "out" / "query-00000.parquet").write_bytes(b"a torn shard of the killed run")
    rep = lift_dataset(cfg, run_dir=False)
    assert rep.lifted_shards == ["query-00000", "query-00001"]
    assert len(read_shards(rep.out_dir)) == 4
    assert json.loads((meta / SETTINGS_FILE).read_text())["num_points"] == 32


def test_an_existing_run_name_is_refused_before_any_work(tree, tmp_path, capsys):
    cfg = _flat(tree, tmp_path, name="mine")
    first = lift_dataset(cfg)
    assert first.run_dir == tmp_path / "runs" / "lift" / "mine"
    (first.run_dir / "note.txt").write_text("the user's")
    shutil.rmtree(first.out_dir)
    ran = []
    with pytest.raises(RunExistsError, match=r"run .*lift/mine exists; pass --overwrite to "
                                             r"replace it \(or choose another --name\)"):
        lift_dataset(cfg, lift_shards=lambda c, jobs: ran.append(jobs))
    assert ran == [] and not first.out_dir.exists()  # refused before planning or lifting
    # through the command line: one line, exit 2, the same refusal
    args = ["lift", "--no_ray", "--mode", "flat", "--root", str(tree["root"]), "--splits",
            "query", "--out", str(tmp_path / "cli"), "--runs_root", str(tmp_path / "runs"),
            "--name", "mine", "--preview", "0", "--num_points", "32", "--min_points", "0"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mine exists" in err[0] and "--overwrite" in err[0]
    assert not (tmp_path / "cli").exists()
    # --overwrite replaces the run (its old files go)
    assert main(args + ["--overwrite"]) == 0
    assert not (first.run_dir / "note.txt").exists() and (first.run_dir / "summary.json").exists()


def test_every_run_ends_with_counts_and_the_skipped_list(tree, tmp_path, capsys):
    args = ["lift", "--no_ray", "--mode", "casl-visible", "--root", str(tree["root"]),
            "--mask_dir", str(tree["masks"]), "--reconstructor", "oracle-template",
            "--image_size", "16,32", "--num_points", "64", "--min_points", "8",
            "--out", str(tmp_path / "out"), "--runs_root", str(tmp_path / "runs"),
            "--name", "c", "--preview", "0"]
    assert main(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("lift: read 28 images, used 26, skipped 2 (unreadable 1, no mask 1)")
    run = tmp_path / "runs" / "lift" / "c"
    skipped = dict(read_skipped(run))
    assert set(skipped) == {tree["corrupt"], tree["no_mask"]}
    assert skipped[tree["no_mask"]] == "no mask"
    assert skipped[tree["corrupt"]].startswith("unreadable: ")
    assert read_skipped(tmp_path / "out" / "_meta") == read_skipped(run)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["counts_line"] == out[-1].split(" (skipped images")[0]


def test_too_little_usable_input_fails_with_its_counts(tree, tmp_path):
    cfg = lift_cfg(tree, tmp_path, mode="casl-visible", reconstructor="oracle-template",
                   num_points=64, min_points=8, preview=0, splits=("query",),
                   min_usable_fraction=0.8)  # 3 of the 4 query images have a mask
    with pytest.raises(DataError, match=r"read 4 images, used 3, skipped 1 \(no mask 1\): only "
                                        r"75% usable, below min_usable_fraction 0.8; skipped "
                                        r"items with reasons: .*_meta/" + SKIPPED_FILE):
        lift_dataset(cfg)
    assert not (tmp_path / "runs").exists()
    assert read_skipped(tmp_path / "out" / "_meta") == [(tree["no_mask"], "no mask")]
    # the shards are done: the same settings with a lower threshold just finish the run
    rep = lift_dataset(dataclasses.replace(cfg, min_usable_fraction=0.5))
    assert rep.lifted_shards == [] and rep.summary["rows"] == 3


def test_a_split_without_images_fails_before_any_work(tree, tmp_path):
    root = tmp_path / "Market-1501"
    shutil.copytree(tree["root"], root)
    for image in (root / "query").iterdir():
        os.remove(image)
    with pytest.raises(DataError, match=r"no image of split\(s\) \['query'\] in .*; lift only "
                                        r"the others with --splits train,gallery"):
        lift_dataset(_flat(tree, tmp_path, root=str(root), splits=("train", "query", "gallery")))
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()
