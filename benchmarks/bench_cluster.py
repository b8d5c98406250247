"""Multi-node benchmark: lifting (Ray Data actor pool) and SynthPeople generation (Ray tasks) on a
simulated cluster of 1 worker node vs 2 worker nodes, the same total work, measured in the same run.

The cluster is the tests' simulated one (tests/cluster_fixtures.py, ``ray.cluster_utils.Cluster``
as in Ray's own test suite): a head without CPUs (the driver's node, as on a real cluster where
the head only schedules) and ``nodes`` worker nodes of ``--cpus-per-node`` CPUs each, all raylets
in this machine on 127.0.0.1. Each job uses every worker CPU: the lifting pool has
``nodes x cpus-per-node`` actors of 1 CPU (1 torch thread), synth runs as many tasks at a time
(spread over the nodes). So the ratio 1 node / 2 nodes is the speed-up from adding a node; on
this 2-core machine the ideal is 2x with 1 CPU per node, and every raylet, object store and Ray
worker process of the extra node competes for the same 2 cores.

Work (defaults; ``--quick`` for a smoke check of the script):

- lifting, per ``--modes``: ``casl-visible+bg`` (the CASL template as oracle reconstruction,
  64x128, 8192 points: decode, rasterise, sample, z-test, colour, write; everything but the CASL
  forward pass) and ``flat`` (every pixel a point: little work per image, so start-up and Ray's
  per-shard cost weigh more), the dataset of benchmarks/bench_lift.py. Reported end to end (the
  pool's actor start-up included, as a job sees it) and steady (the images of the shards finished
  after the first one, over the time from the first shard's end to the last one's).
- synth: benchmarks/bench_synth.py's dataset (24 ids x 10 images at 64x128, 2 ids per shard),
  after a tiny warm-up run on the same cluster (the tasks reuse warm worker processes).

Both clusters' outputs are checked identical (parquet bytes / synth file hashes). Cluster
start-up is not timed. JSON goes to benchmarks/results/bench_cluster.json.

    python benchmarks/bench_cluster.py [--quick] [--cpus-per-node 1] [--images 256] [--repeats 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import pathlib
import platform
import shutil
import sys
import tempfile
import time

from mirror3d.utils.env import apply_local_env

apply_local_env()  # first: the local Ray/OpenMP environment, before torch or Ray load

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench_lift import make_dataset  # noqa: E402  (benchmarks/ is the script's folder)
from mirror3d.data.synth.config import SynthConfig, resolved_counts  # noqa: E402
from mirror3d.data.synth.writer import file_hashes  # noqa: E402
from mirror3d.lifting.config import LiftConfig  # noqa: E402
from mirror3d.platform.lifting import run_lift  # noqa: E402
from mirror3d.platform.synth import generate_dataset  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
from cluster_fixtures import simulated_cluster  # noqa: E402

from results_io import RESULTS, write_result  # noqa: E402  (benchmarks/ is the script's folder)


def lift_once(cfg: LiftConfig) -> dict:
    """Run the lifting job once on the connected cluster: seconds end to end and steady."""
    t0 = time.perf_counter()
    rep = run_lift(cfg, run_dir=False)
    wall = time.perf_counter() - t0
    metas = [json.loads(p.read_text()) for p in sorted((rep.out_dir / "_meta").glob("*-*.json"))]
    fin = sorted(metas, key=lambda m: m["finished"])
    span = fin[-1]["finished"] - fin[0]["finished"]
    steady_images = sum(m["images"] for m in fin[1:])
    digest = hashlib.sha256()
    for p in sorted(rep.out_dir.glob("*.parquet")):
        digest.update(p.name.encode() + p.read_bytes())
    return {"seconds": round(wall, 3), "lift_seconds": rep.summary["seconds"],
            "images": rep.summary["images"],
            "images_per_s": round(rep.summary["images"] / rep.summary["seconds"], 2),
            "steady_images_per_s": round(steady_images / span, 2) if span > 0 else float("nan"),
            "nodes_used": len({m["node"] for m in metas}),
            "actors_used": len({(m["node"], m["worker"]) for m in metas}),
            "parquet_sha256": digest.hexdigest()}


def synth_once(cfg: SynthConfig) -> dict:
    t0 = time.perf_counter()
    generate_dataset(cfg)
    sec = time.perf_counter() - t0
    nodes = json.loads((pathlib.Path(cfg.out) / ".synth" / "ray_nodes.json").read_text())
    hashes = file_hashes(cfg.out)
    return {"seconds": round(sec, 3), "nodes_used": len(set(nodes.values())),
            "files_sha256": hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()}


def run_on_cluster(nodes: int, args, tmp: pathlib.Path, lift_base: LiftConfig,
                   synth_base: dict, tag: str) -> dict:
    """Start a cluster of ``nodes`` worker nodes, run every workload once, shut it down."""
    slots = nodes * args.cpus_per_node
    out: dict = {}
    with simulated_cluster(workers=nodes, cpus_per_worker=args.cpus_per_node, head_cpus=0):
        for mode in args.modes:
            cfg = dataclasses.replace(lift_base, mode=mode, actors=slots,
                                      out=str(tmp / f"lift-{mode}-{tag}"))
            out[f"lift {mode}"] = lift_once(cfg)
        tiny = {**synth_base, "ids": 2, "images_per_id": 2, "shard_size": 1}
        generate_dataset(SynthConfig(out=str(tmp / f"warmup-{tag}"), workers=slots, **tiny))
        out["synth"] = synth_once(SynthConfig(out=str(tmp / f"synth-{tag}"), workers=slots,
                                              **synth_base))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes, flat lifting only (a smoke check of the script)")
    ap.add_argument("--cpus-per-node", type=int, default=1)
    ap.add_argument("--images", type=int, default=256, help="lifting images")
    ap.add_argument("--shard-size", type=int, default=16)
    ap.add_argument("--modes", nargs="+", default=["casl-visible+bg", "flat"],
                    choices=["casl-visible+bg", "casl-visible", "flat"])
    ap.add_argument("--ids", type=int, default=24, help="synth identities")
    ap.add_argument("--images_per_id", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=1,
                    help="rounds of (1 node, 2 nodes); medians are reported")
    ap.add_argument("--out", default=str(RESULTS / "bench_cluster.json"))
    args = ap.parse_args()
    n_images, shard, size, ids, m, synth_shard = (args.images, args.shard_size, (64, 128),
                                                  args.ids, args.images_per_id, 2)
    if args.quick:
        n_images, shard, size, ids, m, synth_shard = 16, 4, (32, 64), 4, 2, 1
        args.modes = ["flat"]

    torch.set_num_threads(1)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench_cluster_"))
    load_before = os.getloadavg()
    try:
        market, hq = make_dataset(tmp / "data", n_images)
        lift_base = LiftConfig(root=str(market), mask_dir=str(hq), mode="flat",
                               reconstructor="oracle-template", image_size=size,
                               num_points=8192, min_points=768 if not args.quick else 64,
                               shard_size=shard, preview=0, progress=False, torch_threads=1,
                               cpus_per_actor=1.0)
        synth_base = dict(ids=ids, images_per_id=m, image_size=size, shard_size=synth_shard,
                          floor=False, progress=False, seed=0)
        trials: dict[int, list[dict]] = {1: [], 2: []}
        for k in range(max(1, args.repeats)):
            for nodes in (1, 2):
                t = time.perf_counter()
                res = run_on_cluster(nodes, args, tmp, lift_base, synth_base, f"{nodes}n{k}")
                trials[nodes].append(res)
                print(f"[{k + 1}/{args.repeats}] {nodes} worker node(s): "
                      + ", ".join(f"{w} {r['seconds']:.1f} s" for w, r in res.items())
                      + f" (with cluster start/stop {time.perf_counter() - t:.0f} s)", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    workloads = list(trials[1][0])
    table, identical = {}, {}
    for w in workloads:
        one = float(np.median([t[w]["seconds"] for t in trials[1]]))
        two = float(np.median([t[w]["seconds"] for t in trials[2]]))
        row = {"seconds_1_node": round(one, 3), "seconds_2_nodes": round(two, 3),
               "speedup": round(one / two, 3),
               "nodes_used_2_nodes": trials[2][0][w]["nodes_used"]}
        if w.startswith("lift"):
            s1 = float(np.median([t[w]["steady_images_per_s"] for t in trials[1]]))
            s2 = float(np.median([t[w]["steady_images_per_s"] for t in trials[2]]))
            row.update(steady_images_per_s_1_node=round(s1, 2),
                       steady_images_per_s_2_nodes=round(s2, 2),
                       steady_speedup=round(s2 / s1, 3) if s1 > 0 else float("nan"))
        key = "parquet_sha256" if w.startswith("lift") else "files_sha256"
        identical[w] = len({t[w][key] for ts in trials.values() for t in ts}) == 1
        table[w] = row

    print(f"\n{args.cpus_per_node} CPU per worker node, head without CPUs; "
          f"{os.cpu_count()} cores in this machine")
    print(f"{'workload':<22} {'1 node (s)':>11} {'2 nodes (s)':>12} {'speed-up':>9} "
          f"{'steady':>7}  identical")
    for w, r in table.items():
        steady = f"{r['steady_speedup']:.2f}x" if "steady_speedup" in r else "-"
        print(f"{w:<22} {r['seconds_1_node']:>11.1f} {r['seconds_2_nodes']:>12.1f} "
              f"{r['speedup']:>8.2f}x {steady:>7}  {identical[w]}")
    result = {
        "benchmark": "bench_cluster", "quick": args.quick, "repeats": args.repeats,
        "cpus_per_node": args.cpus_per_node, "lift_images": n_images, "lift_shard_size": shard,
        "image_size": list(size), "synth_ids": ids, "synth_images_per_id": m,
        "synth_images": sum(resolved_counts(SynthConfig(**synth_base))) * m,
        "table": table, "identical_outputs": identical, "trials": trials,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_before": load_before, "load_avg_after": os.getloadavg()},
        "note": "speed-up = seconds with 1 worker node / with 2 (same work, every worker CPU "
                "used); cluster start-up not timed; all nodes share this machine's cores",
    }
    write_result(result, args.out)


if __name__ == "__main__":
    main()
