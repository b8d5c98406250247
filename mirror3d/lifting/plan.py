"""The shard plan of the lifting job: which images go into which shard, with which mask.

Per split (train, query, gallery, in that order), consecutive groups of ``shard_size`` records in
the reader's sorted order form the shards ``<split>-<k:05d>``: the same names and contents every
run, which is what resuming relies on. A :class:`MaskIndex` finds each image's foreground mask
(Market-HQ's ``seg_hmr/`` tree or any folder of mask images) by the image's stem.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
from dataclasses import asdict, dataclass
from typing import Any

from mirror3d.data.masks import is_image_file
from mirror3d.data.readers import read_reid
from mirror3d.lifting.config import LiftConfig

__all__ = ["mask_key", "MaskIndex", "ShardJob", "plan_shards"]

# "_0.45.png": a ratio has a decimal point (Market names themselves end in "_NN")
_RATIO_SUFFIX = re.compile(r"_\d\.\d+\.png$", re.IGNORECASE)
_IMAGE_SUFFIX = re.compile(r"\.(jpe?g|png|bmp|tiff?|webp|ppm)$", re.IGNORECASE)
_SPLIT_FOLDERS = {"train": {"train_all", "train", "bounding_box_train"},
                  "query": {"query"}, "gallery": {"gallery", "bounding_box_test", "test"}}


def mask_key(name: str) -> str:
    """The image stem a mask file belongs to: ``0002_c1s1_000451_03.jpg_0.45.png`` (Market-HQ),
    ``0002_c1s1_000451_03.jpg.png`` and ``0002_c1s1_000451_03.png`` all →
    ``0002_c1s1_000451_03``."""
    base = _RATIO_SUFFIX.sub("", name) if _RATIO_SUFFIX.search(name) else name
    while _IMAGE_SUFFIX.search(base):
        base = _IMAGE_SUFFIX.sub("", base, count=1)
    return base


class MaskIndex:
    """Masks of a folder tree, found by image stem (and split folder when a stem repeats).

    Args:
        mask_dir: a Market-HQ root (its ``seg_hmr/`` is used) or any folder of mask images.
    """

    def __init__(self, mask_dir: str | os.PathLike) -> None:
        root = pathlib.Path(mask_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"mask_dir: {root} is not a directory")
        if (root / "seg_hmr").is_dir():
            root = root / "seg_hmr"
        self.root = root
        self._by_key: dict[str, list[pathlib.Path]] = {}
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for fn in sorted(filenames):
                if is_image_file(fn):
                    self._by_key.setdefault(mask_key(fn), []).append(pathlib.Path(dirpath) / fn)
        if not self._by_key:
            raise FileNotFoundError(f"mask_dir: no mask image under {root}")

    def __len__(self) -> int:
        return len(self._by_key)

    def find(self, image_path: str | os.PathLike, split: str | None = None) -> pathlib.Path | None:
        """The mask of an image (by its stem), preferring one under a folder named like ``split``
        (``train_all``/``train``, ``query``, ``gallery``/``bounding_box_test``); None if absent."""
        cands = self._by_key.get(pathlib.Path(image_path).stem)
        if not cands:
            return None
        if len(cands) > 1 and split in _SPLIT_FOLDERS:
            for c in cands:
                if _SPLIT_FOLDERS[split] & set(c.relative_to(self.root).parts[:-1]):
                    return c
        return cands[0]


@dataclass
class ShardJob:
    """One shard to lift: its name and its images (all of one split)."""

    name: str
    split: str
    paths: list[str]
    masks: list[str]  # "" = no mask
    keys: list[str]  # seed keys: path relative to the dataset root
    pids: list[int]
    camids: list[int]

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ShardJob":
        return cls(**json.loads(text))


def plan_shards(cfg: LiftConfig) -> tuple[list[ShardJob], Any]:
    """Read the dataset and cut it into shards (deterministic). Returns (jobs, read summary)."""
    records, summary = read_reid(cfg.reader, cfg.root)
    index = MaskIndex(cfg.mask_dir) if cfg.mask_dir else None
    root = pathlib.Path(cfg.root)
    jobs = []
    for split in ("train", "query", "gallery"):
        if split not in cfg.splits:
            continue
        recs = [r for r in records if r.split == split]
        for k in range(0, len(recs), cfg.shard_size):
            chunk = recs[k:k + cfg.shard_size]
            masks = []
            for r in chunk:
                m = index.find(r.path, split) if index is not None else None
                masks.append(str(m) if m is not None else "")
            keys = []
            for r in chunk:
                try:
                    keys.append(pathlib.Path(r.path).relative_to(root).as_posix())
                except ValueError:
                    keys.append(pathlib.Path(r.path).as_posix())
            jobs.append(ShardJob(f"{split}-{k // cfg.shard_size:05d}", split,
                                 [str(r.path) for r in chunk], masks, keys,
                                 [int(r.pid) for r in chunk], [int(r.camid) for r in chunk]))
    return jobs, summary
