"""``python -m mirror3d synth``: generate the SynthPeople benchmark.

    python -m mirror3d synth --ids 200 --images-per-id 12 --out data/synthpeople --seed 0

writes a Market-1501 tree, a Market-HQ reconstruction tree and the 3D ground truth (see
:mod:`mirror3d.data.synth.writer`). A re-run with the same settings resumes: finished shards
are skipped and the files come out identical.

This module stays light (no torch / ray at import): ``mirror3d synth --help`` imports only the
config.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field

from mirror3d.utils.config import ConfigError

__all__ = ["SynthConfig", "add_arguments", "run", "resolved_counts"]

#: The largest frame number a Market name can hold (``FFFFFF``).
_MAX_FRAMES = 999_999


@dataclass
class SynthConfig:
    """SynthPeople generation settings."""

    out: str = field(default="data/synthpeople", metadata={
        "help": "output directory (created; must be empty, new, or an earlier run with the same settings)"})
    ids: int = field(default=200, metadata={
        "range": (2, 9999), "help": "identities (pids 1..ids); half train, half test"})
    images_per_id: int = field(default=12, metadata={
        "range": (2, 1000), "help": "images per identity"})
    seed: int = field(default=0, metadata={"range": (0, 2**31 - 1), "help": "dataset seed"})
    image_size: tuple[int, int] = field(default=(64, 128), metadata={
        "range": (8, 2048), "metavar": "W,H", "help": "image size in pixels, W,H"})
    cameras: int = field(default=6, metadata={
        "range": (2, 9), "help": "camera ids (each with its own background style, light and azimuth sector)"})
    distractor_ids: int | None = field(default=None, metadata={
        "range": (0, 100_000),
        "help": "extra people written as pid 0000 into bounding_box_test (default: ceil(ids/10))"})
    junk_ids: int | None = field(default=None, metadata={
        "range": (0, 100_000),
        "help": "extra people rendered badly cropped or tiny, written as pid -1 (default: ceil(ids/20))"})
    shard_size: int = field(default=8, metadata={
        "range": (1, 100_000), "help": "identities per shard (the unit of parallel work and of resume)"})
    workers: int = field(default=2, metadata={"range": (1, 256), "help": "parallel Ray tasks"})
    no_ray: bool = field(default=False, metadata={"help": "generate in a plain loop in this process"})
    jpeg_quality: int = field(default=95, metadata={"range": (1, 100), "help": "Market-1501 JPEG quality"})
    floor: bool = field(default=True, metadata={
        "help": "compute the raw-pixel nearest-neighbour re-id floor at the end"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})

    def validate(self) -> None:
        units = sum(resolved_counts(self))
        if units * self.images_per_id > _MAX_FRAMES:
            raise ConfigError(
                f"ids, images_per_id: (ids + distractor_ids + junk_ids) x images_per_id = "
                f"{units * self.images_per_id} images do not fit the 6-digit Market frame number "
                f"(at most {_MAX_FRAMES})")
        if not self.out:
            raise ConfigError("out: expected a directory path")


def resolved_counts(cfg: SynthConfig) -> tuple[int, int, int]:
    """(identities, distractor people, junk people) with the defaults filled in."""
    d = math.ceil(cfg.ids / 10) if cfg.distractor_ids is None else cfg.distractor_ids
    j = math.ceil(cfg.ids / 20) if cfg.junk_ids is None else cfg.junk_ids
    return cfg.ids, d, j



# Market-style spellings of the most used options (the config keys use underscores).
_ALIASES = (("--images-per-id", "images_per_id", int), ("--no-ray", "no_ray", None))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mirror3d.cli import add_config_arguments

    add_config_arguments(parser, SynthConfig)
    group = parser.add_argument_group("aliases")
    for flag, key, typ in _ALIASES:
        if typ is None:
            group.add_argument(flag, dest=f"alias_{key}", action="store_true", default=None,
                               help=f"same as --{key}")
        else:
            group.add_argument(flag, dest=f"alias_{key}", type=typ, default=None,
                               metavar=key.upper(), help=f"same as --{key}")


def config_with_aliases(args: argparse.Namespace) -> SynthConfig:
    """The resolved config: defaults < --config FILE < options (aliases count as options)."""
    from mirror3d.cli import config_from_args
    from mirror3d.utils.config import update_config

    cfg = config_from_args(SynthConfig, args)
    updates = {key: getattr(args, f"alias_{key}") for _, key, _ in _ALIASES
               if getattr(args, f"alias_{key}", None) is not None}
    return update_config(cfg, updates) if updates else cfg


def run(args: argparse.Namespace) -> int:
    from mirror3d.data.synth.writer import generate_dataset

    cfg = config_with_aliases(args)
    summary = generate_dataset(cfg)
    c = summary["counts"]
    print(f"synth: wrote {summary['out']} in {summary['seconds']:.1f} s "
          f"({summary['shards_generated']} of {summary['shards']} shards generated): "
          f"{c['identities']} ids, {c['market_images']} Market images "
          f"(train {c['train']}, query {c['query']}, gallery {c['gallery']}), "
          f"{c['hq_images']} Market-HQ pairs, {c['meshes']} meshes")
    floor = summary.get("floor")
    if floor:
        print(f"synth: raw-pixel floor R1 {100 * floor['rank1']:.2f} %, "
              f"mAP {100 * floor['map_trapezoid']:.2f} % (trapezoid) / "
              f"{100 * floor['map_mean_precision']:.2f} % (mean precision)")
    return 0
