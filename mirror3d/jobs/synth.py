"""Job ``synth``: generate the SynthPeople benchmark (procedural clothed people with identities,
camera ids and 3D ground truth).

    python -m mirror3d synth --ids 200 --images_per_id 12 --out data/synthpeople --seed 0
    python -m mirror3d synth --smoke --out /tmp/synth      # a tiny dataset in seconds

writes a Market-1501 tree, a Market-HQ reconstruction tree and the 3D ground truth (layout:
:mod:`mirror3d.data.synth.writer`), the shards as Ray tasks (:mod:`mirror3d.platform.synth`;
``--no_ray`` for a plain loop). A re-run with the same settings resumes: finished shards are
skipped and the files come out identical.
"""

from __future__ import annotations

from mirror3d.data.synth.config import SynthConfig
from mirror3d.platform.synth import generate_dataset

__all__ = ["CONFIG", "run"]

CONFIG = SynthConfig


def run(cfg: SynthConfig) -> int:
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
