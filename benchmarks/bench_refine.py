"""What test-time refinement of a CASL reconstruction costs, and (with a trained run) what it buys.

Timing (always): ``CaslPredictor.reconstruct(image, mask, refine_steps=N)`` at batch 1 with the
default model of ``CaslTrainConfig`` (its ``net`` section; untrained weights: the cost does not
depend on them) on a synthetic person-like blob. The baseline, measured in the same run, is the
plain forward reconstruct (N = 0); the refinement cost is (t(N) − t(0)) / N per step, also as a
ratio to the baseline. Refinement itself is beyond the papers (mirror3d/models/casl/refine.py).

Quality (``--run DIR --images K``): the first K held-out images of a trained CASL run (the
eval-casl split, via mirror3d.engine.casl_eval), one at a time, for N in {0, 10, 50, 200}:
MaskIoU (soft silhouette vs GT mask, as eval-casl), Chamfer-L2 against SynthPeople's true mesh
when the data is a SynthPeople tree (normalised, centred, as eval-casl), seconds per image
(encode + refinement). Slow on CPU (200 steps per image); the lead runs it.

    python benchmarks/bench_refine.py [--size 64,128] [--steps 20] [--repeats 3] [--quick]
    python benchmarks/bench_refine.py --run runs/casl/<run> --images 16 [--ns 0,10,50,200]

Prints a table; JSON to benchmarks/results/bench_refine.json.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time

from mirror3d.utils.env import apply_local_env

apply_local_env()  # the OpenMP/Ray environment, before torch loads

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mirror3d.data.datasets import ReconstructionDataset  # noqa: E402
from mirror3d.engine.casl_eval import SynthTruth, find_synth_root  # noqa: E402
from mirror3d.engine.casl_train import CaslTrainConfig, casl_records  # noqa: E402
from mirror3d.metrics.image import mask_iou  # noqa: E402
from mirror3d.metrics.reconstruction import chamfer_l2_normalised  # noqa: E402
from mirror3d.models.casl import CaslPredictor, load_casl  # noqa: E402
from mirror3d.models.casl.step import build_casl_model  # noqa: E402
from mirror3d.utils.config import config_from_dict, config_to_dict, load_config, update_config  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def blob(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """A person-like silhouette (head, torso, legs as ellipses) in two colours on grey."""
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    cx = 0.52 * w

    def ell(cy, ry, rx):
        return ((yy - cy * h) / (ry * h)) ** 2 + ((xx - cx) / (rx * w)) ** 2 <= 1

    mask = ell(0.14, 0.07, 0.12) | ell(0.40, 0.22, 0.24) | ell(0.74, 0.22, 0.16)
    img = np.full((h, w, 3), 128, np.uint8)
    img[mask] = (200, 70, 50)
    img[mask & (yy > 0.58 * h)] = (40, 60, 150)
    return img, mask


def timing(size: tuple[int, int], steps: int, repeats: int) -> dict:
    w, h = size
    cfg = load_config(CaslTrainConfig, overrides=["--data.image_size", f"{w},{h}"])
    torch.manual_seed(0)
    pred = CaslPredictor(build_casl_model(cfg), cfg)
    img, mask = blob(w, h)
    pred.reconstruct(img, mask, refine_steps=1)  # warm-up
    t0, tn = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        pred.reconstruct(img, mask)
        t0.append(time.perf_counter() - t)
        t = time.perf_counter()
        pred.reconstruct(img, mask, refine_steps=steps, seed=0)
        tn.append(time.perf_counter() - t)
    base = statistics.median(t0)
    per_step = max(0.0, statistics.median(tn) - base) / steps
    return {"size": [w, h], "batch": 1, "steps": steps, "repeats": repeats,
            "ms_forward_reconstruct": 1000 * base, "ms_per_refine_step": 1000 * per_step,
            "step_over_forward": per_step / base if base > 0 else None,
            "net": config_to_dict(cfg.net)}


def quality(run: str, images: int, ns: list[int], chamfer_points: int) -> dict:
    pred = load_casl(run)
    model = pred.model
    cfg = update_config(config_from_dict(CaslTrainConfig, pred.config), {"data.max_test": images})
    _, test = casl_records(cfg)
    aug = None if cfg.data.aug == "none" else cfg.data.aug
    ds = ReconstructionDataset(test[:images], tuple(cfg.data.image_size), aug=aug, bg=cfg.data.bg,
                               train=False)
    root = find_synth_root(cfg.data.root)
    truth = SynthTruth(root) if root is not None else None
    rows = {n: {"mask_iou": [], "chamfer": [], "seconds": []} for n in ns}
    for k in range(len(ds)):
        item = ds[k]
        x = item["image"][None].to(model.template.device)
        row = truth.row_for(str(item["path"])) if truth is not None else None
        for n in ns:
            t = time.perf_counter()
            with torch.no_grad():
                attrs = model.encode(x)
            if n > 0:
                attrs, _ = pred.refine(x, attrs, n, seed=0)
            rows[n]["seconds"].append(time.perf_counter() - t)
            with torch.no_grad():
                out = model.render(attrs)
                rows[n]["mask_iou"].append(float(mask_iou(out.soft_mask.clamp(0, 1), x[:, 3])[0]))
                if row is not None:
                    gv, gf = truth.mesh(row)
                    verts = model.vertices(attrs)
                    rows[n]["chamfer"].append(float(chamfer_l2_normalised(
                        verts, model.faces, gv[None].to(verts), gf, n_points=chamfer_points,
                        seed=0, pred_camera=model.camera(attrs),
                        gt_camera=truth.camera(row).to(verts))[0]))
        print(f"  image {k + 1}/{len(ds)} done", flush=True)

    def mean(v):
        return float(np.mean(v)) if v else None

    return {"run": str(pathlib.Path(run).resolve()), "images": len(ds),
            "synthpeople": truth is not None, "chamfer_points": chamfer_points,
            "by_steps": {str(n): {"mask_iou_pct": 100 * mean(r["mask_iou"]),
                                  "chamfer_l2": mean(r["chamfer"]),
                                  "seconds_per_image": mean(r["seconds"])}
                         for n, r in rows.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="64,128", help="W,H of the timing model")
    ap.add_argument("--steps", type=int, default=20, help="refinement steps timed")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--run", default="", help="a trained CASL run directory (quality mode)")
    ap.add_argument("--images", type=int, default=16, help="held-out images (quality mode)")
    ap.add_argument("--ns", default="0,10,50,200", help="refinement steps compared (quality)")
    ap.add_argument("--chamfer_points", type=int, default=10000)
    ap.add_argument("--quick", action="store_true", help="a few seconds: 32x64, 3 steps, 1 repeat")
    args = ap.parse_args()
    if args.quick:
        args.size, args.steps, args.repeats = "32,64", 3, 1
    w, h = (int(v) for v in args.size.split(","))
    res = {"quick": args.quick, "threads": torch.get_num_threads(),
           "timing": timing((w, h), args.steps, args.repeats)}
    t = res["timing"]
    print(f"CASL test-time refinement, batch 1, {w}×{h}, default net, "
          f"{torch.get_num_threads()} threads:")
    print(f"  forward reconstruct (N=0, baseline): {t['ms_forward_reconstruct']:.1f} ms")
    print(f"  refinement: {t['ms_per_refine_step']:.1f} ms/step "
          f"({t['step_over_forward']:.2f}× the forward; median of {args.repeats}, N={args.steps})")
    if args.run:
        ns = [int(v) for v in args.ns.split(",")]
        q = quality(args.run, args.images, ns, args.chamfer_points)
        res["quality"] = q
        print(f"held-out quality, {q['images']} images of {q['run']}:")
        print(f"  {'N':>5} {'MaskIoU %':>10} {'Chamfer-L2':>11} {'s/image':>8}")
        for n, r in q["by_steps"].items():
            ch = "n/a" if r["chamfer_l2"] is None else f"{r['chamfer_l2']:.4f}"
            print(f"  {n:>5} {r['mask_iou_pct']:>10.2f} {ch:>11} {r['seconds_per_image']:>8.2f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "bench_refine.json"
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
