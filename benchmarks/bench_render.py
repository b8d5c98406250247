"""Renderer benchmark: forward + backward of MeshRenderer.render on 642-vertex meshes.

Prints ms per iteration at batch 32 for 64×128 and 128×128 (W×H), and the speed-up of the binned
soft silhouette over the naive all-faces one, measured in the same run. The naive path keeps a
(pixels × faces) graph for backward (~0.3–0.6 GB per sample), so both modes are also timed at a
batch that fits (``--naive-batch``, default 4) and the ratio is taken there. Also reports the hard
silhouette's IoU against trimesh's ray caster on deformed spheres (the correctness check the
tests assert at ≥ 0.99). JSON goes to benchmarks/results/bench_render.json.

    python benchmarks/bench_render.py [--quick] [--iters 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch

from mirror3d.render import MeshRenderer, look_at_camera, template_mesh

from results_io import RESULTS, write_result  # noqa: E402  (benchmarks/ is the script's folder)


def scene(batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    verts, faces, uvs = template_mesh(2.0)
    noise = 0.05 * torch.sin(verts[None] @ (2 * torch.randn(batch, 3, 3, generator=g)))
    verts = (verts[None] + noise).contiguous()
    az = torch.rand(batch, generator=g) * 360 - 180
    el = torch.rand(batch, generator=g) * 30 - 15
    dist = 2.5 + torch.rand(batch, generator=g) * 3.5
    bias = (torch.rand(batch, 2, generator=g) - 0.5) * 0.4
    cam = look_at_camera(az, el, dist, bias)
    tex = torch.rand(batch, 3, 128, 64, generator=g)
    light = torch.cat([torch.full((batch, 1), 3.0), 0.1 * torch.randn(batch, 8, generator=g)], 1)
    return verts, faces, uvs, tex, cam, light


def time_fwd_bwd(renderer: MeshRenderer, batch: int, iters: int, warmup: int = 1) -> float:
    verts, faces, uvs, tex, cam, light = scene(batch)
    times = []
    for k in range(warmup + iters):
        v = verts.clone().requires_grad_(True)
        t = tex.clone().requires_grad_(True)
        t0 = time.perf_counter()
        out = renderer.render(v, faces, uvs, t, cam, light)
        loss = (out.rgb.mean() + out.soft_mask.mean())
        loss.backward()
        dt = time.perf_counter() - t0
        if k >= warmup:
            times.append(dt)
    return 1000 * statistics.median(times)


def raycaster_iou(size=(128, 128), n=4) -> list[float]:
    import trimesh

    verts, faces, *_rest, cam, _light = scene(n, seed=7)
    sil = MeshRenderer(size).silhouette(verts, faces, cam)
    origins, dirs = cam.pixel_rays(size)
    ious = []
    for b in range(n):
        mesh = trimesh.Trimesh(verts[b].double().numpy(), faces.numpy(), process=False)
        hit = trimesh.ray.ray_triangle.RayMeshIntersector(mesh).intersects_any(
            origins[b].double().numpy(), dirs[b].double().numpy()).reshape(size)
        truth = torch.from_numpy(hit.astype(np.float32))
        ious.append(float((truth * sil[b]).sum() / ((truth + sil[b]) > 0).float().sum()))
    return ious


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--naive-batch", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="tiny run (smoke check of the script)")
    args = ap.parse_args()
    if args.quick:
        args.iters, args.batch, args.naive_batch = 1, 4, 2
    torch.manual_seed(0)
    results = {"torch": torch.__version__, "threads": torch.get_num_threads(),
               "machine": platform.machine(), "batch": args.batch,
               "naive_batch": args.naive_batch, "iters": args.iters, "sizes": {}}
    print(f"MeshRenderer forward+backward, 642 vertices, {torch.get_num_threads()} threads")
    print(f"{'W×H':>8} {'binned ms/it (B=%d)' % args.batch:>22} {'binned ms (B=%d)' % args.naive_batch:>18}"
          f" {'naive ms (B=%d)' % args.naive_batch:>17} {'speed-up':>9}")
    for w, h in [(64, 128), (128, 128)]:
        binned = MeshRenderer((h, w))
        naive = MeshRenderer((h, w), soft_mode="naive")
        ms_full = time_fwd_bwd(binned, args.batch, args.iters)
        ms_small = time_fwd_bwd(binned, args.naive_batch, args.iters)
        ms_naive = time_fwd_bwd(naive, args.naive_batch, max(1, args.iters // 2))
        ratio = ms_naive / ms_small
        results["sizes"][f"{w}x{h}"] = {
            "binned_ms_per_iter": ms_full, "binned_ms_small_batch": ms_small,
            "naive_ms_small_batch": ms_naive, "speedup_vs_naive": ratio}
        print(f"{w}×{h:<5} {ms_full:>22.1f} {ms_small:>18.1f} {ms_naive:>17.1f} {ratio:>8.1f}×")
    ious = raycaster_iou(n=2 if args.quick else 4)
    results["raycaster_iou_128x128"] = ious
    print(f"hard silhouette vs trimesh ray caster, 128×128: IoU min {min(ious):.4f} "
          f"mean {statistics.mean(ious):.4f}")
    write_result(results, RESULTS / "bench_render.json")


if __name__ == "__main__":
    main()
