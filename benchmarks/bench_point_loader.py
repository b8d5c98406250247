"""Re-id point-cloud loader benchmark: batches/s of the OG-Net training loader
(:class:`mirror3d.data.datasets.PointCloudDataset` through a ``DataLoader``, batch 24, the
per-sample augmentation: centre, flip, subset, scale + jitter) with the numpy augmentation
against the previous torch one (``backend="reference"``), measured interleaved in the same run,
on 24 clouds of 2,048 and of 4,096 points sampled to 512; and the data path's share of an
OG-Net-Small training step at 512 points (the same batch size), also in the same run.

    python benchmarks/bench_point_loader.py             # ~1 minute on 2 cores
    python benchmarks/bench_point_loader.py --quick     # seconds, no OG-Net step
    python benchmarks/bench_point_loader.py --contend   # + the loaders with the other core busy

The environment is the pipeline's (:func:`mirror3d.utils.env.apply_local_env`: OpenMP threads
sleep between parallel regions, ``OMP_WAIT_POLICY=PASSIVE``), where the reference's per-sample
torch indexing ops each wake the second OpenMP thread (2 parallel regions per sample; the numpy
path enters none, checked with ``strace -f -e futex``). ``--contend`` also times the loaders while
a busy-looping child process holds a core, as another trainer of the pipeline does: then each of
those wake-ups can wait a scheduler time slice. Writes benchmarks/results/bench_point_loader.json.
"""

from __future__ import annotations

import argparse
import pathlib
import platform
import statistics
import subprocess
import sys
import time

from mirror3d.utils.env import apply_local_env

apply_local_env()  # the OpenMP environment of the pipeline, before torch loads

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from results_io import RESULTS, write_result  # noqa: E402

from mirror3d.data.datasets import PointCloudDataset  # noqa: E402
from mirror3d.models.ognet.losses import circle_loss  # noqa: E402
from mirror3d.models.registry import create_model  # noqa: E402

BATCH = 24


