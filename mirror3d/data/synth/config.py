"""The settings of a SynthPeople dataset (:class:`SynthConfig`), the ``synth`` job's config.

The job itself (``python -m mirror3d synth``) is :mod:`mirror3d.jobs.synth`; the generator is
:mod:`mirror3d.data.synth.writer` (in one process) and :mod:`mirror3d.platform.synth` (Ray tasks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mirror3d.utils.config import ConfigError

__all__ = ["MAX_FRAMES", "SynthConfig", "resolved_counts"]

#: The largest frame number a Market name can hold (``FFFFFF``).
MAX_FRAMES = 999_999


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
        if units * self.images_per_id > MAX_FRAMES:
            raise ConfigError(
                f"ids, images_per_id: (ids + distractor_ids + junk_ids) x images_per_id = "
                f"{units * self.images_per_id} images do not fit the 6-digit Market frame number "
                f"(at most {MAX_FRAMES})")
        if not self.out:
            raise ConfigError("out: expected a directory path")


def resolved_counts(cfg: SynthConfig) -> tuple[int, int, int]:
    """(identities, distractor people, junk people) with the defaults filled in."""
    d = math.ceil(cfg.ids / 10) if cfg.distractor_ids is None else cfg.distractor_ids
    j = math.ceil(cfg.ids / 20) if cfg.junk_ids is None else cfg.junk_ids
    return cfg.ids, d, j
