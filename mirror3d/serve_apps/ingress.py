"""The ingress of the demo: a FastAPI app (REST API + the Gradio page at ``/ui``) in one Serve
replica, calling the model deployments through their handles.

Routes::

    POST /api/reconstruct        multipart: image, optional mask (image file), optional box
                                 "x0,y0,x1,y1", refine_steps → JSON camera, light, counts, mesh_url
    GET  /api/meshes/{id}.glb    the textured mesh of a recent reconstruction (model/gltf-binary)
    GET  /api/views/{id}.png     the same person seen from ?azimuth=deg[&elevation=deg] (PNG)
    POST /api/search             multipart: image, optional mask, box, k, pid → JSON top-k
    GET  /healthz                {"status": "ok", ...}
    /ui                          the Gradio page (mirror3d.serve_apps.ui)

Every error is HTTP 4xx/5xx with one line of JSON ``{"error": "..."}``: a bad upload (not an
image, truncated, too small, too many pixels, an empty or wrongly sized mask, a bad box) is the
engine's :class:`~mirror3d.engine.demo_inputs.InputError` with its status (400, or 413 for too
large). Uploads are decoded by Pillow only (:func:`~mirror3d.engine.demo_inputs.decode_upload`);
nothing uploaded is ever unpickled. A request body larger than two uploads is refused with 413
while it streams in (:class:`BodyLimit`), before anything is parsed.

The FastAPI app is built inside the replica (``__serve_build_asgi_app__``, Ray Serve's late-bound
ingress): a module-level FastAPI app with Gradio mounted cannot be pickled into
``@serve.ingress(app)``, and ``ray.serve.gradio_integrations`` does not work with Gradio 6, so
Gradio is mounted with ``gr.mount_gradio_app`` (:func:`~mirror3d.serve_apps.ui.mount_ui`; Gradio docs, "mount_gradio_app":
https://www.gradio.app/docs/gradio/mount_gradio_app).
"""

from __future__ import annotations

import asyncio
import io
import pathlib
import tempfile
from typing import Any

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from PIL import Image
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from mirror3d.engine.demo_inputs import (
    InputError,
    UploadLimits,
    decode_mask_upload,
    decode_upload,
    optional_box,
)
from mirror3d.engine.demo_reconstruct import MeshStore
from mirror3d.engine.demo_search import market_ids
from mirror3d.serve_apps.options import DemoOptions
from mirror3d.serve_apps.ui import mount_ui

__all__ = ["BodyLimit", "DemoIngress", "ServeDemoApi", "build_asgi_app", "error_response"]


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def error_response(status: int, message: str) -> JSONResponse:
    """HTTP ``status`` with the body ``{"error": "<one line>"}``."""
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)


class BodyLimit:
    """ASGI middleware: a request whose body is over ``max_bytes`` gets 413 and one line of JSON
    (by its Content-Length before reading, else while the body streams in), never reaching the
    routes' multipart parser whole."""

    class _TooLarge(Exception):
        pass

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)

    def _refuse(self) -> JSONResponse:
        mib = self.max_bytes / 2**20
        return error_response(413, f"upload: request body larger than {mib:.3g} MiB")

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._refuse()(scope, receive, send)
        seen = 0
        started = False

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyLimit._TooLarge
            return message

        async def tracked_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except BodyLimit._TooLarge:
            if not started:
                await self._refuse()(scope, receive, send)


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return buf.getvalue()


def _checked_int(name: str, value: Any, lo: int, hi: int) -> int:
    try:
        v = int(str(value).strip())
    except ValueError:
        raise InputError(f"{name}: expected an integer, got {str(value)[:40]!r}") from None
    if not lo <= v <= hi:
        raise InputError(f"{name}: expected {lo}..{hi}, got {v}")
    return v


def _checked_float(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}: expected a number, got {str(value)[:40]!r}") from None
    if not np.isfinite(v):
        raise InputError(f"{name}: expected a finite number, got {v}")
    return v


