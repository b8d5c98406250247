"""SynthPeople generation benchmark: images/s with a plain loop, 1 Ray worker and 2 Ray workers,
measured in the same run, and the ratios between them.

Every mode writes the same dataset (identical files) into its own temporary directory; Ray is
started once beforehand (its start-up is not timed), and tiny warm-up runs (Ray and loop) make
sure every process has imported torch, trimesh, etc. before the clock starts. Every mode renders
with one torch thread per process (the generator's setting). The machine's load average is
recorded before and after, since other processes may share the CPUs. JSON goes to
benchmarks/results/bench_synth.json.

    python benchmarks/bench_synth.py [--quick] [--ids 24] [--images_per_id 10]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import shutil
import tempfile
import time

from mirror3d.utils.env import apply_local_env

apply_local_env()  # first: the local Ray/OpenMP environment, before torch or Ray load

import ray  # noqa: E402
import torch  # noqa: E402

from mirror3d.data.synth.config import SynthConfig, resolved_counts  # noqa: E402
from mirror3d.data.synth.writer import file_hashes  # noqa: E402
from mirror3d.platform.cluster import local_ray_init_kwargs  # noqa: E402
from mirror3d.platform.synth import generate_dataset  # noqa: E402

from results_io import RESULTS, write_result  # noqa: E402  (benchmarks/ is the script's folder)


def timed_run(cfg: SynthConfig) -> float:
    t0 = time.perf_counter()
    generate_dataset(cfg)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ids", type=int, default=24)
    ap.add_argument("--images_per_id", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="tiny run (smoke check of the script)")
    args = ap.parse_args()
    ids, m, size, shard = args.ids, args.images_per_id, (64, 128), 2
    if args.quick:
        ids, m, size, shard = 4, 3, (32, 64), 1

    ray.init(**local_ray_init_kwargs(num_cpus=2))
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench_synth_"))
    try:
        base = dict(ids=ids, images_per_id=m, image_size=size, shard_size=shard, floor=False,
                    progress=False, seed=0)
        tiny = {**base, "ids": 2, "images_per_id": 2, "shard_size": 1}
        generate_dataset(SynthConfig(out=str(tmp / "warmup_ray"), workers=2, **tiny))
        generate_dataset(SynthConfig(out=str(tmp / "warmup_loop"), no_ray=True, **tiny))
        n_images = sum(resolved_counts(SynthConfig(**base))) * m
        modes = {
            "loop": SynthConfig(out=str(tmp / "loop"), no_ray=True, **base),
            "ray_1_worker": SynthConfig(out=str(tmp / "ray1"), workers=1, **base),
            "ray_2_workers": SynthConfig(out=str(tmp / "ray2"), workers=2, **base),
        }
        results = {"torch": torch.__version__, "torch_threads_per_process": 1,
                   "cpus": os.cpu_count(), "machine": platform.machine(),
                   "load_avg_before": os.getloadavg(), "ids": ids, "images_per_id": m,
                   "image_size": list(size), "shard_size": shard, "images": n_images, "modes": {}}
        print(f"SynthPeople generation, {n_images} images at {size[0]}x{size[1]} "
              f"({ids} ids + distractors + junk, {m} per person)")
        for name, cfg in modes.items():
            sec = timed_run(cfg)
            results["modes"][name] = {"seconds": sec, "images_per_s": n_images / sec}
            print(f"  {name:<14} {sec:7.1f} s  {n_images / sec:7.1f} images/s")
        loop = results["modes"]["loop"]["images_per_s"]
        r1 = results["modes"]["ray_1_worker"]["images_per_s"]
        r2 = results["modes"]["ray_2_workers"]["images_per_s"]
        results["ratios"] = {"ray1_over_loop": r1 / loop, "ray2_over_loop": r2 / loop,
                             "ray2_over_ray1": r2 / r1}
        h = file_hashes(tmp / "loop")
        results["identical_files"] = h == file_hashes(tmp / "ray1") == file_hashes(tmp / "ray2")
        results["load_avg_after"] = os.getloadavg()
        print(f"  ratios: ray1/loop {r1 / loop:.2f}x, ray2/loop {r2 / loop:.2f}x, "
              f"ray2/ray1 {r2 / r1:.2f}x; identical files: {results['identical_files']}")
        print(f"  load average before/after: {results['load_avg_before'][0]:.2f} / "
              f"{results['load_avg_after'][0]:.2f} (other processes share the CPUs)")
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    write_result(results, RESULTS / "bench_synth.json")


if __name__ == "__main__":
    main()
