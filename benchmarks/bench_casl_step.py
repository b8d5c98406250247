"""Where one CASL training step spends its time: encoders, renderer, losses, backward.

Runs :func:`mirror3d.models.casl.step.casl_step` (the training step: encode, render,
random-azimuth view, interpolated view, re-encode, critic step, encoder step) on random 4-channel
images with timers wrapped around the encoder passes, the renders, the loss functions (the
critic's forward passes and gradient penalty count there) and ``backward``; the rest (optimiser
steps, bookkeeping) is "other". Prints the split and the renderer's share, with the per-step
total as the baseline measured in the same run; JSON to benchmarks/results/bench_casl_step.json.

    python benchmarks/bench_casl_step.py [--batch 16] [--size 64,128] [--steps 4] [--quick]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import pathlib
import statistics
import time

from mirror3d.utils.env import apply_local_env

apply_local_env()  # the OpenMP/Ray environment, before torch loads

import torch  # noqa: E402

from mirror3d.engine.casl_train import CaslTrainConfig, step_settings  # noqa: E402
from mirror3d.models.casl import step as casl_step_module  # noqa: E402
from mirror3d.models.casl.em import EncoderLoop  # noqa: E402
from mirror3d.models.casl.step import build_model, casl_step  # noqa: E402
from mirror3d.utils.config import load_config  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
TIMES: dict[str, float] = collections.defaultdict(float)
_ACTIVE: list[str] = []


@contextlib.contextmanager
def timed(name: str):
    """Accumulate wall time under ``name`` (nested timers count only in the outermost)."""
    if _ACTIVE:
        yield
        return
    _ACTIVE.append(name)
    t = time.perf_counter()
    try:
        yield
    finally:
        TIMES[name] += time.perf_counter() - t
        _ACTIVE.pop()


def wrap(obj, attr: str, name: str) -> None:
    fn = getattr(obj, attr)

    def wrapper(*a, **k):
        with timed(name):
            return fn(*a, **k)

    setattr(obj, attr, wrapper)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", default="64,128", help="W,H")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.batch, args.size, args.steps = 4, "32,64", 2
    w, h = (int(v) for v in args.size.split(","))
    cfg = load_config(CaslTrainConfig, overrides=["--data.image_size", f"{w},{h}"])
    model, disc = build_model(cfg)
    opt_e = torch.optim.Adam(model.parameters(), 1e-4, amsgrad=True)
    opt_d = torch.optim.Adam(disc.parameters(), 1e-4, amsgrad=True)

    wrap(model, "encode", "encoders")
    wrap(model.renderer, "render", "renderer")
    for fn in ("data_loss", "mesh_regularisers", "flip_term", "ic_loss", "wgan_d_loss",
               "wgan_g_loss"):
        wrap(casl_step_module, fn, "losses")  # the names casl_step calls
    original_backward = torch.Tensor.backward

    def backward(self, *a, **k):
        with timed("backward"):
            return original_backward(self, *a, **k)

    torch.Tensor.backward = backward
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 4, h, w, generator=g)
    x[:, 3] = 0
    x[:, 3, h // 8: h - h // 8, w // 4: w - w // 4] = 1
    loop = EncoderLoop(cfg.encoder_loop.schedule)
    totals = []
    settings = step_settings(cfg)
    casl_step(model, disc, opt_e, opt_d, x, settings, loop.frozen(0), 0.5, g)  # warm-up
    TIMES.clear()
    for s in range(args.steps):
        t = time.perf_counter()
        casl_step(model, disc, opt_e, opt_d, x, settings, loop.frozen(s), 0.5, g)
        totals.append(time.perf_counter() - t)
    torch.Tensor.backward = original_backward
    total = sum(totals)
    split = {k: v / total for k, v in TIMES.items()}
    split["other"] = max(0.0, 1.0 - sum(split.values()))
    print(f"CASL step, batch {args.batch}, {w}×{h}, {torch.get_num_threads()} threads: "
          f"{1000 * statistics.median(totals):.0f} ms/step (median of {args.steps})")
    for k in ("encoders", "renderer", "losses", "backward", "other"):
        ms = 1000 * split.get(k, 0.0) * total / args.steps
        print(f"  {k:<9} {100 * split.get(k, 0.0):5.1f} %  ({ms:.0f} ms/step)")
    print(f"renderer share (forward): {100 * split.get('renderer', 0.0):.1f} % of the step")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "bench_casl_step.json"
    out.write_text(json.dumps({"batch": args.batch, "size": [w, h], "steps": args.steps,
                               "ms_per_step": 1000 * statistics.median(totals),
                               "share": split, "threads": torch.get_num_threads(),
                               "note": "backward covers every backward call (critic, GP, encoders)"},
                              indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
