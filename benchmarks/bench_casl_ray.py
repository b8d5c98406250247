"""The CASL training step in real training: the trainer (:func:`mirror3d.platform.casl.train_casl`)
in a Ray Train worker, under several worker environments, against the same trainer in-process.

Each variant is a fresh Python process (a fresh local Ray instance for the Ray variants) with its
environment set before torch and Ray load: Ray's worker niceness (``RAY_worker_niceness``: Ray
starts its workers at nice 15 unless told otherwise) and the OpenMP wait policy / spin count of
libgomp (``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT``), which the workers inherit. Each run trains the
default CPU config (32×64, batch 16) on the real Market-HQ tree for two epochs of ``--steps``
steps; epoch 0 holds the warm-up and the prototype pass, epoch 1 only training steps (batch
loading, the step, the metrics), so its ``epoch_seconds / steps`` is the real per-step time.
The variants run in ``--rounds`` interleaved rounds (each round runs every variant once) so that
all see the same machine load; the ratios are against the ``ray-nice15-passive`` variant (the
project's Ray setting before issue #17) of the same run. JSON to benchmarks/results/bench_casl_ray.json.

Measured 2026-12-04 on the shared 2-core machine under other helpers' load (load average 5-16;
ms per real-training step, epoch 1 of 2, 20-24 steps; each line one run of the variants):

    ray nice 15 (old)   ray nice 0 (new default)   ray nice 0, 1 torch thread   in-process
         1958                   919                          817                    984
          982                  1001                          702                    972
         1282                   970                           -                    1537
    GOMP_SPINCOUNT 10k / 100k with nice 0 (third line's run): 3227 / 1555 ms (epoch 0: 4012 /
    9104 ms): a spinning OpenMP helper starves the other processes on 2 cores, so no spin count.

Nice 0 removes the Ray-only loss (the Ray step then equals the in-process one); the nice-15
worker loses whenever other processes are busy (×2.1 in the first run, ×1.0 in the second).
One torch thread per worker was the fastest under load (``--ray.cpus_per_worker 1``); not the
default until measured on a quiet machine (``--variants ray-default,ray-nice0-1thread``).

    python benchmarks/bench_casl_ray.py [--steps 24] [--rounds 1] [--variants a,b,...]
        [--root data/synthpeople/Market-HQ] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from results_io import RESULTS, write_result

#: name -> (runs in Ray Train, environment of the process and its Ray workers[, config
#: overrides]). ``None`` removes the variable (the project default from mirror3d.utils.env then
#: applies).
VARIANTS: dict[str, tuple] = {
    "inprocess-passive": (False, {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": None}),
    "ray-nice15-passive": (True, {"RAY_worker_niceness": "15", "OMP_WAIT_POLICY": "PASSIVE",
                                  "GOMP_SPINCOUNT": None}),
    "ray-nice0-passive": (True, {"RAY_worker_niceness": "0", "OMP_WAIT_POLICY": "PASSIVE",
                                 "GOMP_SPINCOUNT": None}),
    "ray-nice0-spin10k": (True, {"RAY_worker_niceness": "0", "OMP_WAIT_POLICY": "PASSIVE",
                                 "GOMP_SPINCOUNT": "10000"}),
    "ray-nice0-spin100k": (True, {"RAY_worker_niceness": "0", "OMP_WAIT_POLICY": "PASSIVE",
                                  "GOMP_SPINCOUNT": "100000"}),
    "ray-nice15-spin100k": (True, {"RAY_worker_niceness": "15", "OMP_WAIT_POLICY": "PASSIVE",
                                   "GOMP_SPINCOUNT": "100000"}),
    "ray-nice0-spin1m": (True, {"RAY_worker_niceness": "0", "OMP_WAIT_POLICY": "PASSIVE",
                                "GOMP_SPINCOUNT": "1000000"}),
    "inprocess-spin100k": (False, {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "100000"}),
    "ray-nice0-1thread": (True, {"RAY_worker_niceness": "0", "OMP_WAIT_POLICY": "PASSIVE",
                                 "GOMP_SPINCOUNT": None}, ["--ray.cpus_per_worker", "1"]),
    "ray-default": (True, {}),  # whatever mirror3d.utils.env sets now
    "inprocess-default": (False, {}),
}
BASELINE = "ray-nice15-passive"


def child(name: str, root: str, steps: int, out: str) -> None:
    """One variant in this (fresh) process: train two epochs, write the epochs' records."""
    from mirror3d.utils.env import apply_local_env

    apply_local_env()  # the project's environment, the variant's values already in os.environ
    from mirror3d.engine.casl_train import CaslTrainConfig, train_casl_loop
    from mirror3d.utils.config import load_config

    on_ray, overrides = VARIANTS[name][0], list(VARIANTS[name][2:3] and VARIANTS[name][2])
    work = pathlib.Path(tempfile.mkdtemp(prefix=f"casl_ray_{name}_"))
    cfg = load_config(CaslTrainConfig, overrides=[
        "--data.root", str(pathlib.Path(root).resolve()), "--data.max_train", str(16 * steps),
        "--data.max_test", "16", "--optim.epochs", "2", "--optim.checkpoint_every", "1",
        "--tracking.mlflow", "false", "--out_dir", str(work), "--name", name, *overrides])
    t = time.time()
    if on_ray:
        from mirror3d.platform.casl import train_casl
        from mirror3d.platform.cluster import ensure_ray

        ensure_ray()
        run_dir = train_casl(cfg)
    else:
        run_dir = work / name
        run_dir.mkdir(parents=True)
        train_casl_loop(cfg, run_dir, device="cpu")
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    epochs = [json.loads(line) for line in lines if line.strip()]
    shutil.rmtree(work, ignore_errors=True)  # the run's checkpoints (~350 MB)
    pathlib.Path(out).write_text(json.dumps({
        "variant": name, "wall_seconds": time.time() - t,
        "env": {k: os.environ.get(k) for k in ("RAY_worker_niceness", "OMP_WAIT_POLICY",
                                               "GOMP_SPINCOUNT")},
        "epochs": [{"epoch": e["epoch"], "steps": e["steps"], "seconds": e["epoch_seconds"],
                    "loss": e["loss"]} for e in epochs]}))


