"""The demo as one Ray Serve application, and starting it on local Ray.

    serve run serve_config.yaml                       # Serve's own config (import_path below)
    serve run mirror3d.serve_apps.app:build_app port=8001 casl=runs/pipeline/smoke/casl
    python -m mirror3d serve [--casl RUN] [--reid RUN] [--port 8000]   # start_demo + wait

The application graph (Ray Serve docs, "Deploy Multiple Applications" / "Model Composition":
https://docs.ray.io/en/latest/serve/model_composition.html)::

    DemoIngress (FastAPI + Gradio, 1 replica) ──handle──► Reconstructor (autoscaled)
                                              └─handle──► ReidSearch (autoscaled)

:func:`build_app` is an application builder: Serve calls it with the ``args`` of the config file
(or the ``key=value`` arguments of ``serve run``) and deploys what it returns. Runs not named are
the newest ones ``make run`` left (:func:`mirror3d.engine.demo_runs.newest_demo_runs`); with none
it raises one line naming the command that makes one.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ray import serve
from ray.serve import Application

from mirror3d.engine.demo_runs import newest_demo_runs
from mirror3d.platform.cluster import ensure_ray
from mirror3d.serve_apps.deployments import model_deployments
from mirror3d.serve_apps.ingress import DemoIngress
from mirror3d.serve_apps.options import DemoOptions
from mirror3d.utils.config import config_from_dict, load_config

__all__ = ["APP_NAME", "MAKE_A_RUN", "DemoRuns", "NoRunError", "build_app", "demo_options",
           "resolve_runs", "start_demo", "stop_demo"]

#: The Serve application's name (``serve status`` shows it).
APP_NAME = "mirror3d"

#: The command that trains the runs the demo needs (named by the error when there are none).
MAKE_A_RUN = 'make run ARGS="--smoke --name smoke"'

#: The repository's top folder: relative ``runs_root`` values fall back to it (Serve builds the
#: application in a Ray task whose working directory is not necessarily the repository).
_REPO = pathlib.Path(__file__).resolve().parents[2]


class NoRunError(FileNotFoundError):
    """No trained run for the demo; the message names the command that makes one."""


@dataclass(frozen=True)
class DemoRuns:
    """The resolved (absolute) run directories the demo serves."""

    casl: str
    reid: str


def demo_options(args: DemoOptions | Mapping[str, Any] | None = None) -> DemoOptions:
    """Options from a :class:`DemoOptions`, a nested mapping (``serve_config.yaml``'s ``args``)
    or flat ``dotted.key: value`` strings (``serve run ... reconstructor.num_cpus=0.3``)."""
    if isinstance(args, DemoOptions):
        return args
    args = dict(args or {})
    dotted = {k: args.pop(k) for k in list(args) if "." in str(k)}
    if not dotted:
        return config_from_dict(DemoOptions, args)
    return load_config(DemoOptions, [args], [f"--{k}={v}" for k, v in dotted.items()])


def _runs_root(root: str) -> pathlib.Path:
    p = pathlib.Path(root).expanduser()
    if p.is_absolute() or p.is_dir():
        return p.resolve()
    return (_REPO / p).resolve()


def _run_dir(value: str, what: str) -> str:
    p = pathlib.Path(value).expanduser()
    if not p.exists():
        raise NoRunError(f"{what}: no run at {value} (make one with: {MAKE_A_RUN})")
    return str(p.resolve())


def resolve_runs(opts: DemoOptions) -> DemoRuns:
    """The CASL and re-id runs of ``opts``: the given ones, else the newest suitable ones under
    ``runs_root``. Raises :class:`NoRunError` (one line naming :data:`MAKE_A_RUN`)."""
    casl, reid = opts.casl, opts.reid
    if not (casl and reid):
        root = _runs_root(opts.runs_root)
        newest_casl, newest_reid = newest_demo_runs(root)
        casl = casl or (str(newest_casl) if newest_casl else "")
        reid = reid or (str(newest_reid) if newest_reid else "")
        missing = [w for w, v in (("CASL", casl), ("re-id", reid)) if not v]
        if missing:
            raise NoRunError(f"no trained {' or '.join(missing)} run under {root} for the demo; "
                             f"make one with: {MAKE_A_RUN} (or name one: --casl RUN --reid RUN)")
    return DemoRuns(_run_dir(casl, "casl"), _run_dir(reid, "reid"))


def build_app(args: DemoOptions | Mapping[str, Any] | None = None) -> Application:
    """The demo application (Serve's application builder; ``serve_config.yaml`` imports it)."""
    opts = demo_options(args)
    runs = resolve_runs(opts)
    rec, search = model_deployments(opts, runs.casl, runs.reid)
    ingress = DemoIngress.options(ray_actor_options={"num_cpus": opts.ingress_num_cpus},
                                  max_ongoing_requests=opts.ingress_max_ongoing_requests)
    return ingress.bind(rec, search, opts, {"casl": runs.casl, "reid": runs.reid})


def start_demo(opts: DemoOptions, num_cpus: int | None = None) -> str:
    """Resolve the runs, connect to Ray (a new local instance on 127.0.0.1 unless
    ``RAY_ADDRESS``), start Serve's HTTP proxy on ``opts.host:opts.port`` and deploy the demo;
    returns the base URL once the application is running."""
    app = build_app(opts)  # errors about runs come before Ray starts
    ensure_ray(num_cpus)
    serve.start(http_options={"host": opts.host, "port": opts.port}, proxy_location="HeadOnly")
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    host = "127.0.0.1" if opts.host in ("0.0.0.0", "") else opts.host
    return f"http://{host}:{opts.port}"


def stop_demo() -> None:
    """Shut Serve down (the application, its replicas and the HTTP proxy)."""
    serve.shutdown()
