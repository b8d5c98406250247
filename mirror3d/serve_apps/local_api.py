"""The demo page's ``api`` in one process, straight over the engine services (no Ray).

:func:`mirror3d.serve_apps.ui.build_ui` calls the same async methods on this class as on the
Ray Serve ingress's ``ServeDemoApi`` (which goes through deployment handles), so the page can be
tried and tested without starting Serve, and a screenshot script can drive it::

    api = LocalDemoApi.from_runs("runs/pipeline/cpu-default/casl",
                                 "runs/pipeline/cpu-default/reid/casl-visible")
    app = mount_ui(FastAPI(), api, allowed_paths=[str(api.root)])   # then uvicorn.run(app)

The services are not thread-safe; their calls run one at a time in a worker thread
(``asyncio.to_thread``), so the event loop keeps serving the page meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import socket
import tempfile
import threading
import time
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI

from mirror3d.engine.demo_inputs import InputError, UploadLimits, optional_box
from mirror3d.engine.demo_reconstruct import MeshStore, ReconstructService
from mirror3d.engine.demo_search import SearchService
from mirror3d.serve_apps.ui import mount_ui

__all__ = ["LocalDemoApi", "LocalServer"]


class LocalDemoApi:
    """``reconstruct`` / ``novel_view`` / ``search`` over in-process services.

    Args:
        reconstructor: a :class:`ReconstructService` (or None: reconstruct says so in one line).
        searcher: a :class:`SearchService` (or None likewise).
        root: where GLB and GIF files go (default: a new temporary directory; Gradio serves
            files under the system temp dir, anything else needs ``allowed_paths``).
        limits: upload caps (the page decodes uploads with them; default UploadLimits()).
        top_k, max_k: the default and largest ``k`` of a search.
        max_meshes: GLB / GIF files kept (oldest deleted first).
    """

    def __init__(self, reconstructor: ReconstructService | None, searcher: SearchService | None,
                 root: str | os.PathLike | None = None, limits: UploadLimits | None = None,
                 top_k: int = 10, max_k: int = 50, max_meshes: int = 64) -> None:
        self.reconstructor = reconstructor
        self.searcher = searcher
        self.root = pathlib.Path(root or tempfile.mkdtemp(prefix="mirror3d-demo-"))
        self.meshes = MeshStore(self.root / "meshes", max_items=max_meshes)
        self.gifs = MeshStore(self.root / "turntables", max_items=max_meshes, suffix=".gif")
        self.limits = limits or UploadLimits()
        self.top_k = int(top_k)
        self.max_k = int(max_k)
        self.max_refine_steps = int(getattr(reconstructor, "max_refine_steps", 0) or 0)
        self._lock = threading.Lock()

    @classmethod
    def from_runs(cls, casl_run: str | os.PathLike | None, reid_run: str | os.PathLike | None,
                  device: str = "cpu", turntable_frames: int = 8, **kwargs: Any) -> LocalDemoApi:
        """Load the services of a CASL run and a re-id run (either may be None)."""
        rec = (ReconstructService(casl_run, device=device, turntable_frames=turntable_frames)
               if casl_run else None)
        search = SearchService(reid_run, device=device) if reid_run else None
        return cls(rec, search, **kwargs)

    async def _run(self, fn, *args, **kwargs):
        def locked():
            with self._lock:
                return fn(*args, **kwargs)
        return await asyncio.to_thread(locked)

    async def reconstruct(self, image: np.ndarray, mask: np.ndarray | None = None, box: Any = None,
                          refine_steps: int = 0, turntable: bool = True) -> dict[str, Any]:
        """The result's ``summary()`` plus ``glb_path``, ``input_view``, ``mask`` and (with
        ``turntable``) ``turntable_gif_path``.

        Raises:
            InputError: bad input (one line), or no CASL run loaded.
        """
        svc = self.reconstructor
        if svc is None:
            raise InputError("reconstruct: no CASL run loaded", status=503)
        box = optional_box(box, np.asarray(image).shape[:2])
        r = await self._run(svc.reconstruct, image, mask=mask, box=box,
                            refine_steps=refine_steps, turntable=turntable)
        self.meshes.put(r.id, r.glb)
        out = {**r.summary(), "mesh_url": f"/api/meshes/{r.id}.glb",
               "glb_path": str(self.meshes.path(r.id)), "input_view": r.input_view,
               "mask": r.mask}
        if turntable:
            self.gifs.put(r.id, await self._run(svc.turntable_gif, r))
            out["turntable_gif_path"] = str(self.gifs.path(r.id))
        return out

    async def novel_view(self, id: str, azimuth: float, elevation: float | None = None
                         ) -> np.ndarray:
        """A recent result rendered from ``azimuth`` degrees: (h, w, 3) uint8.

        Raises:
            KeyError: an unknown or expired id (one line).
        """
        svc = self.reconstructor
        if svc is None:
            raise InputError("reconstruct: no CASL run loaded", status=503)
        try:
            return await self._run(svc.novel_view, id, float(azimuth), elevation)
        except KeyError:
            raise KeyError(f"id: no recent reconstruction {id!r}; reconstruct again") from None

    async def search(self, image: np.ndarray, mask: np.ndarray | None = None, box: Any = None,
                     k: int | None = None, query_pid: int | None = None,
                     thumbnails: bool = True) -> dict[str, Any]:
        """The search result's ``summary()`` (``rows``: rank, score, pid, camid, path, match),
        each row with a ``thumbnail`` (h, w, 3) uint8 when ``thumbnails``.

        Raises:
            InputError: bad input (one line), a k outside 1..max_k, or no re-id run loaded.
        """
        svc = self.searcher
        if svc is None:
            raise InputError("search: no re-id run loaded", status=503)
        k = self.top_k if k in (None, "") else int(k)
        if not 1 <= k <= self.max_k:
            raise InputError(f"k: expected 1..{self.max_k}, got {k}")
        box = optional_box(box, np.asarray(image).shape[:2])
        r = await self._run(svc.search, image, mask=mask, box=box, k=k, query_pid=query_pid)
        out = dict(r.summary())
        if thumbnails:
            out["rows"] = [{**row, "thumbnail": svc.thumbnail(row["path"])}
                           for row in out["rows"]]
        return out


class LocalServer:
    """The page over an ``api`` served by uvicorn in a background thread, on loopback.

    ``with LocalServer(api) as url:`` → ``http://127.0.0.1:<port>`` with the page at
    ``url + "/ui/"``; port 0 picks a free port. For tests and screenshots; the product serves
    the page through Ray Serve (``python -m mirror3d serve``).
    """

    def __init__(self, api: Any, host: str = "127.0.0.1", port: int = 0,
                 start_timeout_s: float = 60.0) -> None:
        self.api, self.host, self.port = api, host, int(port)
        self.start_timeout_s = start_timeout_s
        self._server = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> str:
        if self.port == 0:
            with socket.socket() as s:
                s.bind((self.host, 0))
                self.port = s.getsockname()[1]
        allowed = [str(self.api.root)] if getattr(self.api, "root", None) else []
        app = mount_ui(FastAPI(), self.api, "/ui", allowed_paths=allowed,
                       max_file_size=self.api.limits.max_bytes,
                       server_name=self.host, server_port=self.port)
        config = uvicorn.Config(app, host=self.host, port=self.port, log_level="warning",
                                lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="mirror3d-ui", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"ui: uvicorn did not start on {self.host}:{self.port}")
            time.sleep(0.05)
        return f"http://{self.host}:{self.port}"

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
