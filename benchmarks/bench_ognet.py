"""OG-Net model benchmark: forward+backward time per variant, the fused / dense (previous) /
torch-geometric EdgeConv backends, our FPS / kNN against fpsample 0.3.3, scipy's cKDTree (xyz)
and faiss-cpu brute force (feature space, when faiss is importable), and the OG-Net-Small step
against the previous implementation (``knn_reference``, ``max_pool_reference``, the ``"dense"``
EdgeConv backend and the unfused omni-scale tail) in the same run.

    python benchmarks/bench_ognet.py            # ~ a few minutes on 2 cores
    python benchmarks/bench_ognet.py --quick    # tiny sizes, seconds

Prints a table and writes benchmarks/results/bench_ognet.json. On a shared machine the
intra-op thread pool is very sensitive to other load: unless OMP_WAIT_POLICY is already set,
this script sets it to PASSIVE before importing torch (busy-waiting threads otherwise slow
everything down many-fold when another process holds a core).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mirror3d.models.ognet.layers import EdgeConv  # noqa: E402
from mirror3d.models.ognet.ops import (  # noqa: E402
    farthest_point_sample,
    farthest_point_sample_naive,
    knn,
    knn_reference,
)
from mirror3d.models.registry import create_model  # noqa: E402

from results_io import RESULTS as _RESULTS_DIR, write_result  # noqa: E402
RESULTS = _RESULTS_DIR / "bench_ognet.json"


def person_cloud(b: int, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean-centred ellipsoid-surface clouds of person-like extent (1.6 tall), rgb in [-0.5, 0.5]."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(b, n, 3, generator=g)
    d = d / d.norm(dim=-1, keepdim=True)
    xyz = d * torch.tensor([0.25, 0.8, 0.15]) + 0.01 * torch.randn(b, n, 3, generator=g)
    xyz = xyz - xyz.mean(dim=1, keepdim=True)
    rgb = torch.rand(b, n, 3, generator=g) - 0.5
    return xyz, rgb


def timeit(fn, iters: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in ms."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def timeit_interleaved(fns: dict, iters: int, warmup: int = 1) -> dict:
    """Median wall time (ms) of each ``fn`` in ``fns``, alternating them so load drift hits all."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict = {name: [] for name in fns}
    for _ in range(iters):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(v) for name, v in times.items()}


def bench_models(batch: int, sizes: list[int], iters: int, variants: list[str]) -> list[dict]:
    rows = []
    for name in variants:
        for n in sizes:
            torch.manual_seed(0)
            model = create_model(name, num_classes=751).train()
            xyz, rgb = person_cloud(batch, n)

            def step():
                model.zero_grad(set_to_none=True)
                out = model(xyz, rgb)
                (out.logits.sum() + out.feature.sum()).backward()

            ms = timeit(step, iters)
            rows.append({"model": name, "points": n, "batch": batch, "edge_backend": "fused", "fwd_bwd_ms": ms})
            print(f"  {name:<13} N={n:<5} B={batch}  fwd+bwd {ms:9.1f} ms", flush=True)
    return rows