class ServeDemoApi:
    """The page's ``api`` (what :func:`mirror3d.serve_apps.ui.build_ui` calls) and the REST
    routes' backend: async methods over the deployment handles. Errors are
    :class:`~mirror3d.engine.demo_inputs.InputError` (one line, ``status``)."""

    def __init__(self, reconstructor: DeploymentHandle, search: DeploymentHandle,
                 opts: DemoOptions, runs: dict[str, str]) -> None:
        self.reconstructor = reconstructor
        self.searcher = search
        self.opts = opts
        self.runs = dict(runs)
        root = pathlib.Path(opts.mesh_dir or tempfile.mkdtemp(prefix="mirror3d-demo-"))
        self.meshes = MeshStore(root / "meshes", max_items=opts.max_meshes)
        self.gifs = MeshStore(root / "turntables", max_items=opts.max_meshes, suffix=".gif")
        self.views = MeshStore(root / "views", max_items=opts.max_meshes, suffix=".npz")
        self.root = root
        self.limits = UploadLimits(max_bytes=opts.max_bytes, max_pixels=opts.max_pixels)

    @staticmethod
    def _raise_if_failed(out: dict[str, Any]) -> dict[str, Any]:
        if "error" in out:
            raise InputError(out["error"], status=int(out.get("status", 400)))
        return out

    async def reconstruct(self, image: np.ndarray, mask: np.ndarray | None = None, box: Any = None,
                          refine_steps: int = 0, turntable: bool = True) -> dict[str, Any]:
        """``summary`` keys (id, camera, light, num_vertices, num_faces, mask_source,
        refine_steps, seconds) + ``mesh_url``, ``glb_path``, ``input_view`` (H, W, 3) uint8,
        ``mask`` (H, W) bool and, with ``turntable``, ``turntable_gif_path``."""
        steps = _checked_int("refine_steps", refine_steps, 0, self.opts.max_refine_steps)
        box = optional_box(box, image.shape[:2])
        out = self._raise_if_failed(await self.reconstructor.reconstruct.remote(
            image, mask, box, steps, turntable))
        summary = dict(out["summary"])
        rid = summary["id"]
        await asyncio.to_thread(self.meshes.put, rid, out["glb"])
        await asyncio.to_thread(self.views.put, rid, out["view_state"])
        res = {**summary, "mesh_url": f"/api/meshes/{rid}.glb",
               "glb_path": str(self.meshes.path(rid)),
               "input_view": out.get("input_view"), "mask": out.get("mask")}
        if out.get("turntable_gif") is not None:
            await asyncio.to_thread(self.gifs.put, rid, out["turntable_gif"])
            res["turntable_gif_path"] = str(self.gifs.path(rid))
        return res

    async def novel_view(self, id: str, azimuth: float, elevation: float | None = None) -> np.ndarray:
        """The result ``id`` rendered from ``azimuth`` (and ``elevation``) degrees, (H, W, 3) uint8.

        The view is rendered from the result's view state kept beside its GLB, so any
        Reconstructor replica can render it, whichever made the mesh.

        Raises:
            InputError: 404 for an unknown or evicted id; 400 for bad angles.
        """
        azimuth = _checked_float("azimuth", azimuth)
        elevation = None if elevation is None else _checked_float("elevation", elevation)
        try:
            state = await asyncio.to_thread(self.views.get, id)
        except KeyError:
            raise InputError(f"id: no recent reconstruction {id!r} (ids expire; reconstruct "
                             "again)", status=404) from None
        out = await self.reconstructor.render_state.remote(state, azimuth, elevation)
        return self._raise_if_failed(out)["image"]

    async def search(self, image: np.ndarray, mask: np.ndarray | None = None, box: Any = None,
                     k: int | None = None, query_pid: int | None = None,
                     thumbnails: bool = True) -> dict[str, Any]:
        """The search ``summary`` (``rows``: rank, score, pid, camid, path, match) and, with
        ``thumbnails``, each row's ``thumbnail`` (h, w, 3) uint8."""
        k = _checked_int("k", self.opts.top_k if k in (None, "") else k, 1, self.opts.max_k)
        box = optional_box(box, image.shape[:2])
        out = self._raise_if_failed(await self.searcher.search.remote(
            image, mask, box, k, query_pid, thumbnails))
        res = dict(out["summary"])
        if thumbnails:
            res["rows"] = [{**row, "thumbnail": thumb}
                           for row, thumb in zip(res["rows"], out["thumbnails"])]
        return res

    async def decode(self, image: UploadFile, mask: UploadFile | None
                     ) -> tuple[np.ndarray, np.ndarray | None]:
        """The uploaded image (H, W, 3) uint8 and mask (H, W) bool, decoded by Pillow off the
        event loop; at most ``max_bytes + 1`` bytes of each file are read."""
        data = await image.read(self.limits.max_bytes + 1)
        img = await asyncio.to_thread(decode_upload, data, "image", self.limits)
        if mask is None or not mask.filename:
            return img, None
        mdata = await mask.read(self.limits.max_bytes + 1)
        m = await asyncio.to_thread(decode_mask_upload, mdata, img.shape[:2], self.limits)
        return img, m


