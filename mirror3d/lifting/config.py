"""The lifting job's config: a re-id dataset → point-cloud shards (job ``lift``).

:class:`LiftConfig` is the config of ``python -m mirror3d lift`` (:mod:`mirror3d.jobs.lift`) and
the ``lift`` section of the pipeline. :data:`CONTENT_KEYS` are the settings the shards' content
depends on: they are recorded next to the shards and compared when a run resumes
(:func:`content_settings`, :mod:`mirror3d.utils.fingerprint`), together with the identity of the
dataset and mask files (:func:`mirror3d.utils.fingerprint.files_digest`, added by
:func:`mirror3d.lifting.run.prepare_out`). The layering is described in docs/architecture.md.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field
from typing import Literal

from mirror3d.lifting.modes import LiftParams
from mirror3d.utils import storage
from mirror3d.utils.config import config_to_dict

__all__ = ["LiftConfig", "CONTENT_KEYS", "content_settings"]

#: Settings that change the content of the shards (compared when resuming).
CONTENT_KEYS = ("root", "reader", "mask_dir", "mask_threshold", "missing_mask", "splits",
                "image_size", "mode",
                "num_points", "min_points", "short", "oversample", "depth_tol", "height", "frame",
                "seed",
                "reconstructor", "checkpoint", "refine_steps", "shard_size",
                "max_pixels", "min_side", "mask_mismatch")


@dataclass
class LiftConfig:
    """Lifting a re-id dataset to point-cloud shards (Ray Data, actor pool)."""

    root: str = field(default="data/synthpeople/Market-1501", metadata={
        "help": "re-id dataset root in the layout of `reader`"})
    reader: str = field(default="market1501", metadata={
        "choices": ["market1501", "dukemtmc", "cuhk03_np", "msmt17"], "help": "dataset layout"})
    mask_dir: str | None = field(default=None, metadata={
        "help": "foreground masks: a Market-HQ root (uses its seg_hmr/) or a folder of "
                "<img>_<r.rr>.png / <stem>.png masks, searched recursively (casl-* modes)"})
    mask_threshold: int = field(default=0, metadata={
        "range": (0, 254), "help": "mask pixels > this are foreground"})
    max_pixels: int = field(default=25_000_000, metadata={
        "range": (1, None), "help": "images with more pixels (W·H, read from the header before "
                                    "decoding) are bad input, counted"})
    min_side: int = field(default=8, metadata={
        "range": (1, None), "help": "images whose smaller side is below this are bad input, "
                                    "counted"})
    mask_mismatch: Literal["error", "resize"] = field(default="error", metadata={
        "help": "a mask of another size than its image: bad input (counted), or resized "
                "(nearest)"})
    missing_mask: Literal["skip", "estimate"] = field(default="skip", metadata={
        "help": "casl-* modes, image without a mask file: skip it (counted), or estimate the "
                "mask with GrabCut (counted); Market-HQ has no gallery masks"})
    splits: tuple[str, ...] = field(default=("train", "query", "gallery"), metadata={
        "choices": ["train", "query", "gallery"], "help": "splits to lift"})
    image_size: tuple[int, int] | None = field(default=(64, 128), metadata={
        "range": (1, 4096), "metavar": "W,H", "help": "resize images (and masks) to W,H first; "
                                                      "none keeps each image's size"})
    mode: Literal["flat", "casl-visible", "casl-visible+bg"] = field(default="flat", metadata={
        "help": "flat (x, y, 0) | casl-visible (visible mesh part) | casl-visible+bg (+ background "
                "at the mean body depth)"})
    num_points: int = field(default=8192, metadata={
        "range": (1, 10_000_000), "help": "points per sample (density); larger clouds are "
                                          "subsampled"})
    min_points: int = field(default=768, metadata={
        "range": (0, 10_000_000), "help": "fewer points → pad or reject (OG-Net's first FPS "
                                          "level is 768)"})
    short: Literal["pad", "reject"] = field(default="pad", metadata={
        "help": "a cloud below min_points: pad by repetition, or reject (counted)"})
    oversample: float = field(default=2.0, metadata={
        "range": (1e-3, 1000.0), "help": "surface samples drawn per wanted visible point"})
    depth_tol: float = field(default=0.02, metadata={
        "range": (0.0, 10.0), "help": "visibility tolerance in view depth (object units)"})
    height: float = field(default=1.8, metadata={
        "range": (1e-6, None), "help": "flat mode: world units spanned by the image height"})
    frame: Literal["object", "camera"] = field(default="object", metadata={
        "help": "casl-* modes: points in the mesh's object frame, or in the predicted camera's "
                "frame (the background plane of casl-visible+bg then always faces +z)"})
    seed: int = field(default=0, metadata={"help": "base seed (per image: hash of seed and path)"})
    reconstructor: str = field(default="casl", metadata={
        "help": "casl (mirror3d.models.casl.load_casl(checkpoint)) | synth-truth (each "
                "SynthPeople image's true mesh and camera: an oracle that needs ground truth, "
                "no checkpoint) | oracle-template | oracle-sphere | module:factory "
                "(factory(checkpoint) → reconstructor)"})
    checkpoint: str = field(default="", metadata={"help": "CASL checkpoint (casl-* modes)"})
    refine_steps: int = field(default=0, metadata={
        "range": (0, 100_000),
        "help": "casl reconstructor: test-time refinement steps per image (0 = the network's "
                "prediction; beyond the papers, mirror3d.models.casl.refine)"})
    no_ray: bool = field(default=False, metadata={
        "help": "lift in this process, one shard after another, instead of a Ray Data actor pool"})
    actors: int = field(default=2, metadata={"range": (1, 4096), "help": "actor pool size (min)"})
    max_actors: int = field(default=0, metadata={
        "range": (0, 4096), "help": "autoscale the pool up to this many actors (0: fixed pool)"})
    cpus_per_actor: float = field(default=1.0, metadata={"range": (0.0, 1024.0)})
    gpus_per_actor: float = field(default=0.0, metadata={"range": (0.0, 64.0)})
    torch_threads: int = field(default=1, metadata={
        "range": (0, 1024), "help": "torch threads per actor (0: torch's default)"})
    shard_size: int = field(default=256, metadata={
        "range": (1, 1_000_000), "help": "images per shard = per actor call (the batch)"})
    out: str = field(default="", metadata={
        "help": "shard directory (default: data/lifted/<mode>, '+' as '_')"})
    name: str = field(default="", metadata={
        "help": "run name under runs/lift (default: a timestamp); an existing run of that name "
                "is refused unless --overwrite"})
    runs_root: str = field(default="runs", metadata={"help": "root of run directories"})
    preview: int = field(default=4, metadata={
        "range": (0, 1000), "help": "samples drawn as PNG (input + 3 views) and exported as PLY"})
    overwrite: bool = field(default=False, metadata={
        "help": "replace the run of this --name if it exists, and shards in out lifted with "
                "other settings (or another dataset)"})
    min_usable_fraction: float = field(default=0.5, metadata={
        "range": (0.0, 1.0), "help": "fail when fewer than this fraction of the images read "
                                     "give a sample (none at all always fails)"})
    progress: bool = field(default=True, metadata={"help": "Ray Data progress bars"})

    def validate(self) -> None:
        if self.min_points > self.num_points:
            raise ValueError(f"min_points ({self.min_points}) must be <= num_points "
                             f"({self.num_points})")
        if self.max_actors and self.max_actors < self.actors:
            raise ValueError(f"max_actors ({self.max_actors}) must be 0 or >= actors "
                             f"({self.actors})")
        if not self.splits:
            raise ValueError("splits: expected at least one split")

    def out_location(self) -> str:
        """Where the shards are stored: a local folder or a storage URI
        (:mod:`mirror3d.utils.storage`)."""
        return self.out or f"data/lifted/{self.mode.replace('+', '_')}"

    def out_dir(self) -> pathlib.Path:
        """The local folder the shards are written to and read from: :meth:`out_location`, or
        its stage on this node when that is a URI."""
        return storage.local_path(self.out_location())

    def params(self) -> LiftParams:
        return LiftParams(num_points=self.num_points, min_points=self.min_points, short=self.short,
                          oversample=self.oversample, depth_tol=self.depth_tol, height=self.height,
                          frame=self.frame)


def content_settings(cfg: LiftConfig) -> dict:
    """The :data:`CONTENT_KEYS` of ``cfg`` as plain values, dataset and mask paths resolved:
    what ``<out>/_meta/lift_settings.json`` records."""
    d = config_to_dict(cfg)
    s = {k: d[k] for k in CONTENT_KEYS}
    s["root"] = str(pathlib.Path(cfg.root).resolve())
    if cfg.mask_dir:
        s["mask_dir"] = str(pathlib.Path(cfg.mask_dir).resolve())
    return s
