"""Where the training time goes: torch.profiler over the CASL and OG-Net-Small training steps and
the pipeline's data path, with each step's achieved FLOP/s as a fraction of this machine's dense
matmul peak measured in the same run.

Steps profiled (each on its own, after a warm-up step):

- ``casl``: one :func:`mirror3d.models.casl.step.casl_step` of the default CPU config (batch 16,
  32×64; ``--casl_size`` / ``--casl_batch``), with the trainer's optimisers
  (:func:`mirror3d.engine.casl_train.build_optimisers`);
  inputs are the first batch of the real training data when ``--casl_root`` exists, else random.
- ``ognet-small-512`` / ``ognet-small-4096``: one OG-Net-Small training step (forward, cross
  entropy + circle loss as :mod:`mirror3d.engine.reid_train`, backward, Adam) on 24 clouds of
  512 points (the pipeline's size, first FPS level 256) and of 4,096 points (the paper's, 768).
- ``data-casl``: batches of the CASL training DataLoader (decode, augment, collate; the
  trainer's ``data.workers 0``): needs ``--casl_root``.
- ``data-reid``: batches of the re-id point-cloud loader (P×K sampler) when ``--reid_shards``
  points at lifted parquet shards (e.g. runs/pipeline/<name>/lifted/flat).

Per step: the median wall time over ``--steps`` steps (no profiler), the FLOPs of one step
counted with the formulas of :mod:`torch.utils.flop_counter` (matmuls and convolutions, forward
and backward; elementwise work, gathers and sorts count 0, so the fraction is a lower bound on
how busy the hardware is), FLOP/s and its fraction of the peak of ``torch.mm`` on two 2048×2048
float32 matrices. Then one profiled step: its top operators by self CPU time go to
``benchmarks/results/profile_<step>_ops.txt`` and a Chrome trace (open in chrome://tracing or
ui.perfetto.dev) to ``benchmarks/results/profile_<step>_trace.json``; a summary of every step
to ``benchmarks/results/profile_steps.json``.

    python benchmarks/profile_steps.py [--only casl,ognet-small-512] [--steps 3]
        [--casl_root data/synthpeople/Market-HQ] [--reid_shards runs/pipeline/x/lifted/flat]
    python benchmarks/profile_steps.py --quick      # tiny sizes, seconds
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time
from collections.abc import Callable

from mirror3d.utils.env import apply_local_env

apply_local_env()  # the OpenMP/Ray environment, before torch loads

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils.flop_counter import flop_registry  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from results_io import RESULTS, write_result  # noqa: E402

from mirror3d.data.samplers import PKSampler  # noqa: E402
from mirror3d.engine.casl_train import (CaslTrainConfig, build_optimisers,  # noqa: E402
                                        load_casl_data, step_settings)
from mirror3d.engine.reid_train import ReidTrainConfig, load_reid_data  # noqa: E402
from mirror3d.models.casl.em import EncoderLoop  # noqa: E402
from mirror3d.models.casl.step import build_model, casl_step  # noqa: E402
from mirror3d.models.ognet.losses import circle_loss  # noqa: E402
from mirror3d.models.registry import create_model  # noqa: E402
from mirror3d.utils.config import load_config  # noqa: E402

STEPS = ("casl", "ognet-small-512", "ognet-small-4096", "data-casl", "data-reid")


# ------------------------------------------------------------------------------ measuring
def matmul_peak(n: int = 2048, reps: int = 5) -> float:
    """This machine's dense float32 matmul rate (FLOP/s): the best of ``reps`` ``torch.mm`` of
    two n×n matrices (2n³ FLOPs each), after one warm-up."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2.0 * n ** 3 / best


class _FlopCount(TorchDispatchMode):
    """Sums the FLOPs of every aten op that :mod:`torch.utils.flop_counter` has a formula for
    (its registry; matmuls and convolutions, forward and backward). Not ``FlopCounterMode``
    itself: its per-module backward hooks break the critic's gradient penalty
    (``autograd.grad`` of a leaf input)."""

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += int(formula(*args, **kwargs, out_val=out))
        return out


def count_flops(step: Callable[[], object]) -> int:
    """FLOPs of one call of ``step`` (matmuls and convolutions, forward and backward)."""
    with _FlopCount() as counter:
        step()
    return counter.flops