def _query_pid(filename: str | None, pid: str | None) -> int | None:
    """The query's person id: the ``pid`` field, else a Market-1501 style file name's, else None."""
    if pid not in (None, ""):
        return _checked_int("pid", pid, -1, 10**9)
    ids = market_ids(filename or "")
    return None if ids is None else ids[0]


def _validation_line(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path"))
        parts.append(f"{loc or 'request'}: {err.get('msg', 'invalid')}".lower())
    return "; ".join(parts) or "invalid request"


def build_asgi_app(api: ServeDemoApi, opts: DemoOptions) -> FastAPI:
    """The demo's FastAPI app over ``api``, with the Gradio page mounted at ``/ui`` (when
    ``opts.ui``). Called inside the ingress replica."""
    app = FastAPI(title="mirror3d demo", docs_url="/api/docs", openapi_url="/api/openapi.json",
                  redoc_url=None)

    @app.exception_handler(InputError)
    async def _input_error(request: Request, exc: InputError) -> JSONResponse:
        return error_response(int(getattr(exc, "status", 400)), _one_line(exc))

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, _validation_line(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        return error_response(500, f"internal error: {type(exc).__name__}: {_one_line(exc)}")

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", **api.runs, "ui": "/ui" if opts.ui else None}

    @app.post("/api/reconstruct")
    async def reconstruct(image: UploadFile = File(...), mask: UploadFile | None = File(None),
                          box: str | None = Form(None), refine_steps: str = Form("0")
                          ) -> dict[str, Any]:
        img, m = await api.decode(image, mask)
        res = await api.reconstruct(img, m, box, refine_steps, turntable=False)
        return {k: v for k, v in res.items()
                if k not in ("glb_path", "input_view", "mask", "turntable_gif_path")}

    @app.get("/api/meshes/{name}")
    async def mesh(name: str) -> FileResponse:
        rid = name[:-4] if name.endswith(".glb") else None
        try:
            path = api.meshes.path(rid or "")
        except KeyError:
            return error_response(404, f"mesh: no mesh {name!r} (ids expire; reconstruct again)")
        return FileResponse(path, media_type="model/gltf-binary", filename=f"{rid}.glb")

    @app.get("/api/views/{name}")
    async def view(name: str, azimuth: str = "0", elevation: str | None = None) -> Response:
        if not name.endswith(".png"):
            return error_response(404, f"view: expected <id>.png, got {name!r}")
        image = await api.novel_view(name[:-4], azimuth, elevation)
        return Response(_png(image), media_type="image/png")

    @app.post("/api/search")
    async def search(image: UploadFile = File(...), mask: UploadFile | None = File(None),
                     box: str | None = Form(None), k: str | None = Form(None),
                     pid: str | None = Form(None)) -> dict[str, Any]:
        img, m = await api.decode(image, mask)
        query_pid = _query_pid(image.filename, pid)
        return await api.search(img, m, box, k, query_pid, thumbnails=False)

    @app.get("/")
    async def index() -> Response:
        if opts.ui:
            return RedirectResponse("/ui/")
        return JSONResponse({"endpoints": ["/api/reconstruct", "/api/search", "/healthz"]})

    if opts.ui:
        app = mount_ui(app, api, "/ui", allowed_paths=[str(api.root)],
                       max_file_size=opts.max_bytes, server_name=opts.host,
                       server_port=opts.port)
    # two uploads (image + mask) and the multipart framing
    app.add_middleware(BodyLimit, max_bytes=2 * opts.max_bytes + 2**20)
    return app


@serve.deployment(name="DemoIngress", num_replicas=1)
@serve.ingress()
class DemoIngress:
    """The HTTP entry: holds the two model handles, builds the FastAPI + Gradio app in the replica."""

    def __init__(self, reconstructor: DeploymentHandle, search: DeploymentHandle,
                 opts: DemoOptions, runs: dict[str, str]) -> None:
        self.api = ServeDemoApi(reconstructor, search, opts, runs)
        self.opts = opts

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_asgi_app(self.api, self.opts)

