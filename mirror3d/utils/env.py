"""The one place where mirror3d's local-run environment is defined.

Ray on one machine must stay on loopback, without token auth, and quiet; Gradio must not try to
phone home (there is no network here). Every entry point (the CLI, the scripts in jobs/, the
tests' conftest) calls :func:`apply_local_env` once, before torch or Ray are imported;
``import mirror3d`` itself changes nothing. The Makefile does not repeat these values.
Values already present in the environment win, so a cluster user can override any of them.
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
    # OpenMP threads sleep instead of spinning when idle: on a small, shared machine (2 cores,
    # several processes) spinning made torch many times slower. Read when torch loads, so
    # ``import mirror3d`` must come before ``import torch`` for it to count.
    "OMP_WAIT_POLICY": "PASSIVE",
}


def apply_local_env(override: bool = False) -> dict[str, str]:
    """Set the local-run variables in ``os.environ`` (keeping values already set unless
    ``override``). Returns the variables as now in force."""
    for key, value in LOCAL_ENV.items():
        if override or key not in os.environ:
            os.environ[key] = value
    return {k: os.environ[k] for k in LOCAL_ENV}