def median_seconds(step: Callable[[], object], steps: int) -> float:
    """Median wall time of ``steps`` calls of ``step`` (after the caller's warm-up)."""
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def profile_one(name: str, step: Callable[[], object], top: int) -> list[dict]:
    """One profiled call of ``step``: the top operators (table + trace files); returns them."""
    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        step()
    averages = prof.key_averages()
    table = averages.table(sort_by="self_cpu_time_total", row_limit=top)
    (RESULTS / f"profile_{name}_ops.txt").write_text(table + "\n")
    prof.export_chrome_trace(str(RESULTS / f"profile_{name}_trace.json"))
    total = sum(e.self_cpu_time_total for e in averages) or 1.0
    rows = sorted(averages, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return [{"op": e.key, "calls": e.count, "self_ms": e.self_cpu_time_total / 1000.0,
             "self_share": e.self_cpu_time_total / total} for e in rows]


# ------------------------------------------------------------------------------ the steps
def casl_step_fn(args) -> Callable[[], object]:
    """One CASL training step as the trainer runs it (its optimisers, settings, encoder loop)."""
    w, h = (int(v) for v in args.casl_size.split(","))
    over = ["--data.image_size", f"{w},{h}", "--optim.batch_size", str(args.casl_batch),
            "--data.root", args.casl_root]
    cfg = load_config(CaslTrainConfig, overrides=over)
    torch.manual_seed(0)
    model, disc = build_model(cfg)
    opt_e, opt_d = build_optimisers(cfg, model, disc)
    x = None
    if pathlib.Path(args.casl_root).is_dir():
        train, _, _ = load_casl_data(cfg)
        loader = torch.utils.data.DataLoader(train, batch_size=cfg.optim.batch_size, shuffle=True,
                                             generator=torch.Generator().manual_seed(0))
        x = next(iter(loader))["image"]
    if x is None:  # no data here: random RGB with a central box as the mask
        g = torch.Generator().manual_seed(0)
        x = torch.rand(cfg.optim.batch_size, 4, h, w, generator=g)
        x[:, 3] = 0
        x[:, 3, h // 8: h - h // 8, w // 4: w - w // 4] = 1
    settings = step_settings(cfg)
    loop = EncoderLoop(cfg.encoder_loop.schedule)
    gen = torch.Generator().manual_seed(0)
    count = [0]

    def step():
        casl_step(model, disc, opt_e, opt_d, x, settings, loop.frozen(count[0]), 1.0, gen)
        count[0] += 1

    return step


def ognet_step_fn(points: int, init_points: int, batch: int) -> Callable[[], object]:
    """One OG-Net-Small training step at ``points`` per cloud (re-id trainer's losses)."""
    torch.manual_seed(0)
    model = create_model("og-net-small", num_classes=150, k=20, init_points=init_points).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=5e-4, amsgrad=True)
    g = torch.Generator().manual_seed(0)
    d = torch.randn(batch, points, 3, generator=g)
    xyz = d / d.norm(dim=-1, keepdim=True) * torch.tensor([0.25, 0.8, 0.15])
    xyz = xyz - xyz.mean(dim=1, keepdim=True)
    rgb = torch.rand(batch, points, 3, generator=g) - 0.5
    labels = torch.arange(batch) // 4

    def step():
        out = model(xyz, rgb)
        loss = F.cross_entropy(out.logits, labels) + circle_loss(out.feature, labels, 0.25,
                                                                 64.0) / batch
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def data_casl_fn(args) -> Callable[[], object] | None:
    """The next batch of the CASL training loader (cycling), as the trainer iterates it."""
    if not pathlib.Path(args.casl_root).is_dir():
        return None
    w, h = (int(v) for v in args.casl_size.split(","))
    cfg = load_config(CaslTrainConfig, overrides=["--data.image_size", f"{w},{h}",
                                                  "--data.root", args.casl_root])
    train, _, _ = load_casl_data(cfg)
    loader = torch.utils.data.DataLoader(train, batch_size=args.casl_batch, shuffle=True,
                                         drop_last=True, num_workers=0,
                                         generator=torch.Generator().manual_seed(0))
    return _cycling(loader)


def data_reid_fn(args) -> Callable[[], object] | None:
    """The next batch of the re-id point loader (P×K sampler) on ``--reid_shards``."""
    if not args.reid_shards or not pathlib.Path(args.reid_shards).is_dir():
        return None
    cfg = load_config(ReidTrainConfig, overrides=["--data.shards", args.reid_shards,
                                                  "--data.num_points", "512",
                                                  "--optim.batch_size", "24"])
    data = load_reid_data(cfg)
    sampler = PKSampler(data.train_labels, 24, cfg.optim.instances, 0, 0, 1)
    loader = torch.utils.data.DataLoader(data.train, batch_size=24, sampler=sampler,
                                         drop_last=True)
    return _cycling(loader)


def _cycling(loader) -> Callable[[], object]:
    state = {"it": iter(loader)}

    def step():
        try:
            return next(state["it"])
        except StopIteration:
            state["it"] = iter(loader)
            return next(state["it"])

    return step


# ------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(STEPS), help="comma list of " + ", ".join(STEPS))
    ap.add_argument("--steps", type=int, default=3, help="timed steps per step kind (median)")
    ap.add_argument("--top", type=int, default=25, help="operators listed per step")
    ap.add_argument("--casl_size", default="32,64", help="W,H of the CASL step")
    ap.add_argument("--casl_batch", type=int, default=16)
    ap.add_argument("--casl_root", default="data/synthpeople/Market-HQ")
    ap.add_argument("--reid_shards", default="")
    ap.add_argument("--ognet_batch", type=int, default=24)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke check)")
    args = ap.parse_args()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = sorted(set(only) - set(STEPS))
    if bad:
        ap.error(f"--only: unknown step(s) {bad}; choose from {', '.join(STEPS)}")
    sizes = {"ognet-small-512": (512, 256), "ognet-small-4096": (4096, 768)}
    if args.quick:
        args.steps, args.casl_batch, args.ognet_batch = 1, 4, 8
        sizes = {"ognet-small-512": (256, 128), "ognet-small-4096": (512, 256)}
    RESULTS.mkdir(parents=True, exist_ok=True)

    peak = matmul_peak(512 if args.quick else 2048)
    print(f"{torch.get_num_threads()} threads; dense float32 matmul peak (torch.mm): "
          f"{peak / 1e9:.1f} GFLOP/s")
    builders = {
        "casl": lambda: casl_step_fn(args),
        "ognet-small-512": lambda: ognet_step_fn(*sizes["ognet-small-512"], args.ognet_batch),
        "ognet-small-4096": lambda: ognet_step_fn(*sizes["ognet-small-4096"], args.ognet_batch),
        "data-casl": lambda: data_casl_fn(args),
        "data-reid": lambda: data_reid_fn(args),
    }
    summary: dict = {"threads": torch.get_num_threads(), "matmul_peak_flops": peak,
                     "quick": args.quick, "steps": {}}
    for name in only:
        step = builders[name]()
        if step is None:
            print(f"{name}: skipped (no data: --casl_root / --reid_shards)")
            continue
        step()  # warm-up
        seconds = median_seconds(step, args.steps)
        flops = 0 if name.startswith("data-") else count_flops(step)
        top = profile_one(name, step, args.top)
        rate = flops / seconds
        summary["steps"][name] = {"seconds": seconds, "flops": flops, "flops_per_s": rate,
                                  "fraction_of_peak": rate / peak, "top_ops": top}
        print(f"\n{name}: {1000 * seconds:.0f} ms/step (median of {args.steps}), "
              f"{flops / 1e9:.2f} GFLOP counted, {rate / 1e9:.2f} GFLOP/s = "
              f"{100 * rate / peak:.2f} % of the matmul peak")
        for row in top[:8]:
            print(f"  {row['op']:<40} {row['self_ms']:8.1f} ms  {100 * row['self_share']:5.1f} %"
                  f"  ({row['calls']} calls)")
        print(f"  -> {RESULTS / f'profile_{name}_ops.txt'}, {RESULTS / f'profile_{name}_trace.json'}")
    write_result(summary, RESULTS / "profile_steps.json")


if __name__ == "__main__":
    main()
