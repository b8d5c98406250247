"""Tiny re-id inputs for the re-id engine, platform and job tests: a Market-1501 tree
(tests/dataset_fixtures.py) and its flat-lifted point-cloud shards, written in-process with the
lifting primitives (every pixel as (x, y, 0); one shard per split)."""

from __future__ import annotations

import pathlib

import numpy as np
from PIL import Image

import dataset_fixtures
from mirror3d.data.readers import read_market1501
from mirror3d.lifting.flat import lift_flat
from mirror3d.lifting.shards import write_shard


def flat_shards(root: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    """Flat-lift every image of the Market-1501 tree ``root`` into ``out/<split>-00000.parquet``."""
    records, _ = read_market1501(root)
    for split in ("train", "query", "gallery"):
        recs = [r for r in records if r.split == split]
        clouds = []
        for r in recs:
            with Image.open(r.path) as im:
                clouds.append(lift_flat(np.asarray(im.convert("RGB"))))
        write_shard(out / f"{split}-00000.parquet", clouds, [r.pid for r in recs],
                    [r.camid for r in recs], [split] * len(recs),
                    [str(pathlib.Path(r.path).resolve()) for r in recs], "flat")
    return out


def market_and_shards(tmp: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """(Market-1501 root, its flat shards) under ``tmp``."""
    root = dataset_fixtures.make_market1501(tmp / "m")
    return root, flat_shards(root, tmp / "shards")
