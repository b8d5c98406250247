"""Job ``sweep``: a Ray Tune sweep of train-reid or train-casl over a spec of
``configs/sweeps/`` (the papers' sensitivity studies; docs/sweeps.md).

    python -m mirror3d sweep ognet_k --overrides 'data.shards=data/lifted/casl-visible'
    python -m mirror3d sweep ognet_k --smoke                     # a tiny sweep
    python -m mirror3d sweep casl_learning --max_concurrent_trials 2 --trial_minutes 5
    python -m mirror3d sweep my_spec.yaml --name try2 --num_samples 20
    ray job submit --working-dir . -- python jobs/sweep.py ognet_k --cpus_per_trial 4

The spec is read and checked against the job's config before Ray starts (every problem is one
error line). Output ``<out_dir>/<name>/``: ``trials.parquet``, ``summary.md``, the curves,
``best.yaml`` (``python -m mirror3d <job> --config .../best.yaml`` trains the best trial again),
one run directory per trial under ``trials/`` and Tune's experiment under ``tune/``. Running an
interrupted sweep again resumes it (:func:`mirror3d.platform.tune.run_sweep`).
"""

from __future__ import annotations

from mirror3d.engine.sweep import SweepConfig, load_spec, plan_sweep
from mirror3d.jobs import PRESETS_DIR, resolve_config
from mirror3d.platform.tune import run_sweep

__all__ = ["CONFIG", "POSITIONAL", "plan", "run"]

CONFIG = SweepConfig
POSITIONAL = ("spec",)


def plan(cfg: SweepConfig):
    """The checked sweep plan of ``cfg`` (its spec against its job's config and preset)."""
    spec = load_spec(cfg.spec, PRESETS_DIR / "sweeps", cfg.variant)
    return plan_sweep(cfg, spec, resolve_config(spec.job, spec.preset))


def run(cfg: SweepConfig) -> int:
    p = plan(cfg)
    out = run_sweep(p)
    counts: dict[str, int] = {}
    for r in out.rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    done = ", ".join(f"{n} {s}" for s, n in counts.items())
    best = ""
    if out.best is not None:
        best = (f"; best {p.spec.metric} {out.best[p.spec.metric]:.4g} "
                f"(trial {out.best['trial_id']})")
    print(f"sweep: {len(out.rows)} trials ({done}){best} -> {out.summary}")
    return 0
