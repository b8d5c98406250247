"""Top-k gallery search: GalleryIndex.search vs a plain numpy baseline (and faiss if installed).

Default: 100,000 x 512 random L2-normalised float32 gallery (~200 MB), 1,000 queries, top-10.
The baseline is the obvious numpy code: one (Q, N) matmul, argpartition for the top k, then a
sort of those k. All methods should return the same top-k indices; mismatches are printed, and
the exit code is 1 if more than 1 % of the queries differ as sets.

    python benchmarks/bench_search.py            # full size
    python benchmarks/bench_search.py --quick    # tiny run

Writes benchmarks/results/bench_search.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from mirror3d.retrieval import GalleryIndex, faiss_available

RESULTS = Path(__file__).resolve().parent / "results" / "bench_search.json"


def numpy_topk(gallery: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Plain baseline: (Q, N) scores, argpartition, sort the k best (score desc, index asc)."""
    sims = queries @ gallery.T
    part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(sims, part, 1)
    order = np.lexsort((part, -part_scores), axis=1)
    return np.take_along_axis(part_scores, order, 1), np.take_along_axis(part, order, 1)


def timed(fn, repeats: int) -> tuple[list[float], object]:
    out = fn()  # warm-up (also the result that is compared)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times, out


def mismatches(a: np.ndarray, b: np.ndarray) -> dict[str, int]:
    """Queries whose top-k differs: as ordered lists, and as sets."""
    return {
        "ordered": int((a != b).any(axis=1).sum()),
        "as_sets": int(sum(set(x) != set(y) for x, y in zip(a.tolist(), b.tolist()))),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gallery", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=1_000)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny run (5,000 x 128, 100 queries)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.quick:
        args.gallery, args.dim, args.queries, args.repeats = 5_000, 128, 100, 2

    rng = np.random.default_rng(args.seed)
    gallery = rng.standard_normal((args.gallery, args.dim), dtype=np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    queries = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    meta = pa.table({
        "pid": np.arange(args.gallery) % 751,
        "camid": np.arange(args.gallery) % 6,
        "path": [f"g/{i}.jpg" for i in range(args.gallery)],
    })
    print(f"gallery {args.gallery} x {args.dim} ({gallery.nbytes / 2**20:.0f} MiB), "
          f"{args.queries} queries, top-{args.k}, torch threads {torch.get_num_threads()}")

    t0 = time.perf_counter()
    index = GalleryIndex(gallery, meta, backend="torch")
    build_ms = (time.perf_counter() - t0) * 1e3

    results: dict[str, dict] = {}
    t_ours, (_, idx_ours) = timed(lambda: index.search(queries, args.k), args.repeats)
    results["gallery_index_torch"] = {"ms": t_ours, "median_ms": statistics.median(t_ours)}
    t_np, (_, idx_np) = timed(lambda: numpy_topk(gallery, queries, args.k), args.repeats)
    results["numpy_matmul_argpartition"] = {"ms": t_np, "median_ms": statistics.median(t_np)}

    faiss_note = None
    idx_faiss = None
    if faiss_available():
        import faiss

        fidx = faiss.IndexFlatIP(args.dim)
        fidx.add(gallery)
        t_f, (_, idx_faiss) = timed(lambda: fidx.search(queries, args.k), args.repeats)
        results["faiss_index_flat_ip"] = {"ms": t_f, "median_ms": statistics.median(t_f)}
    else:
        faiss_note = "faiss not installed"
        print(faiss_note)

    mism = {"gallery_index_vs_numpy": mismatches(idx_ours, idx_np)}
    if idx_faiss is not None:
        mism["faiss_vs_numpy"] = mismatches(idx_faiss.astype(np.int64), idx_np)

    base = results["numpy_matmul_argpartition"]["median_ms"]
    print(f"{'method':<28}{'median ms':>12}{'numpy / method':>16}")
    for name, r in results.items():
        r["speedup_vs_numpy"] = base / r["median_ms"]
        print(f"{name:<28}{r['median_ms']:>12.1f}{r['speedup_vs_numpy']:>16.2f}")
    print(f"GalleryIndex build (normalise + checks): {build_ms:.1f} ms")
    for name, m in mism.items():
        status = "identical" if m["ordered"] == 0 else f"{m['ordered']} queries differ ({m['as_sets']} as sets)"
        print(f"top-{args.k} {name}: {status}")

    report = {
        "benchmark": "bench_search",
        "config": {k: getattr(args, k) for k in ("gallery", "dim", "queries", "k", "repeats", "seed", "quick")},
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "build_ms": build_ms,
        "results": results,
        "mismatches": mism,
        "faiss": faiss_note or "installed",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    # Float rounding can swap near-ties at the k-th place in a rare query; a real bug would
    # change the top-k of many queries.
    return 0 if all(m["as_sets"] <= 0.01 * args.queries for m in mism.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
