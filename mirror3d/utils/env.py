"""The one place where mirror3d's local-run environment is defined.

Ray on one machine must stay on loopback, without token auth, and quiet; Gradio must not try to
phone home (there is no network here). Every entry point (the CLI, the scripts in jobs/, the
tests' conftest) calls :func:`apply_local_env` once, before torch or Ray are imported;
``import mirror3d`` itself changes nothing. The Makefile does not repeat these values.
Values already present in the environment win, so a cluster user can override any of them.

Training workers (Ray Train) inherit these from the driver when ``ray.init`` starts a local
instance: they run at the driver's priority (``RAY_worker_niceness=0``; Ray's default is 15) with
OpenMP's passive wait policy. To change them for a run, set the variable before the command, e.g.
``RAY_worker_niceness=15 python -m mirror3d train-casl ...`` (Ray's old default), or
``GOMP_SPINCOUNT=100000`` (libgomp's helper threads spin that many iterations before sleeping;
with ``OMP_WAIT_POLICY=PASSIVE`` and no spin count they sleep at once). Measured on the 2-core
machine with ``benchmarks/bench_casl_ray.py`` (the CASL trainer in a Ray Train worker vs
in-process): see that script and issue #17's closing note.
"""

from __future__ import annotations

import os

LOCAL_ENV: dict[str, str] = {
    # With this at 0 a single-node Ray uses 127.0.0.1 as the node address (Train, Serve checked).
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    # Ray 2.60 turns on token auth for local clusters; tests and local runs switch it off.
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "1",
    # Ray Train V2 is the only stack mirror3d targets.
    "RAY_TRAIN_V2_ENABLED": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # Ray Train workers at the driver's priority: Ray starts its workers at nice 15 by default,
    # so any other process on the machine (Ray's own daemons, the driver, a test run) took the
    # CPU from the trainer first, and a nice-15 OpenMP helper woken for each of a CASL step's
    # ~4,000 small parallel regions waited for the next time slice. Measured with
    # benchmarks/bench_casl_ray.py (issue #17): the real-training CASL step in a Ray Train
    # worker at nice 0 vs nice 15 under other load, 960 vs 1470 ms (= the in-process step,
    # 978 ms, in the same run). Read by the raylet that ``ray.init`` starts (workers
    # inherit it); a cluster started with ``ray start`` needs it in that command's environment.
    "RAY_worker_niceness": "0",
    # OpenMP threads sleep instead of spinning when idle: on a small, shared machine (2 cores,
    # several processes) spinning made torch many times slower. Read when torch loads, so
    # ``import mirror3d`` must come before ``import torch`` for it to count. Ray's workers
    # inherit it (and RAY_worker_niceness) from the driver's environment at ``ray.init``.
    # No GOMP_SPINCOUNT: spinning helpers (10k / 100k iterations) made the Ray CASL step 1.6-3.4×
    # slower and some epochs 9× slower under other load (bench_casl_ray.py).
    "OMP_WAIT_POLICY": "PASSIVE",
}


def apply_local_env(override: bool = False) -> dict[str, str]:
    """Set the local-run variables in ``os.environ`` (keeping values already set unless
    ``override``). Returns the variables as now in force."""
    for key, value in LOCAL_ENV.items():
        if override or key not in os.environ:
            os.environ[key] = value
    return {k: os.environ[k] for k in LOCAL_ENV}
