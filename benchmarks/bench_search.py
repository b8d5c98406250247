"""Gallery search: GalleryIndex's torch fallback vs its faiss default (exact), and an approximate
method (faiss IVF, optionally HNSW) against exact search on a large generated gallery.

Part 1, exact (default 100,000 x 512 random L2-normalised float32 gallery, 1,000 queries, top-10):
``GalleryIndex(backend="torch")`` (chunked matmul + topk, the fallback and the reference),
``GalleryIndex(backend="faiss")`` (``IndexFlatIP``, the default) and the obvious numpy code (one
(Q, N) matmul, argpartition, sort of the k). Printed: median ms, torch / faiss (the issue's goal:
≤ 1.5), each method's achieved FLOP/s (2·Q·N·D per search) as a fraction of this machine's dense
float32 matmul peak (``torch.mm`` of 2,048² matrices, measured in the same run), and whether the
top-10 lists agree.

Also each exact backend's latency for one query at a time (the demo's case, ``--single``).

Part 2, approximate (default 1,000,000 x 512 generated re-id-like features: 100,000 identities'
unit centres plus Gaussian noise, 10 gallery samples each; queries are other samples of gallery
identities; see :func:`reid_like`): exact faiss search gives the true top-10; then
``GalleryIndex(method="ivf")`` (and ``"hnsw"`` with ``--ann-methods ivf,hnsw``; its graph build
takes many minutes at 1M on 2 cores) is built (time printed) and searched at several ``nprobe``
(``ef_search``) values: recall@10 vs exact and ms/query (all queries at once, and one at a
time), next to exact search's.
Memory: ~3 copies of the gallery (6 GB at 1M x 512).

    python benchmarks/bench_search.py                 # full size (several minutes on 2 cores)
    python benchmarks/bench_search.py --quick         # smoke check (5,000 x 128; ANN 20,000 x 128)
    python benchmarks/bench_search.py --ann-gallery 0 # exact part only

Writes benchmarks/results/bench_search.json. Exit code 1 if more than 1 % of the queries' exact
top-10 differ as sets between any two exact methods (float rounding can swap a near-tie at the
10th place in a rare query; a bug changes many).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import RESULTS, write_result  # noqa: E402  (benchmarks/ is the script's folder)

from mirror3d.retrieval import GalleryIndex, faiss_available  # noqa: E402

OUT = RESULTS / "bench_search.json"


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


def matmul_peak_flops(n: int = 2048, repeats: int = 5) -> float:
    """Dense float32 ``torch.mm`` FLOP/s on (n, n) matrices: best of ``repeats``."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(timed(lambda: torch.mm(a, b), repeats)[0]) / 1e3
    return 2 * n**3 / best


