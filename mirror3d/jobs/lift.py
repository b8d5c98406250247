"""Job ``lift``: a re-id dataset → point-cloud parquet shards for OG-Net, on a Ray Data actor pool
(:mod:`mirror3d.platform.lifting`), or in this process with ``--no_ray``. The one entry for every
lifting mode, flat included.

    python -m mirror3d lift --mode flat --root data/synthpeople/Market-1501
    python -m mirror3d lift --mode casl-visible+bg --mask_dir data/synthpeople/Market-HQ \\
        --checkpoint runs/casl/<run>/model_final.pt --actors 2
    python -m mirror3d lift --smoke --no_ray

Shards go to data/lifted/<mode> (``--out``; ``<storage>/lifted/<mode>`` with ``--storage``); the
summary, the bad-image list and the pictures to runs/lift/<name>.
"""

from __future__ import annotations

from mirror3d.lifting.config import LiftConfig
from mirror3d.platform.lifting import run_lift
from mirror3d.utils import storage
from mirror3d.utils.config import update_config

__all__ = ["CONFIG", "run", "at_storage"]

CONFIG = LiftConfig


def at_storage(cfg: LiftConfig, storage_root: str) -> LiftConfig:
    """``--storage``: the shards' default folder (``data/lifted/<mode>``, no ``--out`` given)
    moves under the storage location too, where the re-id jobs look for it."""
    if cfg.out:
        return cfg
    return update_config(cfg, {"out": storage.relocate(cfg.out_location(), storage_root)})


def run(cfg: LiftConfig) -> int:
    rep = run_lift(cfg, use_ray=not cfg.no_ray)
    s = rep.summary
    c = s["counts"]
    print(f"lift {cfg.mode}: {s['rows']} samples in {s['shards']} shards -> {rep.out_dir} "
          f"({len(rep.lifted_shards)} lifted, {len(rep.skipped_shards)} already done; "
          f"bad {c['bad']}, no mask {c['no_mask']}, estimated masks {c['estimated']}, "
          f"rejected {c['rejected']}, padded {c['padded']}); run: {rep.run_dir}")
    print(f"{s['counts_line']} (skipped images with reasons: {rep.run_dir}/skipped.tsv)")
    return 0
