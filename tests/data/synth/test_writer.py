"""SynthPeople on disk: real layouts (read back with the readers), ground truth, re-rendering,
determinism across sharding, resume, bad arguments (all in one process; the Ray tasks:
tests/platform/test_synth.py)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mirror3d.data.masks import ratio_from_filename
from mirror3d.data.readers.recon import read_market_hq
from mirror3d.data.readers.reid import read_market1501
from mirror3d.data.synth.body import build_person_mesh
from mirror3d.data.synth.config import SynthConfig
from mirror3d.data.synth.writer import (
    choose_queries,
    file_hashes,
    generate_dataset,
    load_recipes,
    market_stem,
    plan_shards,
    plan_units,
    read_ground_truth,
    rerender_row,
    write_shards_in_process,
)
from mirror3d.render.mesh_io import load_mesh
from mirror3d.utils.config import ConfigError
from mirror3d.utils.fingerprint import read_settings

IDS, M = 4, 3


def _cfg(out, **kw) -> SynthConfig:
    base = dict(out=str(out), ids=IDS, images_per_id=M, seed=5, image_size=(32, 64), cameras=4,
                shard_size=2, floor=False, progress=False)
    return SynthConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "people"
    summary = generate_dataset(_cfg(out))
    return out, summary


# ------------------------------------------------------------------------------ planning
def test_plan_units_and_shards():
    units = plan_units(_cfg("x", ids=6))  # 6 ids, ceil(6/10) = 1 distractor, ceil(6/20) = 1 junk
    assert [u.role for u in units] == ["train"] * 3 + ["test"] * 3 + ["distractor", "junk"]
    assert [u.pid for u in units[-2:]] == [0, -1] and [u.recipe_id for u in units] == list(range(1, 9))
    shards = plan_shards(units, 3)
    assert [len(s) for s in shards] == [3, 3, 2] and sum(shards, []) == units
    assert plan_units(_cfg("x", ids=5))[2].role == "train"  # ceil(5/2) = 3 train ids
    assert len(plan_units(_cfg("x", ids=40, distractor_ids=0, junk_ids=2))) == 42


def test_choose_queries_hand_cases():
    assert choose_queries([0, 1]) == [0]  # taking both would leave no positive
    assert choose_queries([0, 0, 1]) == [0]  # a second query (camera 1) would leave camera 0's without
    assert choose_queries([0, 0, 1, 1]) == [0, 2]
    assert choose_queries([0, 1, 0, 1, 2]) == [0, 1, 4]
    assert choose_queries([2, 2, 2]) == []  # one camera: no cross-camera positive possible
    assert market_stem(12, 3, 45) == "0012_c3s1_000045_00"
    assert market_stem(-1, 1, 123) == "-1_c1s1_000123_00"


# ------------------------------------------------------------------------------ the layouts
def test_market_tree_reads_back_with_the_market_protocol(dataset):
    out, summary = dataset
    records, _ = read_market1501(out / "Market-1501")
    by = defaultdict(list)
    for r in records:
        by[r.split].append(r)
        stem = Path(r.path).stem
        assert re.fullmatch(r"(-1|\d{4})_c[1-4]s1_\d{6}_00", stem)
    train = {r.pid for r in by["train"]}
    test = {r.pid for r in by["query"]} | {r.pid for r in by["gallery"] if r.pid > 0}
    assert train == {1, 2} and test == {3, 4} and not train & test
    assert len(by["train"]) == 2 * M
    assert {r.pid for r in by["gallery"]} >= {0, -1}
    assert sum(r.pid == 0 for r in by["gallery"]) == M and sum(r.pid == -1 for r in by["gallery"]) == M
    # queries: at most one per (pid, camera), each with a positive in another camera
    keys = [(r.pid, r.camid) for r in by["query"]]
    assert len(keys) == len(set(keys)) and keys
    for q in by["query"]:
        assert any(g.pid == q.pid and g.camid != q.camid for g in by["gallery"])
    # every image of every identity is written once
    assert len(by["query"]) + sum(r.pid > 0 for r in by["gallery"]) == 2 * M
    assert summary["counts"]["market_images"] == len(records)


def test_market_hq_tree_pairs_masks_and_images(dataset):
    out, summary = dataset
    recs, _ = read_market_hq(out / "Market-HQ")
    n_query = len(list((out / "Market-1501" / "query").iterdir()))
    assert len(recs) == 2 * M + n_query == summary["counts"]["hq_images"]
    for rec in recs[:6]:
        mask = np.asarray(Image.open(rec.mask_path))
        assert set(np.unique(mask)) <= {0, 255}
        assert ratio_from_filename(rec.mask_path) == pytest.approx((mask > 0).mean(), abs=0.005)
        rgb = Image.open(rec.image_path)
        assert rgb.format == "PNG" and rgb.size == (32, 64) and rec.image_path.endswith(".jpg.png")


def test_ground_truth_rows_cover_every_image(dataset):
    out, _ = dataset
    table = read_ground_truth(out)
    rows = table.to_pylist()
    images = {p.relative_to(out).as_posix() for p in out.rglob("*")
              if p.suffix in (".jpg", ".png") and ("Market-1501" in p.parts or "pytorch" in p.parts)}
    assert {r["path"] for r in rows} == images and len(rows) == len(images)
    assert table.schema.field("light").type.list_size == 9
    assert table.schema.metadata[b"pose_jitter_names"].decode().split(",")[0] == "arm_abduct_l"
    for r in rows:
        if r["mask_path"] is not None:
            assert (out / r["mask_path"]).is_file()
            assert ratio_from_filename(r["mask_path"]) == pytest.approx(r["fg_ratio"], abs=0.005)
        assert r["tree"] in ("market1501", "market_hq") and r["camid"] in range(4)
    junk = [r for r in rows if r["role"] == "junk"]
    normal = [r for r in rows if r["role"] == "train"]
    assert np.mean([r["fg_ratio"] for r in junk]) < np.mean([r["fg_ratio"] for r in normal])
    recipes = load_recipes(out)
    assert set(recipes) == set(range(1, IDS + 3))
    lines = (out / "gt" / "recipes.jsonl").read_text().splitlines()
    assert [json.loads(x)["role"] for x in lines][-2:] == ["distractor", "junk"]


def test_rerender_is_bit_identical(dataset):
    out, _ = dataset
    rows = [r for r in read_ground_truth(out).to_pylist() if r["tree"] == "market_hq"]
    for row in (rows[0], rows[-1]):  # a train image and a query image
        rgb, mask = rerender_row(out, row)
        np.testing.assert_array_equal(mask, np.asarray(Image.open(out / row["mask_path"])) > 0)
        np.testing.assert_array_equal(rgb, np.asarray(Image.open(out / row["path"])))


def test_meshes_are_the_rest_pose_of_the_recipes(dataset):
    out, summary = dataset
    assert summary["counts"]["meshes"] == IDS + 2
    recipes = load_recipes(out)
    loaded = load_mesh(out / "gt" / "meshes" / "0002.obj")
    verts, faces, uvs, tex = build_person_mesh(recipes[2])
    assert loaded.verts.shape == verts.shape
    np.testing.assert_allclose(loaded.verts.numpy(), verts.numpy(), atol=1e-6)
    np.testing.assert_array_equal(loaded.faces.numpy(), faces.numpy())
    np.testing.assert_allclose(loaded.face_uvs.numpy(), uvs.numpy(), atol=1e-6)
    np.testing.assert_array_equal(loaded.texture.numpy(), tex.numpy())


def test_identity_camera_sheet_and_readme(dataset):
    out, summary = dataset
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.size[0] > 4 * 64 and sheet.size[1] > IDS * 128  # 4 cameras x 4 ids, at 2x
    readme = (out / "README.txt").read_text()
    assert "--seed 5" in readme and f"{summary['counts']['market_images']} JPEGs" in readme


# ------------------------------------------------------------------------------ determinism, resume
def test_the_core_never_loads_ray():
    code = ("import sys, mirror3d.data.synth, mirror3d.data.synth.writer; "
            "print('ray' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "False", res.stderr


def test_other_shard_writers_give_the_same_files(dataset, tmp_path):
    """The files do not depend on the shard size nor on who writes the shards (the order)."""
    out, _ = dataset
    calls = []

    def backwards(cfg, root, shards, todo, advance):
        calls.append(list(todo))
        write_shards_in_process(cfg, root, shards, todo[::-1], advance)

    other = tmp_path / "other"
    summary = generate_dataset(_cfg(other, shard_size=4), write_shards=backwards)
    assert calls == [[0, 1]] and summary["shards"] == 2 and summary["shards_generated"] == 2
    assert file_hashes(other) == file_hashes(out)
    # the recorded settings are the ones a resume compares with (shard size included)
    assert read_settings(other / ".synth" / "config.json")["shard_size"] == 4


def test_rerun_and_partial_resume_leave_identical_files(dataset, tmp_path):
    out, _ = dataset
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = file_hashes(copy)
    again = generate_dataset(_cfg(copy))
    assert again["shards_generated"] == 0 and file_hashes(copy) == before
    marker = copy / ".synth" / "shards" / "00001.done"
    files = json.loads(marker.read_text())["files"]
    assert any(f.startswith("Market-1501/") for f in files)
    for f in files:
        (copy / f).unlink()
    marker.unlink()
    resumed = generate_dataset(_cfg(copy))
    assert resumed["shards_generated"] == 1
    assert file_hashes(copy) == before


def test_bad_arguments_raise_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="ids"):
        generate_dataset(_cfg(tmp_path / "a", ids=1))
    with pytest.raises(ConfigError, match="images_per_id"):
        generate_dataset(_cfg(tmp_path / "a", images_per_id=1))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        generate_dataset(_cfg(foreign))
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        generate_dataset(_cfg(afile))


def test_other_settings_in_an_existing_dataset_are_refused(dataset):
    out, _ = dataset
    with pytest.raises(ValueError, match="seed 5 .now 6."):
        generate_dataset(_cfg(out, seed=6))