def mismatches(a: np.ndarray, b: np.ndarray) -> dict[str, int]:
    """Queries whose top-k differs: as ordered lists, and as sets."""
    return {
        "ordered": int((a != b).any(axis=1).sum()),
        "as_sets": int(sum(set(x) != set(y) for x, y in zip(a.tolist(), b.tolist()))),
    }


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / k."""
    return float(np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(approx.tolist(), exact.tolist())]))


def unit_rows(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_meta(n: int) -> pa.Table:
    return pa.table({"pid": np.arange(n) % 751, "camid": np.arange(n) % 6,
                     "path": [f"g/{i}.jpg" for i in range(n)]})


def reid_like(n: int, q: int, d: int, ids: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) gallery and (q, d) queries, unit rows: identity centres (unit, random directions)
    plus N(0, noise²/d) per dimension (a sample's noise has norm ≈ ``noise``: cosine ≈ 0.74
    between two samples of one identity at noise 0.6, ≈ 0 ± 0.04 between identities at d = 512).
    Gallery row i is identity i mod ``ids`` (n / ids samples each: the true top-10 of a query
    at 1M / 100k are its identity's 10 gallery samples); queries are random identities.
    Made in blocks of 100k rows."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.standard_normal((ids, d), dtype=np.float32))
    sigma = np.float32(noise / np.sqrt(d))

    def samples(m: int, round_robin: bool) -> np.ndarray:
        out = np.empty((m, d), dtype=np.float32)
        for s in range(0, m, 100_000):
            e = min(m, s + 100_000)
            out[s:e] = centres[np.arange(s, e) % ids if round_robin else rng.integers(0, ids, e - s)]
            out[s:e] += sigma * rng.standard_normal((e - s, d), dtype=np.float32)
        return unit_rows(out)

    return samples(n, True), samples(q, False)


def exact_part(args, peak: float) -> tuple[dict, dict]:
    rng = np.random.default_rng(args.seed)
    gallery = unit_rows(rng.standard_normal((args.gallery, args.dim), dtype=np.float32))
    queries = unit_rows(rng.standard_normal((args.queries, args.dim), dtype=np.float32))
    meta = make_meta(args.gallery)
    print(f"exact: gallery {args.gallery} x {args.dim} ({gallery.nbytes / 2**20:.0f} MiB), "
          f"{args.queries} queries, top-{args.k}")
    flop = 2.0 * args.queries * args.gallery * args.dim
    results: dict[str, dict] = {}
    idx: dict[str, np.ndarray] = {}
    methods = {"gallery_index_torch": GalleryIndex(gallery, meta, backend="torch")}
    if faiss_available():
        methods["gallery_index_faiss"] = GalleryIndex(gallery, meta, backend="faiss")
    for name, index in methods.items():
        t, (_, idx[name]) = timed(lambda index=index: index.search(queries, args.k), args.repeats)
        results[name] = {"ms": t, "median_ms": statistics.median(t)}
    # one query at a time (the demo's case): median ms over the first ``--single`` queries
    for name, index in methods.items():
        ms = []
        for row in queries[: args.single]:
            index.search(row[None], args.k)
            t0 = time.perf_counter()
            index.search(row[None], args.k)
            ms.append((time.perf_counter() - t0) * 1e3)
        results[name]["single_query_median_ms"] = statistics.median(ms)
    t, (_, idx["numpy"]) = timed(lambda: numpy_topk(gallery, queries, args.k), args.repeats)
    results["numpy_matmul_argpartition"] = {"ms": t, "median_ms": statistics.median(t)}

    ref = "gallery_index_faiss" if "gallery_index_faiss" in results else "numpy_matmul_argpartition"
    print(f"{'method':<28}{'median ms':>11}{'ms/query':>10}{'/ ' + ref.split('_')[-1]:>10}{'of peak':>9}")
    for name, r in results.items():
        r["ms_per_query"] = r["median_ms"] / args.queries
        r["ratio_to_" + ref] = r["median_ms"] / results[ref]["median_ms"]
        r["gflops"] = flop / (r["median_ms"] / 1e3) / 1e9
        r["fraction_of_matmul_peak"] = r["gflops"] * 1e9 / peak
        print(f"{name:<28}{r['median_ms']:>11.1f}{r['ms_per_query']:>10.3f}"
              f"{r['ratio_to_' + ref]:>10.2f}{r['fraction_of_matmul_peak']:>9.2f}")
    mism = {}
    names = list(idx)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            m = mismatches(idx[a], idx[b])
            mism[f"{a}_vs_{b}"] = m
            status = "identical" if m["ordered"] == 0 else f"{m['ordered']} queries differ ({m['as_sets']} as sets)"
            print(f"top-{args.k} {a} vs {b}: {status}")
    if "gallery_index_faiss" in results:
        ratio = results["gallery_index_torch"]["ratio_to_gallery_index_faiss"]
        t1, f1 = (results[n]["single_query_median_ms"] for n in ("gallery_index_torch", "gallery_index_faiss"))
        print(f"torch / faiss = {ratio:.2f} for {args.queries} queries at once (goal <= 1.5: "
              f"{'met' if ratio <= 1.5 else 'not met'}); one query at a time: torch {t1:.2f} ms, "
              f"faiss {f1:.2f} ms, torch / faiss = {t1 / f1:.2f}")
    return results, mism


def ann_part(args, peak: float) -> dict:
    n, d, q, k = args.ann_gallery, args.dim, args.ann_queries, args.k
    t0 = time.perf_counter()
    gallery, queries = reid_like(n, q, d, args.ann_ids, args.ann_noise, args.seed + 1)
    gen_s = time.perf_counter() - t0
    meta = make_meta(n)
    print(f"\napproximate: gallery {n} x {d} ({gallery.nbytes / 2**30:.2f} GiB, {args.ann_ids} "
          f"identities, noise {args.ann_noise}; generated in {gen_s:.1f} s), {q} queries, top-{k}")
    out: dict = {"generate_s": gen_s}

    def single_ms(index) -> float:
        """Median ms of one query at a time (the demo's case) over the first ``--ann-single``."""
        ms = []
        for row in queries[: args.ann_single]:
            t0 = time.perf_counter()
            index.search(row[None], k)
            ms.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(ms)

    exact = GalleryIndex(gallery, meta, backend="faiss")
    t, (_, true_idx) = timed(lambda: exact.search(queries, k), args.ann_repeats)
    exact_ms = statistics.median(t) / q
    exact_single = single_ms(exact)
    out["exact_faiss"] = {"ms": t, "ms_per_query": exact_ms, "single_query_ms": exact_single,
                          "fraction_of_matmul_peak": 2.0 * n * d / (exact_ms / 1e3) / peak}
    print(f"{'exact (faiss flat)':<34}{'':>10}{exact_ms:>10.3f} ms/query  recall@{k} 1.000  "
          f"one at a time {exact_single:.2f} ms")
    del exact

    sweeps = {"ivf": ("nprobe", args.nprobe), "hnsw": ("ef_search", args.ef_search)}
    for method in args.ann_methods.split(","):
        t0 = time.perf_counter()
        build = {"ivf": {"nlist": args.nlist} if args.nlist else {},
                 "hnsw": {"m": args.hnsw_m, "ef_construction": args.hnsw_ef_construction}}[method]
        index = GalleryIndex(gallery, meta, method=method, method_params=build)
        build_s = time.perf_counter() - t0
        param, values = sweeps[method]
        rows = []
        print(f"{method}: built in {build_s:.1f} s with {index.method_params}")
        default = index.method_params[param]
        for v in sorted({int(x) for x in values.split(",")} | {default}):
            index.set_search_params(**{param: v})
            t, (_, got) = timed(lambda: index.search(queries, k), args.ann_repeats)
            ms = statistics.median(t) / q
            rec = recall_at_k(got, true_idx)
            one = single_ms(index)
            rows.append({param: index.method_params[param], "default": v == default, "ms": t,
                         "ms_per_query": ms, "single_query_ms": one,
                         "single_speedup_vs_exact": exact_single / one,
                         "recall_at_k": rec, "speedup_vs_exact": exact_ms / ms})
            label = f"{method} {param}={index.method_params[param]}" + (" (default)" if v == default else "")
            print(f"{label:<34}{'':>10}{ms:>10.3f} ms/query  recall@{k} {rec:.3f}  "
                  f"({exact_ms / ms:.1f}x exact); one at a time {one:.2f} ms "
                  f"({exact_single / one:.1f}x exact)")
        out[method] = {"build_s": build_s, "params": index.method_params, "sweep": rows}
        del index
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gallery", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=1_000)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--single", type=int, default=50, help="queries timed one at a time")
    p.add_argument("--ann-gallery", type=int, default=1_000_000, help="0: skip the approximate part")
    p.add_argument("--ann-queries", type=int, default=1_000)
    p.add_argument("--ann-ids", type=int, default=100_000)
    p.add_argument("--ann-noise", type=float, default=0.6)
    p.add_argument("--ann-methods", default="ivf", help="comma-separated: ivf, hnsw")
    p.add_argument("--ann-repeats", type=int, default=1)
    p.add_argument("--ann-single", type=int, default=20, help="ANN queries timed one at a time")
    p.add_argument("--nprobe", default="8,16,32", help="IVF nprobe values (plus the default)")
    p.add_argument("--ef-search", default="32,128", help="HNSW ef_search values (plus the default)")
    p.add_argument("--nlist", type=int, default=0, help="IVF lists (0: the default, sqrt(N))")
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--hnsw-ef-construction", type=int, default=80)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke run (5,000 x 128; ANN 20,000 x 128)")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    if args.quick:
        args.gallery, args.dim, args.queries, args.repeats, args.single = 5_000, 128, 100, 2, 20
        args.ann_gallery = min(args.ann_gallery, 20_000)
        args.ann_queries, args.ann_ids = 100, 2_000

    print(f"torch threads {torch.get_num_threads()}, faiss: "
          f"{'installed' if faiss_available() else 'not installed'}")
    peak = matmul_peak_flops()
    print(f"dense float32 matmul peak (torch.mm 2048^2): {peak / 1e9:.1f} GFLOP/s")
    results, mism = exact_part(args, peak)
    ann = ann_part(args, peak) if args.ann_gallery and faiss_available() else None

    report = {
        "benchmark": "bench_search",
        "config": {k: getattr(args, k) for k in ("gallery", "dim", "queries", "k", "repeats", "seed",
                                                 "quick", "ann_gallery", "ann_queries", "ann_ids",
                                                 "ann_noise", "ann_methods")},
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "matmul_peak_gflops": peak / 1e9,
        "results": results,
        "mismatches": mism,
        "approximate": ann,
        "faiss": "installed" if faiss_available() else "not installed",
    }
    write_result(report, args.out)
    return 0 if all(m["as_sets"] <= 0.01 * args.queries for m in mism.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
