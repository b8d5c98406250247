"""What Ray Tune costs on this machine: the same tiny trials as plain sequential calls (the
baseline, measured in the same run) and through ``tune.Tuner`` at concurrency 1 and 2.

A trial is a fixed amount of CPU work on one torch thread: a small MLP trained on random data
for a step count calibrated at the start so that one trial takes about ``--trial-seconds``, and
its loss reported to Tune after every chunk of steps (as the trainers report once per epoch).
The Tune runs use a function trainable with 1 CPU per trial, a grid over the trial's seed,
``max_concurrent_trials`` 1 and 2 and ``reuse_actors=True`` as the sweep job does (without it
each trial starts a new process: +6.3 s per trial here, +133 % on 5 s trials, 2026-12-04); Ray starts before the clocks do (its start-up is printed
separately). So the ratios isolate Tune's own per-trial cost (placement, the trial actor, result
plumbing, experiment checkpointing) from Ray's start-up:

    overhead   = wall(Tune, concurrency 1) / wall(plain sequential) - 1     (target <= 15 % at 8)
    speed-up   = wall(Tune, concurrency 1) / wall(Tune, concurrency 2)      (ideal 2 on 2 cores)

    python benchmarks/bench_tune.py [--trials 8] [--trial-seconds 5]

Prints a table; JSON to benchmarks/results/bench_tune.json. Run it alone: anything else on the
two cores inflates the Tune rows (they run while the plain row does not).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import tempfile
import time

from mirror3d.utils.env import apply_local_env

apply_local_env()  # loopback Ray, no auth, passive OpenMP: before torch or Ray load

import ray  # noqa: E402
import torch  # noqa: E402
from ray import tune  # noqa: E402

from mirror3d.platform.cluster import local_ray_init_kwargs  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
REPORTS = 10  # reports per trial, like epochs


def work(seed: int, steps: int, report=None) -> float:
    """``steps`` Adam steps of a 256-512-256 MLP on random data, on one thread; every
    ``steps // REPORTS`` steps ``report({"loss": ...})``. Returns the last loss."""
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 256, generator=g)
    y = torch.randn(256, 256, generator=g)
    net = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 256))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    every = max(1, steps // REPORTS)
    loss = torch.zeros(())
    for i in range(steps):
        loss = torch.nn.functional.mse_loss(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if report is not None and (i + 1) % every == 0:
            report({"loss": float(loss), "step": i + 1})
    return float(loss)


def calibrate(trial_seconds: float) -> int:
    """Steps that take about ``trial_seconds`` here."""
    work(0, 20)  # warm-up
    t0 = time.perf_counter()
    work(0, 100)
    per_step = (time.perf_counter() - t0) / 100
    return max(REPORTS, int(round(trial_seconds / per_step)))


def trainable(config: dict) -> None:
    work(int(config["seed"]), int(config["steps"]), report=tune.report)


def run_tune(trials: int, steps: int, concurrency: int, storage: str) -> tuple[float, int]:
    """Wall seconds of ``trials`` trials through Tune, and how many finished."""
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"seed": tune.grid_search(list(range(trials))), "steps": steps},
        tune_config=tune.TuneConfig(max_concurrent_trials=concurrency, metric="loss", mode="min",
                                    reuse_actors=True),
        run_config=tune.RunConfig(name=f"bench_c{concurrency}", storage_path=storage,
                                  verbose=0))
    t0 = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - t0
    done = sum(1 for r in grid if r.error is None)
    return wall, done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--trial-seconds", type=float, default=5.0)
    args = ap.parse_args()
    if args.trials < 1 or args.trial_seconds <= 0:
        raise SystemExit("bench_tune: --trials must be >= 1 and --trial-seconds > 0")

    steps = calibrate(args.trial_seconds)
    t0 = time.perf_counter()
    for seed in range(args.trials):
        work(seed, steps)
    plain = time.perf_counter() - t0

    t0 = time.perf_counter()
    ray.init(num_cpus=2, **local_ray_init_kwargs())
    ray_start = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="bench_tune_") as storage:
        c1, done1 = run_tune(args.trials, steps, 1, storage)
        c2, done2 = run_tune(args.trials, steps, 2, storage)
    ray.shutdown()
    if done1 != args.trials or done2 != args.trials:
        raise SystemExit(f"bench_tune: trials failed (concurrency 1: {done1}/{args.trials}, "
                         f"concurrency 2: {done2}/{args.trials})")

    overhead = c1 / plain - 1.0
    speedup = c1 / c2
    res = {"trials": args.trials, "steps_per_trial": steps, "trial_seconds_target": args.trial_seconds,
           "plain_sequential_s": plain, "tune_concurrency1_s": c1, "tune_concurrency2_s": c2,
           "ray_start_s": ray_start, "overhead_concurrency1": overhead,
           "overhead_per_trial_s": (c1 - plain) / args.trials,
           "speedup_concurrency2": speedup, "target_overhead": 0.15,
           "target_met": overhead <= 0.15}
    print(f"{args.trials} trials x {steps} steps (~{args.trial_seconds:g} s each), 1 torch thread "
          f"per trial; Ray start-up {ray_start:.1f} s (not counted)")
    print(f"{'run':<28}{'wall (s)':>10}{'ratio':>10}")
    print(f"{'plain sequential (baseline)':<28}{plain:>10.1f}{1.0:>10.2f}")
    print(f"{'Tune, concurrency 1':<28}{c1:>10.1f}{c1 / plain:>10.2f}")
    print(f"{'Tune, concurrency 2':<28}{c2:>10.1f}{c2 / plain:>10.2f}")
    print(f"Tune overhead at concurrency 1: {100 * overhead:+.1f} % "
          f"({(c1 - plain) / args.trials:.2f} s per trial; target <= 15 %: "
          f"{'met' if overhead <= 0.15 else 'NOT met'}); concurrency 2 vs 1: {speedup:.2f}x")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "bench_tune.json"
    out.write_text(json.dumps(res, indent=2))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
