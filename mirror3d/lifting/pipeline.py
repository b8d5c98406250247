"""The lifting job on Ray Data: a re-id dataset → point-cloud parquet shards for OG-Net.

Flow::

    re-id reader (records: path, pid, camid, split)  [+ mask lookup in a mask tree]
      → shard plan: per split, consecutive groups of ``shard_size`` records in the reader's sorted
        order, named ``<split>-<k:05d>`` (deterministic: the same names and contents every run)
      → Ray Data: one row per missing shard → ``map_batches(ShardLifter, batch_size=1,
        compute=ActorPoolStrategy(...), num_cpus=…, num_gpus=…)``; each actor builds the
        reconstructor once, then per shard decodes, lifts and writes ``<out>/<shard>.parquet``
        (schema of :mod:`mirror3d.lifting.shards`) and ``<out>/_meta/<shard>.json`` (counts)
      → summary (all shards, also those done by earlier runs) and pictures in ``runs/lift/<name>``.

Resuming: a shard is done when its meta file exists and its parquet exists (or the meta says it
holds no row). Re-running lifts only the missing shards; since every random draw is seeded by
the image path (relative to the dataset root) and ``seed``, the result is identical. The out dir
keeps the settings it was lifted with (``_meta/lift_settings.json``); a re-run with different
settings is refused unless ``overwrite``.

Bad input never stops the job; it is counted, listed in the summary and logged:

- ``bad``: an image (or its mask) that cannot be read or decoded;
- ``no_mask``: a ``casl-*`` mode and no mask found for the image in ``mask_dir`` (skipped; with
  ``missing_mask="estimate"`` the mask is estimated by GrabCut instead, counted as ``estimated``);
- ``rejected``: fewer than ``min_points`` points with ``short="reject"`` (or none at all);
- ``padded``: fewer than ``min_points`` points, padded by repetition (kept).

Python API: :func:`run_lift` (``use_ray=False`` runs the same code in a plain loop);
CLI: ``python -m mirror3d lift ...`` and ``jobs/lift.py``.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
import pathlib
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from mirror3d.utils.config import config_to_dict

log = logging.getLogger(__name__)

__all__ = [
    "LiftConfig",
    "ShardJob",
    "MaskIndex",
    "mask_key",
    "LiftReport",
    "LiftCommand",
    "ShardLifter",
    "build_reconstructor",
    "check_reconstructor",
    "plan_shards",
    "run_lift",
    "load_sample_image",
]

META_DIR = "_meta"
SETTINGS_FILE = "lift_settings.json"
#: Settings that change the content of the shards (compared when resuming).
CONTENT_KEYS = ("root", "reader", "mask_dir", "mask_threshold", "missing_mask", "splits",
                "image_size", "mode",
                "num_points", "min_points", "short", "oversample", "depth_tol", "height", "frame",
                "seed",
                "reconstructor", "checkpoint", "shard_size")


# ------------------------------------------------------------------------------ config
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
        "help": "casl (mirror3d.models.casl.load_casl(checkpoint)) | oracle-template | "
                "oracle-sphere | module:factory (factory(checkpoint) → reconstructor)"})
    checkpoint: str = field(default="", metadata={"help": "CASL checkpoint (casl-* modes)"})
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
        "help": "run name under runs/lift (default: a timestamp); a run of that name is replaced"})
    runs_root: str = field(default="runs", metadata={"help": "root of run directories"})
    preview: int = field(default=4, metadata={
        "range": (0, 1000), "help": "samples drawn as PNG (input + 3 views) and exported as PLY"})
    overwrite: bool = field(default=False, metadata={
        "help": "replace shards lifted with different settings"})
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

    def out_dir(self) -> pathlib.Path:
        return pathlib.Path(self.out or f"data/lifted/{self.mode.replace('+', '_')}")

    def params(self):
        from mirror3d.lifting.modes import LiftParams

        return LiftParams(num_points=self.num_points, min_points=self.min_points, short=self.short,
                          oversample=self.oversample, depth_tol=self.depth_tol, height=self.height,
                          frame=self.frame)




# ------------------------------------------------------------------------------ masks
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
        from mirror3d.data.masks import is_image_file

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


# ------------------------------------------------------------------------------ plan
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
    from mirror3d.data.readers import read_reid

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


# ------------------------------------------------------------------------------ reconstructor
def _oracle(kind: str, device: str):
    import torch

    from mirror3d.lifting.visible import MeshReconstruction, OracleReconstructor
    from mirror3d.render import ico_sphere, look_at_camera, template_mesh

    if kind == "oracle-template":
        verts, faces, _ = template_mesh(device=device)
    else:
        verts, faces = ico_sphere(3, 0.5, device=device)
    cam = look_at_camera(0.0, 0.0, 2.5, device=device, dtype=torch.float32)
    return OracleReconstructor(MeshReconstruction(verts.float(), faces.long(), cam))


def _factory_target(spec: str, checkpoint: str) -> tuple[str, tuple]:
    """(``"module:attr"``, positional args) of a non-oracle reconstructor spec, checked."""
    if spec == "casl":
        if not checkpoint:
            raise ValueError("checkpoint: the casl reconstructor needs a CASL checkpoint path")
        if not pathlib.Path(checkpoint).exists():
            raise FileNotFoundError(f"checkpoint: {checkpoint} does not exist")
        return "mirror3d.models.casl:load_casl", (checkpoint,)
    if ":" in spec:
        return spec, ((checkpoint,) if checkpoint else ())
    raise ValueError(f"reconstructor: expected casl, oracle-template, oracle-sphere or "
                     f"'module:factory', got {spec!r}")


def _import_factory(target: str):
    module, _, attr = target.partition(":")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"reconstructor: cannot import {target} ({e})") from None
    if not callable(factory):
        raise ValueError(f"reconstructor: {target} is not callable")
    return factory


def check_reconstructor(spec: str, checkpoint: str = "") -> None:
    """Check that ``spec`` names a usable reconstructor without building it (driver side)."""
    if spec in ("oracle-template", "oracle-sphere"):
        return
    target, _ = _factory_target(spec, checkpoint)
    _import_factory(target)


def build_reconstructor(spec: str, checkpoint: str = "", device: str = "cpu"):
    """The reconstructor named by ``spec`` (see ``LiftConfig.reconstructor``).

    ``oracle-template``: the CASL template (a normalised icosphere, 1.8 tall) seen from the front
    at distance 2.5 for every image; ``oracle-sphere``: a 0.5-radius icosphere likewise;
    ``casl``: ``mirror3d.models.casl.load_casl(checkpoint)``; ``module:factory``:
    ``factory(checkpoint)`` (``device=`` is passed to factories that take it).
    """
    if spec in ("oracle-template", "oracle-sphere"):
        return _oracle(spec, device)
    target, args = _factory_target(spec, checkpoint)
    factory = _import_factory(target)
    kwargs = {}
    try:
        if "device" in inspect.signature(factory).parameters:
            kwargs["device"] = device
    except (TypeError, ValueError):
        pass
    rec = factory(*args, **kwargs)
    if not callable(getattr(rec, "reconstruct", None)):
        raise ValueError(f"reconstructor: {target} returned {type(rec).__name__}, which has no "
                         f".reconstruct(image, mask)")
    return rec


# ------------------------------------------------------------------------------ lifting
def load_sample_image(path: str, mask_path: str, cfg: LiftConfig):
    """Decode an image (H, W, 3) uint8 and its mask (H, W) bool or None, resized to
    ``cfg.image_size`` (bicubic for the image, nearest for the mask; a mask of another size
    than its image is resized to the image's)."""
    from PIL import Image

    from mirror3d.data.masks import load_binary_mask, load_rgb

    image = load_rgb(path)
    if cfg.image_size is not None and (image.shape[1], image.shape[0]) != tuple(cfg.image_size):
        image = np.asarray(Image.fromarray(image).resize(tuple(cfg.image_size), Image.BICUBIC))
    mask = None
    if mask_path:
        try:
            mask = load_binary_mask(mask_path, cfg.mask_threshold)
        except (ValueError, FileNotFoundError) as e:
            raise ValueError(f"mask {mask_path}: {e}") from None
        if mask.shape != image.shape[:2]:
            m = Image.fromarray(mask.astype(np.uint8) * 255)
            mask = np.asarray(m.resize((image.shape[1], image.shape[0]), Image.NEAREST)) > 127
    return image, mask


def _write_json(path: pathlib.Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


class ShardLifter:
    """The actor of the pool: builds the reconstructor once, then lifts and writes shards.

    Ray Data calls it with a batch ``{"job": [ShardJob JSON]}`` and gets ``{"summary": [JSON]}``
    back (one per shard). :meth:`lift_job` does one shard without Ray.

    Args:
        cfg: the job's config.
        set_threads: apply ``cfg.torch_threads`` to this process (actors: yes; the in-process
            loop of ``run_lift(use_ray=False)`` leaves the caller's setting alone).
    """

    def __init__(self, cfg: LiftConfig, set_threads: bool = True) -> None:
        import torch

        from mirror3d.lifting.modes import MODES_NEEDING_MASK

        if set_threads and cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        self.cfg = cfg
        self.params = cfg.params()
        self.out = cfg.out_dir()
        self.device = "cuda" if cfg.gpus_per_actor > 0 and torch.cuda.is_available() else "cpu"
        self.reconstructor = None
        if cfg.mode in MODES_NEEDING_MASK:
            self.reconstructor = build_reconstructor(cfg.reconstructor, cfg.checkpoint, self.device)
        self.pid = os.getpid()

    def lift_job(self, job: ShardJob) -> dict:
        from mirror3d.lifting.modes import (MODES_NEEDING_MASK, MissingMask, TooFewPoints,
                                            lift_image, seed_for_key)
        from mirror3d.lifting.shards import write_shard

        t0, started, cpu0 = time.perf_counter(), time.time(), os.times()
        needs_mask = self.cfg.mode in MODES_NEEDING_MASK
        clouds, keep, bad, no_mask, rejected, padded, estimated = [], [], [], [], [], [], []
        for i, (path, mpath, key) in enumerate(zip(job.paths, job.masks, job.keys)):
            if needs_mask and not mpath and self.cfg.missing_mask == "skip":
                no_mask.append(path)
                continue
            try:
                image, mask = load_sample_image(path, mpath if needs_mask else "", self.cfg)
            except (ValueError, FileNotFoundError, OSError) as e:
                bad.append([path, " ".join(str(e).split())])
                continue
            if needs_mask and mask is None:
                from mirror3d.data.masks import estimate_mask

                try:
                    mask = estimate_mask(image, seed=seed_for_key(key, self.cfg.seed) % 2**31)
                except ValueError as e:
                    bad.append([path, f"mask estimation failed: {e}"])
                    continue
                estimated.append(path)
            try:
                res = lift_image(image, mask, self.cfg.mode, self.reconstructor, self.params,
                                 seed_for_key(key, self.cfg.seed))
            except MissingMask:
                no_mask.append(path)
                continue
            except TooFewPoints as e:
                rejected.append([path, str(e)])
                continue
            clouds.append(res.points)
            keep.append(i)
            if res.padded:
                padded.append(path)
        sizes = [len(c) for c in clouds]
        if clouds:
            write_shard(self.out / f"{job.name}.parquet", clouds, [job.pids[i] for i in keep],
                        [job.camids[i] for i in keep], [job.split] * len(keep),
                        [job.paths[i] for i in keep], self.cfg.mode)
        meta = {"shard": job.name, "split": job.split, "images": len(job.paths),
                "rows": len(clouds), "bad": bad, "no_mask": no_mask, "rejected": rejected,
                "padded": padded, "estimated": estimated,
                "points_min": min(sizes) if sizes else 0, "points_max": max(sizes) if sizes else 0,
                "points_sum": int(sum(sizes)), "seconds": round(time.perf_counter() - t0, 4),
                "started": started, "finished": time.time(), "worker": self.pid}
        cpu1 = os.times()
        meta["cpu_user"] = round(cpu1.user - cpu0.user, 4)
        meta["cpu_system"] = round(cpu1.system - cpu0.system, 4)
        _write_json(self.out / META_DIR / f"{job.name}.json", meta)
        return meta

    def __call__(self, batch: dict) -> dict:
        metas = [self.lift_job(ShardJob.from_json(str(j))) for j in batch["job"]]
        return {"summary": np.array([json.dumps(m) for m in metas], dtype=object)}


# ------------------------------------------------------------------------------ driver
@dataclass
class LiftReport:
    """What :func:`run_lift` did."""

    out_dir: pathlib.Path
    run_dir: pathlib.Path | None
    summary: dict
    lifted_shards: list[str]
    skipped_shards: list[str]


def _settings(cfg: LiftConfig) -> dict:
    d = config_to_dict(cfg)
    s = {k: d[k] for k in CONTENT_KEYS}
    s["root"] = str(pathlib.Path(cfg.root).resolve())
    if cfg.mask_dir:
        s["mask_dir"] = str(pathlib.Path(cfg.mask_dir).resolve())
    return s


def _prepare_out(cfg: LiftConfig) -> pathlib.Path:
    out = cfg.out_dir()
    meta = out / META_DIR
    settings = _settings(cfg)
    path = meta / SETTINGS_FILE
    if path.exists():
        old = json.loads(path.read_text())
        diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if diff and not cfg.overwrite:
            raise ValueError(f"out: {out} holds shards lifted with other settings "
                             f"({', '.join(diff)} differ); use another out dir or overwrite=true")
        if diff:
            log.warning("lift: overwriting %s (settings changed: %s)", out, ", ".join(diff))
            for f in list(out.glob("*.parquet")) + list(meta.glob("*.json")):
                f.unlink()
    _write_json(path, settings)
    return out


def _shard_done(out: pathlib.Path, name: str) -> bool:
    meta = out / META_DIR / f"{name}.json"
    if not meta.exists():
        return False
    try:
        rows = json.loads(meta.read_text())["rows"]
    except (ValueError, KeyError):
        return False
    return rows == 0 or (out / f"{name}.parquet").exists()


def _lift_with_ray(cfg: LiftConfig, jobs: Sequence[ShardJob]) -> list[dict]:
    import ray

    from mirror3d.platform.train import ensure_ray

    ensure_ray()
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = bool(cfg.progress)
    if cfg.max_actors:
        compute = ray.data.ActorPoolStrategy(min_size=cfg.actors, max_size=cfg.max_actors)
    else:
        compute = ray.data.ActorPoolStrategy(size=cfg.actors)
    ds = ray.data.from_items([{"job": j.to_json()} for j in jobs], override_num_blocks=len(jobs))
    ds = ds.map_batches(
        ShardLifter,
        batch_size=1,
        batch_format="numpy",
        compute=compute,
        fn_constructor_kwargs={"cfg": cfg},
        num_cpus=cfg.cpus_per_actor,
        num_gpus=cfg.gpus_per_actor or None,
    )
    return [json.loads(row["summary"]) for row in ds.iter_rows()]


def _summarize(out: pathlib.Path, jobs: Sequence[ShardJob]) -> dict:
    metas = [json.loads((out / META_DIR / f"{j.name}.json").read_text()) for j in jobs]
    total = {k: sum(m[k] for m in metas) for k in ("images", "rows", "points_sum")}
    lists = {k: [x for m in metas for x in m[k]]
             for k in ("bad", "no_mask", "rejected", "padded", "estimated")}
    per_split: dict[str, dict] = {}
    for m in metas:
        s = per_split.setdefault(m["split"], {"images": 0, "rows": 0, "shards": 0})
        s["images"] += m["images"]
        s["rows"] += m["rows"]
        s["shards"] += 1
    rows = [m for m in metas if m["rows"]]
    return {
        "shards": len(metas), "images": total["images"], "rows": total["rows"],
        "counts": {k: len(v) for k, v in lists.items()}, **lists, "splits": per_split,
        "points_min": min((m["points_min"] for m in rows), default=0),
        "points_max": max((m["points_max"] for m in rows), default=0),
        "points_mean": total["points_sum"] / total["rows"] if total["rows"] else 0.0,
    }


def _log_problems(summary: dict) -> None:
    what = {"bad": "unreadable image(s)", "no_mask": "image(s) without a mask (skipped)",
            "rejected": "cloud(s) with too few points (rejected)",
            "padded": "cloud(s) padded by repetition to min_points",
            "estimated": "mask(s) estimated by GrabCut (no mask file)"}
    for key, text in what.items():
        items = summary[key]
        if items:
            first = [x[0] if isinstance(x, list) else x for x in items[:3]]
            log.warning("lift: %d %s, e.g. %s", len(items), text, ", ".join(first))


def _pictures(cfg: LiftConfig, out: pathlib.Path, jobs: Sequence[ShardJob],
              dest: pathlib.Path) -> None:
    from mirror3d.lifting.shards import read_shards
    from mirror3d.lifting.viz import export_ply, save_lift_picture

    left = cfg.preview
    for job in jobs:
        if left <= 0:
            break
        shard = out / f"{job.name}.parquet"
        if not shard.exists():
            continue
        samples = read_shards(shard)
        for i in range(min(left, len(samples))):
            path = str(samples.path[i])
            stem = f"{job.name}_{i:03d}_{pathlib.Path(path).stem}"
            try:
                image, _ = load_sample_image(path, "", cfg)
            except (ValueError, FileNotFoundError, OSError):
                image = None
            save_lift_picture(samples.points[i], image, dest / f"{stem}.png",
                              title=f"{cfg.mode}: {pathlib.Path(path).name}, "
                                    f"{len(samples.points[i])} points")
            export_ply(samples.points[i], dest / f"{stem}.ply")
            left -= 1


def run_lift(cfg: LiftConfig, use_ray: bool = True, run_dir: bool = True) -> LiftReport:
    """Lift ``cfg.root`` into shards under ``cfg.out_dir()`` (resuming), then write the summary
    and pictures into ``runs/lift/<name>`` (when ``run_dir``).

    Args:
        use_ray: lift in a Ray Data actor pool (else in this process, one shard after another).
    Raises:
        ValueError: a mode that needs masks without ``mask_dir``, an unusable reconstructor, an
            out dir lifted with other settings, or a dataset with no image in ``splits``.
    """
    from mirror3d.lifting.modes import MODES_NEEDING_MASK

    if cfg.mode in MODES_NEEDING_MASK:
        if not cfg.mask_dir and cfg.missing_mask == "skip":
            raise ValueError(f"mask_dir: mode {cfg.mode!r} needs foreground masks; set mask_dir "
                             f"(e.g. the Market-HQ tree next to the Market-1501 one) or "
                             f"missing_mask=estimate")
        check_reconstructor(cfg.reconstructor, cfg.checkpoint)  # fail fast, before Ray
    jobs, read_summary = plan_shards(cfg)
    if not jobs:
        raise ValueError(f"root: no image of splits {list(cfg.splits)} in {cfg.root}")
    out = _prepare_out(cfg)
    pending = [j for j in jobs if not _shard_done(out, j.name)]
    skipped = [j.name for j in jobs if j not in pending]
    t0 = time.perf_counter()
    if pending:
        log.info("lift: %d of %d shards to lift (%d done before)", len(pending), len(jobs),
                 len(skipped))
        if use_ray:
            _lift_with_ray(cfg, pending)
        else:
            lifter = ShardLifter(cfg, set_threads=False)
            for j in pending:
                lifter.lift_job(j)
    seconds = time.perf_counter() - t0
    summary = _summarize(out, jobs)
    summary.update({"mode": cfg.mode, "out": str(out), "lifted_shards": len(pending),
                    "skipped_shards": len(skipped), "seconds": round(seconds, 3),
                    "images_per_second": round(sum(len(j.paths) for j in pending) / seconds, 3)
                    if pending and seconds > 0 else None,
                    "read": str(read_summary)})
    _log_problems(summary)
    _write_json(out / META_DIR / "summary.json", summary)
    final = None
    if run_dir:
        from mirror3d.utils.rundir import final_path, run_directory

        with run_directory("lift", cfg.name or None, cfg.runs_root, config=cfg,
                           overwrite=bool(cfg.name)) as tmp:
            _write_json(tmp / "summary.json", summary)
            if cfg.preview:
                _pictures(cfg, out, jobs, tmp / "pictures")
            final = final_path(tmp)
    return LiftReport(out, final, summary, [j.name for j in pending], skipped)


# ------------------------------------------------------------------------------ CLI
class LiftCommand:
    """``python -m mirror3d lift [--config FILE] [--mode casl-visible+bg] [--root DIR] ...``"""

    @staticmethod
    def add_arguments(parser) -> None:
        from mirror3d.cli import add_config_arguments

        parser.add_argument("--no-ray", action="store_true",
                            help="lift in this process instead of a Ray Data actor pool")
        add_config_arguments(parser, LiftConfig)

    @staticmethod
    def run(args) -> int:
        from mirror3d.cli import config_from_args

        cfg = config_from_args(LiftConfig, args)
        rep = run_lift(cfg, use_ray=not args.no_ray)
        s = rep.summary
        c = s["counts"]
        print(f"lift {cfg.mode}: {s['rows']} samples in {s['shards']} shards -> {rep.out_dir} "
              f"({len(rep.lifted_shards)} lifted, {len(rep.skipped_shards)} already done; "
              f"bad {c['bad']}, no mask {c['no_mask']}, estimated masks {c['estimated']}, "
              f"rejected {c['rejected']}, padded {c['padded']}); run: {rep.run_dir}")
        return 0
