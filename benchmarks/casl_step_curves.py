"""The CASL training step before and after the speed-ups of issue #17: time per training
iteration and the two loss curves over the same steps on a fixed seed.

Both variants train the default CPU config (``train-casl``'s defaults: 32×64, batch 16) from the
same initial weights on the same data order, as :func:`mirror3d.engine.casl_train.train_casl_loop`
iterates it:

- ``reference``: :func:`mirror3d.models.casl.step.casl_step_reference` (the step as it was),
  the dense Laplacian products of the shape encoder's neighbour difference and of the Laplacian
  loss (patched back in for its steps), the batches loaded in the training thread, Adam
  (amsgrad) with its per-tensor loop;
- ``fast``: :func:`mirror3d.models.casl.step.casl_step`, the sparse Laplacian products
  (:func:`mirror3d.render.mesh.laplacian_apply_sparse`), the batches loaded two ahead in a
  background thread (:func:`mirror3d.engine.casl_train.prefetched`), the trainer's optimisers
  (:func:`mirror3d.engine.casl_train.build_optimisers`).

They run interleaved in blocks of ``--block`` steps (each with its own global random state,
swapped in and out), so both see the same machine load; one iteration's time counts the wait
for its batch, the step and the metrics. Prints ms per iteration of each and the ratio, then the
loss curves as means over blocks and their largest per-step difference. ``--noise`` adds the
reference at another seed (``seed + 1``): the seed-to-seed difference is the noise the two curves'
difference is judged against. JSON to benchmarks/results/casl_step_curves.json.

    python benchmarks/casl_step_curves.py [--steps 200] [--root data/synthpeople/Market-HQ]
        [--noise] [--quick]
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

from mirror3d.utils.env import apply_local_env

apply_local_env()  # the OpenMP/Ray environment, before torch loads

import torch  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from results_io import RESULTS, write_result  # noqa: E402

from mirror3d.engine.casl_train import (CaslTrainConfig, build_optimisers,  # noqa: E402
                                        load_casl_data, prefetched, step_settings)
from mirror3d.models.casl import integration  # noqa: E402
from mirror3d.models.casl.em import EncoderLoop  # noqa: E402
from mirror3d.render import losses as render_losses  # noqa: E402
from mirror3d.render.mesh import laplacian_apply, laplacian_apply_sparse  # noqa: E402
from mirror3d.models.casl.step import build_model, casl_step, casl_step_reference  # noqa: E402
from mirror3d.utils.config import load_config  # noqa: E402


class Run:
    """One variant's training state: model, optimisers, data iterator, random state, records."""

    def __init__(self, name: str, cfg: CaslTrainConfig, train_ds, seed: int, fast: bool) -> None:
        self.name, self.cfg, self.fast = name, cfg, fast
        torch.manual_seed(seed)
        self.model, self.disc = build_model(cfg)
        if fast:
            self.opt_e, self.opt_d = build_optimisers(cfg, self.model, self.disc)
        else:  # the trainer's optimisers as they were: Adam's default per-tensor loop on CPU
            groups = self.model.encoder.param_groups()
            self.opt_e = torch.optim.Adam(
                [{"params": g["params"], "lr": cfg.optim.lr * g["lr_scale"]} for g in groups],
                lr=cfg.optim.lr, betas=(cfg.optim.beta1, 0.999), amsgrad=True)
            self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=cfg.optim.lr,
                                          betas=(cfg.optim.beta1, 0.999), amsgrad=True)
        self.gen = torch.Generator().manual_seed(seed * 1000)
        self.rng = torch.get_rng_state()
        self.train_ds = train_ds
        self.loader = None
        if train_ds is not None:
            self.loader = torch.utils.data.DataLoader(
                train_ds, batch_size=cfg.optim.batch_size, shuffle=True, drop_last=True,
                generator=torch.Generator().manual_seed(seed))
        self.epoch, self.batches = 0, None
        self.settings = step_settings(cfg)
        self.loop = EncoderLoop(cfg.encoder_loop.schedule)
        self.step_fn = casl_step if fast else casl_step_reference
        self.losses: list[float] = []
        self.seconds: list[float] = []

    def _next(self, fixed: torch.Tensor | None):
        if self.loader is None:
            return fixed
        while True:
            if self.batches is None:
                self.train_ds.set_epoch(self.epoch)
                self.batches = iter(prefetched(self.loader, 2) if self.fast else self.loader)
            try:
                return next(self.batches)["image"]
            except StopIteration:
                self.batches = None
                self.epoch += 1

    def close(self) -> None:
        if self.batches is not None and hasattr(self.batches, "close"):
            self.batches.close()

    def block(self, steps: int, fixed: torch.Tensor | None) -> None:
        torch.set_rng_state(self.rng)
        # the reference's model ops as they were: the dense Laplacian products
        product = laplacian_apply_sparse if self.fast else laplacian_apply
        integration.laplacian_apply_sparse = render_losses.laplacian_apply_sparse = product
        for _ in range(steps):
            t = time.perf_counter()
            x = self._next(fixed)
            m = self.step_fn(self.model, self.disc, self.opt_e, self.opt_d, x, self.settings,
                             self.loop.frozen(len(self.losses)), 1.0, self.gen)
            self.seconds.append(time.perf_counter() - t)
            self.losses.append(m["loss"])
        self.rng = torch.get_rng_state()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--block", type=int, default=25, help="steps per variant before switching")
    ap.add_argument("--root", default="data/synthpeople/Market-HQ",
                    help="Market-HQ tree (random inputs when missing)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise", action="store_true", help="also the reference at seed + 1")
    ap.add_argument("--quick", action="store_true", help="6 steps at batch 4 (a smoke check)")
    args = ap.parse_args()
    over = ["--data.root", args.root]
    if args.quick:
        args.steps, args.block = 6, 3
        over += ["--optim.batch_size", "4"]
    cfg = load_config(CaslTrainConfig, overrides=over)
    w, h = cfg.data.image_size
    train_ds, fixed = None, None
    if pathlib.Path(args.root).is_dir():
        train_ds, _, _ = load_casl_data(cfg)
    else:
        print(f"{args.root}: not found, random inputs")
        g = torch.Generator().manual_seed(args.seed)
        fixed = torch.rand(cfg.optim.batch_size, 4, h, w, generator=g)
        fixed[:, 3] = (fixed[:, 3] > 0.5).float()
    runs = [Run("reference", cfg, train_ds, args.seed, fast=False),
            Run("fast", cfg, train_ds, args.seed, fast=True)]
    if args.noise:
        runs.append(Run("reference-seed+1", cfg, train_ds, args.seed + 1, fast=False))
    done = 0
    while done < args.steps:
        n = min(args.block, args.steps - done)
        for r in runs:
            r.block(n, fixed)
        done += n
        print(f"  {done}/{args.steps} steps: " + ", ".join(
            f"{r.name} {1000 * statistics.median(r.seconds[-n:]):.0f} ms" for r in runs), flush=True)
    for r in runs:
        r.close()

    ref, fast = runs[0], runs[1]
    ms = {r.name: 1000 * statistics.median(r.seconds) for r in runs}
    ratio = ms["reference"] / ms["fast"]
    print(f"\nCASL training iteration, batch {cfg.optim.batch_size}, {w}×{h}, "
          f"{torch.get_num_threads()} threads, {args.steps} steps (median): reference "
          f"{ms['reference']:.0f} ms, fast {ms['fast']:.0f} ms -> {ratio:.2f}× faster")
    diff = [abs(a - b) for a, b in zip(ref.losses, fast.losses)]
    print(f"loss curves: largest per-step |reference - fast| = {max(diff):.3g} "
          f"(mean {statistics.mean(diff):.3g}; loss at step 0 {ref.losses[0]:.4f})")
    noise = None
    if args.noise:
        nd = [abs(a - b) for a, b in zip(ref.losses, runs[2].losses)]
        noise = {"max": max(nd), "mean": statistics.mean(nd)}
        print(f"noise (reference, seed vs seed + 1): largest |Δ| {noise['max']:.3g}, "
              f"mean {noise['mean']:.3g}")
    print(f"{'steps':>11} " + " ".join(f"{r.name:>17}" for r in runs) + "  fast - ref")
    blocks = []
    for s in range(0, args.steps, args.block):
        means = [statistics.mean(r.losses[s:s + args.block]) for r in runs]
        blocks.append({"from": s, "means": dict(zip((r.name for r in runs), means))})
        print(f"{s:>5}-{min(s + args.block, args.steps) - 1:<5} " +
              " ".join(f"{m:17.5f}" for m in means) + f"  {means[1] - means[0]:+.2e}")
    write_result({"batch": cfg.optim.batch_size, "size": [w, h], "steps": args.steps,
                  "threads": torch.get_num_threads(), "ms_per_iteration": ms, "speedup": ratio,
                  "loss_max_abs_diff": max(diff), "loss_mean_abs_diff": statistics.mean(diff),
                  "noise": noise, "blocks": blocks,
                  "losses": {r.name: r.losses for r in runs}, "real_data": train_ds is not None},
                 RESULTS / "casl_step_curves.json")


if __name__ == "__main__":
    main()
