"""One shard in one process (mirror3d/lifting/lifter.py): decode, lift, write, count."""

import json

import numpy as np
from PIL import Image

import dataset_fixtures as fx
from lifting.lift_fixtures import lift_cfg, make_lift_tree
from mirror3d.lifting.lifter import META_DIR, ShardLifter, load_sample_image
from mirror3d.lifting.plan import plan_shards
from mirror3d.lifting.shards import read_shards


def test_lifter_reuses_one_reconstructor_and_writes_meta(tmp_path):
    tree = make_lift_tree(tmp_path / "data")
    cfg = lift_cfg(tree, tmp_path)
    jobs, _ = plan_shards(cfg)
    lifter = ShardLifter(cfg)
    rec = lifter.reconstructor
    train = [j for j in jobs if j.split == "train"]
    metas = [lifter.lift_job(j) for j in train]
    assert lifter.reconstructor is rec
    masked = sum(1 for j in train for m in j.masks if m)
    assert rec.calls == masked - 1  # the corrupt image never reaches the model
    assert [m["rows"] for m in metas] == [4, 4, 4, 0]
    assert metas[-1]["bad"][0][0] == tree["corrupt"] and "cannot decode" in metas[-1]["bad"][0][1]
    on_disk = json.loads((cfg.out_dir() / META_DIR / "train-00000.json").read_text())
    assert on_disk == metas[0]
    got = read_shards(cfg.out_dir() / "train-00000.parquet")
    assert list(got.path) == train[0].paths and list(got.pid) == train[0].pids


def test_load_sample_image_resizes_image_and_mask(tmp_path):
    img = fx.write_rgb(tmp_path / "a.jpg", size=(8, 16), seed=1)
    mask = np.zeros((32, 16), np.uint8)  # another size than the image: resized to the image's
    mask[8:24, 4:12] = 255
    mpath = fx.write_mask(tmp_path / "a.png", mask)
    cfg = lift_cfg({"root": str(tmp_path), "masks": str(tmp_path)}, tmp_path, image_size=(4, 8))
    image, m = load_sample_image(str(img), str(mpath), cfg)
    want = np.asarray(Image.open(img).convert("RGB").resize((4, 8), Image.BICUBIC))
    np.testing.assert_array_equal(image, want)
    assert m.shape == (8, 4) and m.dtype == bool and m[4, 2] and not m[0, 0]
    image, m = load_sample_image(str(img), "", cfg)
    assert m is None and image.shape == (8, 4, 3)
    _, est = load_sample_image(str(img), "", cfg, estimate_seed=3)
    assert est.shape == (8, 4) and est.dtype == bool
