"""The lifting tests' dataset: a Market-1501 tree (27 images) + one corrupt image, and Market-HQ
style masks for every image but one (tests/lifting, tests/platform/test_lifting.py and
tests/jobs/test_lift.py import it as ``lifting.lift_fixtures``)."""

from __future__ import annotations

import pathlib

import numpy as np

import dataset_fixtures as fx
from mirror3d.lifting.config import LiftConfig


def make_lift_tree(tmp: pathlib.Path) -> dict:
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


def lift_cfg(tree: dict, tmp: pathlib.Path, **kw) -> LiftConfig:
    """A small casl-visible+bg config over the tree (oracle reconstructor), out dirs in tmp."""
    base = dict(root=str(tree["root"]), mask_dir=str(tree["masks"]), mode="casl-visible+bg",
                reconstructor="oracle-template", image_size=(16, 32), num_points=300,
                min_points=64, shard_size=4, out=str(tmp / "out"), runs_root=str(tmp / "runs"),
                name="t", actors=2, preview=2, progress=False)
    base.update(kw)
    return LiftConfig(**base)


def assert_same_samples(a, b) -> None:
    """Two PointSamples hold the same rows, points and labels, in the same order."""
    assert len(a) == len(b)
    assert list(a.path) == list(b.path)
    assert all(np.array_equal(x, y) for x, y in zip(a.points, b.points))
    assert np.array_equal(a.pid, b.pid) and np.array_equal(a.camid, b.camid)
    assert list(a.split) == list(b.split) and list(a.mode) == list(b.mode)
