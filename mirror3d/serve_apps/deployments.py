"""The model deployments of the demo: thin Ray Serve wrappers over the engine's services.

    Reconstructor   a CASL run → mesh (GLB), camera, light, renders     engine.demo_reconstruct
    ReidSearch      a re-id run + its gallery index → top-k matches    engine.demo_search

Each replica loads its model once (checkpoints load with ``weights_only=True`` in the engine's
loaders) and answers with plain Python values: numpy arrays, bytes and JSON-able dicts that
cross the object store. A bad input is not an exception across the handle but an answer
``{"error": "<one line>", "status": 4xx}`` (:func:`failure`), so the ingress turns it into the same
HTTP status and line whatever Ray does with exception types; anything else raised is a bug and
reaches the caller as Ray's error.

Replicas scale with ``autoscaling_config`` and reserve ``ray_actor_options`` from
:class:`~mirror3d.serve_apps.options.ReplicaOptions` (:func:`model_deployments`); the Ray Serve
docs, "Ray Serve Autoscaling" and "Resource allocation"
(https://docs.ray.io/en/latest/serve/resource-allocation.html).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray import serve
from ray.serve import Application

from mirror3d.engine.demo_inputs import InputError
from mirror3d.engine.demo_reconstruct import ReconstructService
from mirror3d.engine.demo_search import SearchService
from mirror3d.serve_apps.options import DemoOptions, ReplicaOptions

__all__ = ["Reconstructor", "ReidSearch", "failure", "model_deployments"]


def failure(e: BaseException, status: int | None = None) -> dict[str, Any]:
    """The answer of a deployment to a bad request: one line and an HTTP status."""
    line = " ".join(str(e).split()) or type(e).__name__
    return {"error": line, "status": int(status or getattr(e, "status", 400))}


@serve.deployment(name="Reconstructor")
class Reconstructor:
    """A CASL run behind :class:`~mirror3d.engine.demo_reconstruct.ReconstructService`."""

    def __init__(self, run_dir: str, device: str = "cpu", turntable_frames: int = 8,
                 max_refine_steps: int = 200) -> None:
        self.service = ReconstructService(run_dir, device=device, turntable_frames=turntable_frames,
                                          max_refine_steps=max_refine_steps)

    def reconstruct(self, image: np.ndarray, mask: np.ndarray | None = None, box: Any = None,
                    refine_steps: int = 0, turntable: bool = False) -> dict[str, Any]:
        """``{"summary": {...}, "glb": bytes}``; with ``turntable`` also ``input_view`` (H, W, 3)
        uint8, ``turntable_gif`` (bytes) and ``mask`` (H, W) bool. Bad input: :func:`failure`."""
        try:
            r = self.service.reconstruct(image, mask=mask, box=box, refine_steps=refine_steps,
                                         turntable=turntable)
        except InputError as e:
            return failure(e)
        out: dict[str, Any] = {"summary": r.summary(), "glb": r.glb, "input_view": r.input_view,
                               "mask": r.mask, "view_state": r.view_state}
        if turntable:
            out["turntable_gif"] = self.service.turntable_gif(r)
        return out

    def render_state(self, state: bytes, azimuth: float,
                     elevation: float | None = None) -> dict[str, Any]:
        """``{"image": (H, W, 3) uint8}``: a result's view state (kept by the ingress) seen
        from ``azimuth`` degrees off its predicted view; bad input: :func:`failure`."""
        try:
            return {"image": self.service.render_state(state, azimuth, elevation)}
        except InputError as e:
            return failure(e)


@serve.deployment(name="ReidSearch")
class ReidSearch:
    """A re-id run and its gallery index behind
    :class:`~mirror3d.engine.demo_search.SearchService`."""

    def __init__(self, run_dir: str, device: str = "cpu", index_dir: str = "",
                 index_method: str = "", index_params: dict | None = None) -> None:
        self.service = SearchService(run_dir, device=device, index_dir=index_dir or None,
                                     index_method=index_method or None, index_params=index_params)

    def search(self, image: np.ndarray, mask: np.ndarray | None = None, box: Any = None,
               k: int = 10, query_pid: int | None = None,
               thumbnails: bool = False) -> dict[str, Any]:
        """``{"summary": {... "rows": [{rank, score, pid, camid, path, match}, ...]}}``; with
        ``thumbnails`` also ``thumbnails``: one (h, w, 3) uint8 per row. Bad input: :func:`failure`."""
        try:
            r = self.service.search(image, mask=mask, box=box, k=k, query_pid=query_pid)
        except InputError as e:
            return failure(e)
        out: dict[str, Any] = {"summary": r.summary()}
        if thumbnails:
            out["thumbnails"] = [self.service.thumbnail(row["path"]) for row in r.rows]
        return out


def _scaled(deployment, replicas: ReplicaOptions):
    return deployment.options(autoscaling_config=replicas.autoscaling.to_serve(),
                              ray_actor_options=replicas.actor_options(),
                              max_ongoing_requests=replicas.max_ongoing_requests)


def model_deployments(opts: DemoOptions, casl_run: str, reid_run: str) -> tuple[Application, Application]:
    """The bound Reconstructor and ReidSearch of ``opts`` on the given (resolved) runs."""
    rec = _scaled(Reconstructor, opts.reconstructor).bind(
        casl_run, device=opts.device, turntable_frames=opts.turntable_frames,
        max_refine_steps=opts.max_refine_steps)
    search = _scaled(ReidSearch, opts.search).bind(reid_run, device=opts.device,
                                                   index_dir=opts.index_dir,
                                                   index_method=opts.index.method,
                                                   index_params=opts.index.params())
    return rec, search