def person_clouds(count: int, n: int, seed: int = 0, blank_frac: float = 0.02) -> list[np.ndarray]:
    """``count`` (n, 6) float32 clouds (as the shards give them): an ellipsoid surface of person
    extent, rgb in [0, 1] with ``blank_frac`` white (blank) points."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        d = rng.normal(size=(n, 3))
        xyz = d / np.linalg.norm(d, axis=1, keepdims=True) * [0.25, 0.8, 0.15] + [0.0, 0.9, 3.0]
        rgb = rng.random((n, 3))
        rgb[rng.random(n) < blank_frac] = 1.0
        out.append(np.concatenate([xyz, rgb], axis=1).astype(np.float32))
    return out


def loader_seconds(loaders: dict, rounds: int) -> tuple[dict, dict]:
    """Per-batch wall and CPU (process, all threads) seconds of each loader (a full pass each
    round, loaders interleaved, a new epoch of draws per round): two ``{name: [seconds, ...]}``."""
    wall, cpu = {k: [] for k in loaders}, {k: [] for k in loaders}
    for r in range(rounds):
        for name, loader in loaders.items():
            loader.dataset.set_epoch(r)
            t, c = time.perf_counter(), time.process_time()
            for _ in loader:
                now, cnow = time.perf_counter(), time.process_time()
                wall[name].append(now - t)
                cpu[name].append(cnow - c)
                t, c = now, cnow
    return wall, cpu


def bench_loader(n: int, num_points: int, batches: int, rounds: int, train: bool,
                 contended: bool = False) -> dict:
    clouds = person_clouds(BATCH * batches, n, seed=n)
    pids = [i // 4 for i in range(len(clouds))]
    loaders = {b: DataLoader(PointCloudDataset(clouds, pids, num_points=num_points, train=train,
                                               seed=0, short="repeat", backend=b),
                             batch_size=BATCH, shuffle=False, drop_last=True)
               for b in ("reference", "numpy")}
    loader_seconds(loaders, 1)  # warm-up
    times, cpu = loader_seconds(loaders, rounds)
    ref, new = statistics.median(times["reference"]), statistics.median(times["numpy"])
    ref_cpu, new_cpu = statistics.median(cpu["reference"]), statistics.median(cpu["numpy"])
    row = {"points_in": n, "points_out": num_points, "train": train, "batch": BATCH,
           "other_core_busy": contended,
           "batches_timed": len(times["numpy"]),
           "reference_ms_per_batch": 1e3 * ref, "numpy_ms_per_batch": 1e3 * new,
           "reference_batches_per_s": 1.0 / ref, "numpy_batches_per_s": 1.0 / new,
           "speedup": ref / new,
           "reference_cpu_ms_per_batch": 1e3 * ref_cpu, "numpy_cpu_ms_per_batch": 1e3 * new_cpu}
    mode = ("train" if train else "eval ") + (" busy" if contended else "")
    print(f"{n:>5} -> {num_points} {mode}  reference "
          f"{1e3 * ref:8.2f} ms/batch ({1 / ref:7.1f}/s)   numpy {1e3 * new:7.2f} ms/batch "
          f"({1 / new:7.1f}/s)   x{ref / new:.1f}   (CPU {1e3 * ref_cpu:.1f} vs {1e3 * new_cpu:.1f} ms)")
    return row


def ognet_step_seconds(points: int, steps: int) -> tuple[float, float]:
    """Median wall and CPU (process, all threads) seconds of one OG-Net-Small training step
    (forward, cross entropy + circle loss, backward, Adam) on 24 clouds of ``points`` points."""
    torch.manual_seed(0)
    model = create_model("og-net-small", num_classes=150, k=20, init_points=points).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=5e-4, amsgrad=True)
    pts = torch.from_numpy(np.stack(person_clouds(BATCH, points, seed=1)))
    xyz = pts[..., :3] - pts[..., :3].mean(dim=1, keepdim=True)
    rgb = pts[..., 3:] - 0.5
    labels = torch.arange(BATCH) // 4
    times, cpu = [], []
    for i in range(steps + 1):
        t, c = time.perf_counter(), time.process_time()
        out = model(xyz, rgb)
        loss = F.cross_entropy(out.logits, labels) + circle_loss(out.feature, labels, 0.25, 64.0) / BATCH
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:  # the first step warms up
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    return statistics.median(times), statistics.median(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few batches, no OG-Net step")
    ap.add_argument("--rounds", type=int, default=5, help="passes over each loader")
    ap.add_argument("--batches", type=int, default=4, help="batches of 24 clouds per pass")
    ap.add_argument("--num_points", type=int, default=512, help="points per sampled cloud")
    ap.add_argument("--step_iters", type=int, default=3, help="timed OG-Net-Small steps")
    ap.add_argument("--contend", action="store_true",
                    help="also time the training loaders with a busy-looping process on a core")
    ap.add_argument("--out", default=str(RESULTS / "bench_point_loader.json"))
    args = ap.parse_args()
    rounds, batches = (2, 2) if args.quick else (args.rounds, args.batches)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH}")
    rows = [bench_loader(n, args.num_points, batches, rounds, train)
            for n in (2048, 4096) for train in (True, False)]
    if args.contend:
        spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            rows += [bench_loader(n, args.num_points, batches, rounds, True, contended=True)
                     for n in (2048, 4096)]
        finally:
            spin.kill()
            spin.wait()
    result = {"machine": platform.machine(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "quick": args.quick, "loader": rows}
    if not args.quick:
        step, step_cpu = ognet_step_seconds(args.num_points, args.step_iters)
        data = {r["points_in"]: r for r in rows if r["train"] and not r["other_core_busy"]}
        share = {n: {"reference_ms": r["reference_ms_per_batch"], "numpy_ms": r["numpy_ms_per_batch"],
                     "reference_share_of_step": r["reference_ms_per_batch"] / (1e3 * step),
                     "numpy_share_of_step": r["numpy_ms_per_batch"] / (1e3 * step),
                     "reference_cpu_share_of_step": r["reference_cpu_ms_per_batch"] / (1e3 * step_cpu),
                     "numpy_cpu_share_of_step": r["numpy_cpu_ms_per_batch"] / (1e3 * step_cpu)}
                 for n, r in data.items()}
        result["ognet_small_step"] = {"points": args.num_points, "batch": BATCH, "seconds": step,
                                      "cpu_seconds": step_cpu,
                                      "data_per_step": share}
        print(f"OG-Net-Small step ({BATCH} x {args.num_points} points): {1e3 * step:.0f} ms "
              f"(CPU {1e3 * step_cpu:.0f} ms)")
        for n, s in share.items():
            print(f"  data path, {n}-point clouds: reference {s['reference_ms']:.1f} ms "
                  f"({100 * s['reference_share_of_step']:.1f} % of the step), numpy "
                  f"{s['numpy_ms']:.1f} ms ({100 * s['numpy_share_of_step']:.2f} %); CPU share "
                  f"{100 * s['reference_cpu_share_of_step']:.2f} % vs "
                  f"{100 * s['numpy_cpu_share_of_step']:.2f} %")
    write_result(result, args.out)


if __name__ == "__main__":
    main()
