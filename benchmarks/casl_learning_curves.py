"""CASL learning curves on CPU: which setting makes the encoders learn, measured.

Trains named variants of the train-casl config one after another in this process (the engine's
loop, no Ray), each for the same wall-time budget, with a held-out learning-curve point every
``--eval_every`` steps (soft MaskIoU; on SynthPeople also the camera errors against the true
cameras). Writes ``<out>/curves.json``, ``<out>/curves.png`` (MaskIoU vs steps and vs minutes,
azimuth error and predicted distance vs minutes) and one run directory per variant; a finished
variant is reused when the script is run again. docs/casl-on-cpu.md reads these results.

    python benchmarks/casl_learning_curves.py --minutes 4 --variants default,oracle-camera
    python benchmarks/casl_learning_curves.py --list

Not a timing benchmark: each variant takes both cores for ``--minutes``; run it alone.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from mirror3d.engine.casl_train import train_casl_loop  # noqa: E402
from mirror3d.jobs import resolve_config  # noqa: E402
from mirror3d.utils.config import save_config, update_config  # noqa: E402
from mirror3d.utils.env import apply_local_env  # noqa: E402

#: name -> (what it tests, dotted overrides on top of the base preset)
VARIANTS: dict[str, tuple[str, dict]] = {
    "default": ("the current default", {}),
    "oracle-camera": ("SynthPeople's true cameras fed in (diagnostic upper bound)",
                      {"data.oracle_camera": True, "data.aug": "none"}),
    "no-aug": ("resize only (the oracle's data path, with predicted cameras)", {"data.aug": "none"}),
    "small-images": ("32x64 inputs and renders", {"data.image_size": (32, 64)}),
    "all-encoders": ("every encoder trained every step", {"encoder_loop.schedule": "all"}),
    "lr-1e-3": ("learning rate 1e-3", {"optim.lr": 1e-3}),
    "no-warm-up": ("no loss warm-up", {"loss.warm_epochs": 0.0}),
    "light-reg": ("regularisers / 10 (laplacian, flatten, edge, deform, depth, flip)",
                  {"loss.reg": 0.01, "loss.edge": 1e-4, "loss.deform": 0.01, "loss.depth": 0.015,
                   "loss.flip": 0.01}),
    "no-gan": ("no WGAN critic", {"optim.gan": False}),
    "no-ic": ("no interpolation consistency", {"loss.ic": 0.0}),
    "distance-2.3-3.4": ("distance prior = SynthPeople's range", {"net.distance_range": (2.3, 3.4)}),
    "batch-32": ("batch 32", {"optim.batch_size": 32}),
    "ellipsoid-3": ("a thinner initial template (x, z / 3 instead of / 2)", {"ellipsoid": 3.0}),
    "offsets-lr-0.05": ("the dense offset layer at 0.05x the learning rate",
                        {"net.shape_offsets_lr_scale": 0.05}),
    "offsets-lr-0.2": ("the dense offset layer at 0.2x the learning rate",
                       {"net.shape_offsets_lr_scale": 0.2}),
    "proto-fast": ("prototype loop every epoch, step 0.5, clip 0.2",
                   {"prototype.every": 1, "prototype.step": 0.5, "prototype.clip": 0.2}),
    "smooth-offsets": ("offsets smoothed by 5 Laplacian passes", {"net.shape_smooth_passes": 5}),
    "fast": ("32x64, every encoder every step, lr 1e-3, no warm-up",
             {"data.image_size": (32, 64), "encoder_loop.schedule": "all", "optim.lr": 1e-3,
              "loss.warm_epochs": 0.0}),
}


def parse_variant(text: str) -> tuple[str, tuple[str, dict]]:
    """``name`` from :data:`VARIANTS`, or ``name:key=value;key=value`` for an ad-hoc one, or
    ``a+b`` for the union of named variants."""
    if ":" in text:
        name, _, body = text.partition(":")
        pairs = dict(p.split("=", 1) for p in body.split(";") if p)
        return name, (f"ad hoc: {body}", pairs)
    parts = text.split("+")
    over: dict = {}
    for p in parts:
        if p not in VARIANTS:
            raise SystemExit(f"unknown variant {p!r}; known: {', '.join(VARIANTS)}")
        over.update(VARIANTS[p][1])
    return text, (" + ".join(VARIANTS[p][0] for p in parts), over)


def run_variant(name: str, over: dict, args, out: pathlib.Path) -> dict:
    run = out / name
    summary = run / "train_summary.json"
    if summary.exists() and (run / "curve.jsonl").exists():
        print(f"[curves] {name}: reused", flush=True)
    else:
        if run.exists():
            import shutil  # only to clear an unfinished attempt

            shutil.rmtree(run)
        cfg = resolve_config("train-casl", args.preset)
        cfg = update_config(cfg, {"data.root": args.data, "optim.max_minutes": args.minutes,
                                  "optim.epochs": args.epochs, "optim.eval_every": args.eval_every,
                                  "data.curve_images": args.curve_images, "optim.seed": args.seed,
                                  "optim.checkpoint_every": 1000})
        cfg = update_config(cfg, over)
        run.mkdir(parents=True)
        save_config(cfg, run / "config.yaml")
        print(f"[curves] {name}: training {args.minutes} min", flush=True)
        t0 = time.time()
        train_casl_loop(cfg, run)
        print(f"[curves] {name}: done in {(time.time() - t0) / 60:.1f} min", flush=True)
    points = [json.loads(x) for x in (run / "curve.jsonl").read_text().splitlines() if x]
    final = json.loads(summary.read_text())
    return {"points": points, "summary": final}


def plot(results: dict, path: pathlib.Path) -> None:
    keys = [("step", "mask_iou", "held-out MaskIoU (%) vs steps"),
            ("train_minutes", "mask_iou", "held-out MaskIoU (%) vs minutes"),
            ("train_minutes", "azimuth_err_median", "azimuth error, median (deg)"),
            ("train_minutes", "distance_mean", "predicted distance, mean")]
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.5))
    for ax, (x, y, title) in zip(axes, keys):
        for name, res in results.items():
            pts = [p for p in res["points"] if y in p]
            if pts:
                ax.plot([p[x] for p in pts], [p[y] for p in pts], label=name, marker=".", ms=3)
        ax.set_title(title)
        ax.set_xlabel(x.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    apply_local_env()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default="default,oracle-camera")
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--epochs", type=int, default=30, help="nominal epochs (schedules follow time)")
    ap.add_argument("--eval_every", type=int, default=20)
    ap.add_argument("--curve_images", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--data", default="data/synthpeople/Market-HQ")
    ap.add_argument("--out", default="runs/casl_curves")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args(argv)
    if args.list:
        for k, (d, o) in VARIANTS.items():
            print(f"{k:18s} {d}  {o}")
        return 0
    torch.set_num_threads(2)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "curves.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for text in args.variants.split(","):
        name, (desc, over) = parse_variant(text.strip())
        res = run_variant(name, over, args, out)
        res.update(description=desc, overrides={k: list(v) if isinstance(v, tuple) else v
                                                for k, v in over.items()},
                   minutes=args.minutes)
        results[name] = res
        results_path.write_text(json.dumps(results, indent=1))
        plot(results, out / "curves.png")
        last = res["points"][-1]
        best = max(p["mask_iou"] for p in res["points"])
        print(f"[curves] {name}: final MaskIoU {last['mask_iou']:.1f} % (best {best:.1f}) after "
              f"{last['step']} steps; az err {last.get('azimuth_err_median', float('nan')):.0f} deg "
              f"(folded {last.get('azimuth_err_folded_median', float('nan')):.0f}), distance "
              f"{last['distance_mean']:.2f} (rel err {last.get('distance_rel_err', float('nan')):.2f}); "
              f"final model {res['summary']['held_out_mask_iou']:.1f} %", flush=True)
    print(f"[curves] wrote {results_path} and {out / 'curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