def run_variant(name: str, root: str, steps: int) -> dict:
    env = dict(os.environ)
    for key, value in VARIANTS[name][1].items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = fh.name
    subprocess.run([sys.executable, __file__, "--child", name, "--root", root, "--steps",
                    str(steps), "--out", out], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    result = json.loads(pathlib.Path(out).read_text())
    os.unlink(out)
    return result


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=24, help="steps per epoch")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--variants", default="ray-nice15-passive,ray-default,ray-nice0-1thread,"
                                          "inprocess-default",
                    help=f"comma-separated, of: {', '.join(VARIANTS)}")
    ap.add_argument("--root", default="data/synthpeople/Market-HQ")
    ap.add_argument("--quick", action="store_true", help="4 steps per epoch, two variants")
    ap.add_argument("--child")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.child:
        child(args.child, args.root, args.steps, args.out)
        return
    names = args.variants.split(",")
    if args.quick:
        args.steps, args.rounds, names = 4, 1, [BASELINE, "ray-default"]
    if BASELINE not in names:
        names.insert(0, BASELINE)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {sorted(VARIANTS)}")
    per_step: dict[str, list[float]] = {n: [] for n in names}
    records = []
    for r in range(args.rounds):
        for name in names:
            before = load_average()
            res = run_variant(name, args.root, args.steps)
            res.update(round=r, load_before=before, load_after=load_average())
            records.append(res)
            e1 = res["epochs"][-1]
            per_step[name].append(e1["seconds"] / max(1, e1["steps"]))
            print(f"round {r} {name:>22}: {1000 * per_step[name][-1]:6.0f} ms/step "
                  f"(epoch 1: {e1['steps']} steps; epoch 0 incl. warm-up and prototypes "
                  f"{1000 * res['epochs'][0]['seconds'] / max(1, res['epochs'][0]['steps']):.0f}"
                  f" ms/step; load {before[0]}→{res['load_after'][0]})", flush=True)
    ms = {n: 1000 * statistics.median(v) for n, v in per_step.items()}
    base = ms[BASELINE]
    print(f"\nCASL real-training step (epoch 1 of 2, {args.steps} steps, batch 16, 32×64), "
          f"median of {args.rounds} round(s); ratio = {BASELINE} / variant:")
    for n in names:
        print(f"  {n:>22}: {ms[n]:6.0f} ms/step  ×{base / ms[n]:.2f}")
    write_result({"steps_per_epoch": args.steps, "rounds": args.rounds, "baseline": BASELINE,
                  "ms_per_step": ms, "speedup_vs_baseline": {n: base / ms[n] for n in names},
                  "variants": {n: VARIANTS[n][1:] for n in names}, "runs": records,
                  "cpus": os.cpu_count()},
                 RESULTS / "bench_casl_ray.json")


if __name__ == "__main__":
    main()