def bench_edgeconv(batch: int, n0: int, iters: int) -> dict:
    """OG-Net's four EdgeConvs at their paper sizes (N0 -> 768 -> 384 -> 192 points, k = 20)."""
    layers = [(n0, 3, 64), (768, 64, 128), (384, 128, 256), (192, 256, 512)]
    if n0 < 768:  # quick mode
        layers = [(n0, 3, 64), (n0 // 2, 64, 128), (n0 // 4, 128, 256), (n0 // 8, 256, 512)]
    per_layer = []
    backends = ("fused", "dense", "pyg")
    totals = {b: 0.0 for b in backends}
    for n, c_in, c_out in layers:
        torch.manual_seed(0)
        h = torch.randn(batch, n, c_in, requires_grad=True)
        idx = knn(torch.randn(batch, n, 3), 20)
        conv = EdgeConv(c_in, c_out).train()
        entry = {"points": n, "in": c_in, "out": c_out}

        def make_step(backend):
            def step():
                conv.backend = backend
                conv.zero_grad(set_to_none=True)
                h.grad = None
                conv(h, idx).sum().backward()

            return step

        ms = timeit_interleaved({b: make_step(b) for b in backends}, iters)
        for backend in backends:
            entry[f"{backend}_ms"] = ms[backend]
            totals[backend] += ms[backend]
        entry["pyg_over_dense"] = entry["pyg_ms"] / entry["dense_ms"]
        entry["dense_over_fused"] = entry["dense_ms"] / entry["fused_ms"]
        per_layer.append(entry)
        print(
            f"  EdgeConv N={n:<5} {c_in:>3}->{c_out:<3} fused {entry['fused_ms']:8.1f} ms  "
            f"dense {entry['dense_ms']:8.1f} ms  pyg {entry['pyg_ms']:8.1f} ms  "
            f"dense/fused {entry['dense_over_fused']:.2f}  pyg/dense {entry['pyg_over_dense']:.2f}",
            flush=True,
        )
    ratio = totals["pyg"] / totals["dense"]
    fused_ratio = totals["dense"] / totals["fused"]
    print(f"  EdgeConv total: fused {totals['fused']:.1f} ms, dense {totals['dense']:.1f} ms, "
          f"pyg {totals['pyg']:.1f} ms, dense/fused {fused_ratio:.2f}, pyg/dense {ratio:.2f}")
    return {"batch": batch, "k": 20, "layers": per_layer, "fused_ms": totals["fused"],
            "dense_ms": totals["dense"], "pyg_ms": totals["pyg"], "pyg_over_dense": ratio,
            "dense_over_fused": fused_ratio}


def bench_model_backends(batch: int, n: int, iters: int) -> dict:
    xyz, rgb = person_cloud(batch, n)
    res = {"model": "og-net", "points": n, "batch": batch}
    torch.manual_seed(0)
    model = create_model("og-net", num_classes=751).train()

    def make_step(backend):
        def step():
            model.set_edge_backend(backend)
            model.zero_grad(set_to_none=True)
            out = model(xyz, rgb)
            (out.logits.sum() + out.feature.sum()).backward()

        return step

    ms = timeit_interleaved({b: make_step(b) for b in ("fused", "dense", "pyg")}, iters)
    res["fused_ms"], res["dense_ms"], res["pyg_ms"] = ms["fused"], ms["dense"], ms["pyg"]
    res["pyg_over_dense"] = res["pyg_ms"] / res["dense_ms"]
    res["dense_over_fused"] = res["dense_ms"] / res["fused_ms"]
    print(
        f"  og-net N={n} B={batch}: fused {res['fused_ms']:.1f} ms, dense {res['dense_ms']:.1f} ms, "
        f"pyg {res['pyg_ms']:.1f} ms, dense/fused {res['dense_over_fused']:.2f}, "
        f"pyg/dense {res['pyg_over_dense']:.2f}"
    )
    return res


def bench_fps(n: int, npoint: int, batch: int, iters: int) -> dict:
    import fpsample

    xyz, _ = person_cloud(batch, n, seed=1)
    ours = farthest_point_sample(xyz, npoint)
    ours_ms = timeit(lambda: farthest_point_sample(xyz, npoint), iters)
    pts = [xyz[b].numpy().astype(np.float32) for b in range(batch)]
    lib_ms = timeit(lambda: [fpsample.fps_sampling(p, npoint, start_idx=0) for p in pts], iters)
    lib_idx = np.stack([np.asarray(fpsample.fps_sampling(p, npoint, start_idx=0), dtype=np.int64) for p in pts])
    t0 = time.perf_counter()
    naive = farthest_point_sample_naive(xyz[:1], npoint)  # loops: one cloud
    naive_ms = (time.perf_counter() - t0) * 1e3
    equal_naive = bool(torch.equal(ours[:1], naive))
    if not equal_naive:
        diff = int((ours[0] != naive[0]).nonzero()[0, 0])
        print(f"  FPS MISMATCH vs naive reference: first differing position {diff}")
    # no point of the benchmark cloud lies within the reference's skip ball, so the plain FPS of
    # fpsample should pick the same points up to float rounding
    near_origin = int((xyz.square().sum(-1) <= 1e-3).sum())
    lib_equal = float((torch.from_numpy(lib_idx) == ours).float().mean())
    res = {
        "points": n, "npoint": npoint, "batch": batch,
        "ours_ms": ours_ms, "fpsample_ms": lib_ms, "ours_over_fpsample": ours_ms / lib_ms,
        "naive_ms_one_cloud": naive_ms, "equal_to_naive": equal_naive,
        "fraction_equal_to_fpsample": lib_equal, "points_in_skip_ball": near_origin,
    }
    print(
        f"  FPS {n}->{npoint} B={batch}: ours {ours_ms:.1f} ms, fpsample {lib_ms:.1f} ms "
        f"(ours/fpsample {res['ours_over_fpsample']:.2f}); equal to naive: {equal_naive}; "
        f"same index as fpsample: {lib_equal:.3f}"
    )
    return res


def bench_knn(n: int, k: int, batch: int, iters: int) -> dict:
    """kNN in xyz: ours (``knn``, KD-tree candidates + exact re-rank) and the previous
    implementation (``knn_reference``, float64 brute force) against scipy's cKDTree
    (build + query, one worker, float64), interleaved in the same run."""
    from scipy.spatial import cKDTree

    xyz, _ = person_cloud(batch, n, seed=2)
    ours = knn(xyz, k)
    equal_reference = bool(torch.equal(ours, knn_reference(xyz, k)))
    pts = [xyz[b].double().numpy() for b in range(batch)]

    def tree_query():
        return [cKDTree(p).query(p, k=k)[1] for p in pts]

    ms = timeit_interleaved(
        {"ours": lambda: knn(xyz, k), "reference": lambda: knn_reference(xyz, k), "ckdtree": tree_query},
        iters,
    )
    tree_idx = torch.from_numpy(np.stack(tree_query()).astype(np.int64))
    same_sets = float(
        (torch.sort(ours, dim=-1).values == torch.sort(tree_idx, dim=-1).values).all(-1).float().mean()
    )
    res = {
        "points": n, "k": k, "batch": batch, "ours_ms": ms["ours"], "reference_ms": ms["reference"],
        "ckdtree_ms": ms["ckdtree"], "ours_over_ckdtree": ms["ours"] / ms["ckdtree"],
        "reference_over_ckdtree": ms["reference"] / ms["ckdtree"],
        "reference_over_ours": ms["reference"] / ms["ours"],
        "equal_to_reference": equal_reference, "fraction_same_neighbour_sets": same_sets,
    }
    print(
        f"  kNN xyz N={n} k={k} B={batch}: ours {ms['ours']:.1f} ms, previous {ms['reference']:.1f} ms, "
        f"cKDTree (build+query) {ms['ckdtree']:.1f} ms -> ours/cKDTree {res['ours_over_ckdtree']:.2f}, "
        f"previous/cKDTree {res['reference_over_ckdtree']:.2f}; equal to previous: {equal_reference}; "
        f"same sets as cKDTree: {same_sets:.4f}"
    )
    return res


def bench_knn_features(n: int, channels: int, k: int, batch: int, iters: int) -> dict:
    """kNN in feature space (no KD-tree helps): ours (float32 brute force + exact re-rank), the
    previous float64 implementation, and faiss-cpu's exact brute force (``IndexFlatL2``, one
    index per cloud, float32, no tie-break) when faiss is importable."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(batch, n, channels, generator=g)
    ours = knn(x, k)
    equal_reference = bool(torch.equal(ours, knn_reference(x, k)))
    fns = {"ours": lambda: knn(x, k), "reference": lambda: knn_reference(x, k)}
    try:
        import faiss
    except ImportError:  # optional here
        faiss = None
    if faiss is not None:
        faiss.omp_set_num_threads(torch.get_num_threads())
        arrs = [np.ascontiguousarray(x[b].numpy()) for b in range(batch)]

        def faiss_query():
            out = []
            for a in arrs:
                index = faiss.IndexFlatL2(channels)
                index.add(a)
                out.append(index.search(a, k)[1])
            return out

        fns["faiss"] = faiss_query
    ms = timeit_interleaved(fns, iters)
    res = {
        "points": n, "channels": channels, "k": k, "batch": batch, "ours_ms": ms["ours"],
        "reference_ms": ms["reference"], "reference_over_ours": ms["reference"] / ms["ours"],
        "equal_to_reference": equal_reference, "faiss_ms": ms.get("faiss"),
    }
    line = (
        f"  kNN features N={n} C={channels} k={k} B={batch}: ours {ms['ours']:.1f} ms, "
        f"previous {ms['reference']:.1f} ms; equal to previous: {equal_reference}"
    )
    if faiss is not None:
        f_idx = torch.from_numpy(np.stack(faiss_query()).astype(np.int64))
        res["ours_over_faiss"] = ms["ours"] / ms["faiss"]
        res["fraction_same_neighbour_sets_faiss"] = float(
            (torch.sort(ours, -1).values == torch.sort(f_idx, -1).values).all(-1).float().mean()
        )
        line += (
            f"; faiss IndexFlatL2 {ms['faiss']:.1f} ms (ours/faiss {res['ours_over_faiss']:.2f}, "
            f"same sets {res['fraction_same_neighbour_sets_faiss']:.4f})"
        )
    else:
        line += "; faiss not installed"
    print(line)
    return res


def bench_step_previous(batch: int, n: int, iters: int, init_points: int | None,
                        variant: str = "og-net-small") -> dict:
    """OG-Net (``variant``) forward+backward (train mode) against the previous implementation in the
    same run, same weights: ``knn_reference`` (float64 brute-force kNN),
    ``max_pool_reference`` (``amax``, whose backward splits gradients among ties), the
    ``"dense"`` EdgeConv backend and unfused omni-scale tails (the previous default), and the
    ball query's previous 16M-element distance blocks."""
    import mirror3d.models.ognet.layers as layers_mod
    import mirror3d.models.ognet.model as model_mod
    import mirror3d.models.ognet.ops as ops_mod

    kw = {} if init_points is None else {"init_points": init_points}
    torch.manual_seed(0)
    model = create_model(variant, num_classes=751, **kw).train()
    xyz, rgb = person_cloud(batch, n)
    current = (model_mod.knn, layers_mod.max_pool, model_mod.DEFAULT_EDGE_BACKEND,
               ops_mod._BALL_QUERY_BLOCK_ELEMENTS)
    previous = (knn_reference, layers_mod.max_pool_reference, "dense", ops_mod._DEFAULT_BLOCK_ELEMENTS)

    def make_step(impl):
        def step():
            model_mod.knn, layers_mod.max_pool = impl[:2]
            model.set_edge_backend(impl[2])
            ops_mod._BALL_QUERY_BLOCK_ELEMENTS = impl[3]
            model.zero_grad(set_to_none=True)
            out = model(xyz, rgb)
            (out.logits.sum() + out.feature.sum()).backward()

        return step

    try:
        ms = timeit_interleaved({"ours": make_step(current), "previous": make_step(previous)}, iters)
    finally:
        model_mod.knn, layers_mod.max_pool = current[:2]
        model.set_edge_backend(current[2])
        ops_mod._BALL_QUERY_BLOCK_ELEMENTS = current[3]
    res = {"model": variant, "points": n, "batch": batch, "init_points": model.init_points,
           "ours_ms": ms["ours"], "previous_ms": ms["previous"],
           "speedup": ms["previous"] / ms["ours"]}
    print(
        f"  {variant} N={n} B={batch}: step {ms['ours']:.0f} ms, previous implementation "
        f"{ms['previous']:.0f} ms (x{res['speedup']:.2f})"
    )
    return res


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one timed iteration")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.quick:
        batch, sizes, iters, variants = 2, [1024], 1, ["og-net-small"]
        ec_n0, fps_n, fps_m, knn_n = 512, 1024, 192, 1024
    else:
        batch, sizes, iters, variants = 4, [1024, 4096], 3, ["og-net", "og-net-small", "og-net-deep"]
        ec_n0, fps_n, fps_m, knn_n = 4096, 4096, 768, 4096

    info = {
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "python": platform.python_version(),
        "machine": platform.machine(), "quick": args.quick,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    print(f"OG-Net benchmark (torch {info['torch']}, {info['threads']} threads, quick={args.quick})")
    t_start = time.perf_counter()
    print("EdgeConv backends (forward+backward, paper sizes):")
    edgeconv = bench_edgeconv(batch, ec_n0, 2 * iters + 1)
    print("Models (forward+backward per batch, train mode):")
    models = bench_models(batch, sizes, iters, variants)
    print("Whole model, both EdgeConv backends:")
    model_backends = bench_model_backends(batch, sizes[-1], iters)
    print("Point ops:")
    fps = bench_fps(fps_n, fps_m, batch, max(iters, 2))
    knn_res = bench_knn(knn_n, 20, batch, max(iters, 2))
    knn_feat = bench_knn_features(knn_n, 64, 20, batch, max(iters, 2))
    print("OG-Net-Small and OG-Net steps against the previous implementation (kNN, max pooling, "
          "EdgeConv and omni-scale tail):")
    step_previous = [
        bench_step_previous(2 if args.quick else 24, 512, iters, 256, variant)
        for variant in (["og-net-small"] if args.quick else ["og-net-small", "og-net"])
    ] + [
        bench_step_previous(batch, 1024 if args.quick else 4096, iters, None, variant)
        for variant in (["og-net-small"] if args.quick else ["og-net-small", "og-net"])
    ]
    elapsed = time.perf_counter() - t_start

    result = {
        "info": info, "edgeconv": edgeconv, "models": models, "model_backends": model_backends,
        "fps": fps, "knn": knn_res, "knn_features": knn_feat,
        "step_previous": step_previous, "elapsed_s": elapsed,
    }
    print("\nSummary")
    print(f"  {'model':<13} {'points':>6} {'batch':>5} {'fwd+bwd ms':>11}")
    for row in models:
        print(f"  {row['model']:<13} {row['points']:>6} {row['batch']:>5} {row['fwd_bwd_ms']:>11.1f}")
    print(f"  EdgeConv pyg/dense ratio (paper sizes): {edgeconv['pyg_over_dense']:.2f}")
    print(f"  og-net pyg/dense ratio (whole model):  {model_backends['pyg_over_dense']:.2f}")
    print(f"  FPS ours/fpsample: {fps['ours_over_fpsample']:.2f}   kNN ours/cKDTree: {knn_res['ours_over_ckdtree']:.2f}"
          f" (previous {knn_res['reference_over_ckdtree']:.2f})")
    if "ours_over_faiss" in knn_feat:
        print(f"  kNN features ours/faiss: {knn_feat['ours_over_faiss']:.2f}")
    for row in step_previous:
        print(f"  {row['model']} N={row['points']} B={row['batch']} step speedup over the previous "
              f"implementation: x{row['speedup']:.2f}")
    print(f"  total {elapsed:.0f} s")
    write_result(result, args.out)
    if not fps["equal_to_naive"]:
        print("WARNING: FPS indices differ from the naive reference", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
