"""Job ``serve``: the demo on Ray Serve — the Gradio page at ``/ui`` and the REST API — from the
runs ``make run`` left (the newest by default), on 127.0.0.1 until Ctrl-C.

    python -m mirror3d serve                              # newest runs, http://127.0.0.1:8000/ui
    python -m mirror3d serve --casl runs/pipeline/smoke/casl --reid runs/pipeline/smoke/reid/flat
    python -m mirror3d serve --port 8001 --reconstructor.autoscaling.max_replicas 3
    make demo                                             # = python jobs/serve.py
    serve run serve_config.yaml                           # the same app through Serve's own CLI

With no trained run it prints one line naming the command that makes one and exits 1. The app,
its routes and its scaling: :mod:`mirror3d.serve_apps` (options, deployments, ingress, app).
"""

from __future__ import annotations

import signal
import threading
import time

from mirror3d.serve_apps.app import resolve_runs, start_demo, stop_demo
from mirror3d.serve_apps.options import DemoOptions
from mirror3d.utils.preflight import check_checkpoint, check_output

__all__ = ["CONFIG", "run"]

CONFIG = DemoOptions


def _interrupt(signum, frame):  # SIGTERM (kill, a process manager) stops it like Ctrl-C
    raise KeyboardInterrupt


def run(cfg: DemoOptions, wait: bool = True) -> int:
    # the runs are checked before Ray starts: missing (NoRunError), or of the wrong kind (a
    # re-id run given as --casl is named as one)
    runs = resolve_runs(cfg)
    check_checkpoint(runs.casl, "casl", "casl")
    check_checkpoint(runs.reid, "reid", "reid", needs=("config", "model", "num_classes"))
    for key in ("index_dir", "mesh_dir"):
        if getattr(cfg, key):
            check_output(getattr(cfg, key), key)
    url = start_demo(cfg)
    print(f"serve: the demo is at {url}/ui  (REST: POST {url}/api/reconstruct, "
          f"POST {url}/api/search, GET {url}/healthz; Ctrl-C stops it)", flush=True)
    if not wait:
        return 0
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("serve: stopping", flush=True)
    finally:
        stop_demo()
    return 0
