"""Lifting one shard in one process: decode, lift, write ``<out>/<shard>.parquet`` and its meta.

:class:`ShardLifter` builds the reconstructor once (``casl-*`` modes) and then lifts shard after
shard (:meth:`ShardLifter.lift_job`). It knows nothing of Ray: the in-process run of
:func:`mirror3d.lifting.run.lift_dataset` loops over it, and the Ray Data actor pool of
:mod:`mirror3d.platform.lifting` holds one per actor. Images are decoded by the one decode path
:func:`mirror3d.data.decode.decode_image`; the lifting modes are those of
:mod:`mirror3d.lifting.modes` (the OG-Net paper's Table I inputs, Zheng et al. 2022).

Bad input never stops a shard; it is counted in the shard's meta file
``<out>/_meta/<shard>.json``:

- ``bad``: an image (or its mask) that cannot be read or decoded or is refused by the image
  decoder (:mod:`mirror3d.data.images`: a format or Pillow mode it does not take, more pixels than
  ``max_pixels``, a side below ``min_side``), a mask of another size than its image
  (:class:`mirror3d.data.decode.MaskSizeError`, unless ``mask_mismatch="resize"``), a failed mask
  estimation, or a mask the reconstructor cannot use (:class:`mirror3d.models.casl.MaskError`: empty, full, or
  with no foreground pixel left at the model's input size — e.g. a GrabCut estimate of 3 pixels);
- ``no_mask``: a ``casl-*`` mode and no mask for the image (``missing_mask="skip"``);
- ``estimated``: no mask file, the mask was estimated by GrabCut (``missing_mask="estimate"``);
- ``rejected``: fewer than ``min_points`` points with ``short="reject"`` (or none at all);
- ``padded``: fewer than ``min_points`` points, padded by repetition (kept).

The meta also says who lifted the shard: ``worker`` (the process id) and ``node`` (the Ray node
id of the actor's node, handed in by :mod:`mirror3d.platform.lifting` as ``worker_info``;
``"local"`` when lifted in the driver's process), so a multi-node run shows its spread.

A reconstructor's own error (``synth-truth``: an image the ground truth does not list) is not bad
input: it stops the shard, naming the image (the driver checks every image before lifting).
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import torch

from mirror3d.data.decode import decode_image
from mirror3d.data.images import ImageLimits
from mirror3d.lifting.config import LiftConfig
from mirror3d.lifting.modes import MODES_NEEDING_MASK, MissingMask, TooFewPoints, lift_image, seed_for_key
from mirror3d.lifting.plan import ShardJob
from mirror3d.lifting.reconstructors import build_reconstructor
from mirror3d.lifting.shards import write_shard
from mirror3d.models.casl import MaskError
from mirror3d.utils.files import atomic_write

__all__ = ["META_DIR", "image_limits", "load_sample_image", "ShardLifter"]

#: The folder of the out dir holding the per-shard meta files, the settings and the summary.
META_DIR = "_meta"


def image_limits(cfg: LiftConfig) -> ImageLimits:
    """The image decoder's limits of a lifting config: ``cfg.max_pixels`` and ``cfg.min_side``."""
    return ImageLimits(max_pixels=cfg.max_pixels, min_side=cfg.min_side)


def load_sample_image(path: str, mask_path: str, cfg: LiftConfig,
                      estimate_seed: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode an image (H, W, 3) uint8 and its mask (H, W) bool or None, resized to
    ``cfg.image_size`` (bicubic for the image, nearest for the mask). The image decoder's limits
    are :func:`image_limits`; a mask of another size than its image is an error
    (:class:`~mirror3d.data.decode.MaskSizeError`) unless ``cfg.mask_mismatch`` is ``"resize"``
    (then it is resized to the image's, nearest). Without ``mask_path``, ``estimate_seed``
    given: the mask is estimated by GrabCut with that seed.

    Raises:
        FileNotFoundError, ValueError: see :func:`mirror3d.data.decode.decode_image`.
    """
    d = decode_image(path, mask_path or None, mask_threshold=cfg.mask_threshold,
                     missing_mask="none" if estimate_seed is None else "estimate",
                     image_size=cfg.image_size, seed=estimate_seed or 0,
                     mask_mismatch=cfg.mask_mismatch,
                     limits=image_limits(cfg))
    return d.image, d.mask


class ShardLifter:
    """Builds the reconstructor once, then lifts and writes shards (:meth:`lift_job`).

    Args:
        cfg: the job's config.
        set_threads: apply ``cfg.torch_threads`` to this process (actors: yes; the in-process
            loop leaves the caller's setting alone).
        worker_info: fields merged into every meta, e.g. ``{"node": <Ray node id>}`` from an
            actor; default ``{"node": "local"}``.
    """

    def __init__(self, cfg: LiftConfig, set_threads: bool = True,
                 worker_info: dict | None = None) -> None:
        if set_threads and cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        self.cfg = cfg
        self.params = cfg.params()
        self.out = cfg.out_dir()
        self.device = "cuda" if cfg.gpus_per_actor > 0 and torch.cuda.is_available() else "cpu"
        self.reconstructor = None
        if cfg.mode in MODES_NEEDING_MASK:
            self.reconstructor = build_reconstructor(cfg.reconstructor, cfg.checkpoint, self.device,
                                                     cfg.refine_steps, root=cfg.root)
        self.pid = os.getpid()
        self.worker_info = {"node": "local", **(worker_info or {})}

    def lift_job(self, job: ShardJob) -> dict:
        """Lift one shard; writes the parquet (when a row is left) and the meta file, returns
        the meta (counts, lists of problem images, timings)."""
        t0, started, cpu0 = time.perf_counter(), time.time(), os.times()
        needs_mask = self.cfg.mode in MODES_NEEDING_MASK
        clouds, keep, bad, no_mask, rejected, padded, estimated = [], [], [], [], [], [], []
        for i, (path, mpath, key) in enumerate(zip(job.paths, job.masks, job.keys)):
            if needs_mask and not mpath and self.cfg.missing_mask == "skip":
                no_mask.append(path)
                continue
            seed = seed_for_key(key, self.cfg.seed)
            estimate = needs_mask and not mpath
            try:
                image, mask = load_sample_image(path, mpath if needs_mask else "", self.cfg,
                                                seed % 2**31 if estimate else None)
            except (ValueError, FileNotFoundError, OSError) as e:
                bad.append([path, " ".join(str(e).split())])
                continue
            if estimate:
                estimated.append(path)
            try:
                res = lift_image(image, mask, self.cfg.mode, self.reconstructor, self.params, seed,
                                 path=path)
            except MissingMask:
                no_mask.append(path)
                continue
            except MaskError as e:
                bad.append([path, " ".join(str(e).split())])
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
                "started": started, "finished": time.time(), "worker": self.pid,
                **self.worker_info}
        cpu1 = os.times()
        meta["cpu_user"] = round(cpu1.user - cpu0.user, 4)
        meta["cpu_system"] = round(cpu1.system - cpu0.system, 4)
        atomic_write(self.out / META_DIR / f"{job.name}.json",
                     json.dumps(meta, indent=1, sort_keys=True))
        return meta
