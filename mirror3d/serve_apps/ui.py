"""The demo's web page: a Gradio app with two tabs over an ``api`` object.

*Reconstruct*: drop a photo of a person; the page runs the reconstruction at once with the
automatic mask estimate and shows the mask over the photo in an image editor
(Gradio ``ImageEditor``: https://www.gradio.app/docs/gradio/imageeditor). On a real photo the
estimate is often wrong (a centred-box GrabCut, Rother et al. 2004, returns only the head or
nothing), so the user corrects it: paint (magenta) or erase and press *Reconstruct with this
mask*, or scribble around the person in blue (the scribbles' bounding box is the box; or type
``x0,y0,x1,y1``) and press *GrabCut in box*. Results: the textured mesh in a ``Model3D`` viewer
(GLB), the render from the predicted camera, a turntable GIF (the way the 3D-Magic-Mirror project
page shows its results), the camera / light readout, and an azimuth slider that renders a novel
view.

*Search*: drop a query photo; the page lifts and embeds it the way the re-id run was trained and
shows the top-k gallery entries as a strip (torchreid's ``visrank`` idea: Zhou et al., "Omni-Scale
Feature Learning for Person Re-Identification", ICCV 2019) with captions
``#rank score pid cam ✓/✗`` (✓/✗ when the query's id is known from a Market-1501 style file
name).

The ``api`` (:class:`mirror3d.serve_apps.local_api.LocalDemoApi` in one process, the ingress's
``ServeDemoApi`` over Ray Serve deployment handles) has async methods::

    reconstruct(image (H, W, 3) uint8, mask (H, W) bool | None, box | None, refine_steps)
        -> dict: id, camera, light, num_vertices, num_faces, mask_source, seconds, ...,
           glb_path, input_view (h, w, 3) uint8, turntable_gif_path, mask (H, W) bool
    novel_view(id, azimuth) -> (h, w, 3) uint8
    search(image, mask, box, k, query_pid) -> dict: rows [{rank, score, pid, camid, path,
           match, thumbnail (h, w, 3) uint8}], ...

and raises :class:`~mirror3d.engine.demo_inputs.InputError` (a one-line message) on bad input;
the page shows that line in an error toast (``gr.Error``). Uploads are decoded with the same
checks as the REST API (:func:`~mirror3d.engine.demo_inputs.decode_upload`).

Gradio's ``mount_gradio_app`` sets the page's theme and CSS, so mount the page with
:func:`mount_ui` (https://www.gradio.app/docs/gradio/mount_gradio_app).
"""

from __future__ import annotations

import logging
import math
import pathlib
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from mirror3d.data.readers.reid import MARKET_PATTERN, parse_reid_name
from mirror3d.engine.demo_inputs import InputError, UploadLimits, decode_upload

__all__ = ["UI_CSS", "build_ui", "wait_for_mesh", "camera_markdown", "caption", "editor_box", "editor_mask",
           "editor_value", "mount_ui", "one_line", "query_pid_from_name", "search_markdown",
           "status_markdown"]

log = logging.getLogger(__name__)

#: The mask layer's colour (RGBA) in the editor: a translucent magenta over the photo.
MASK_RGBA = (236, 72, 153, 140)
#: The editor shows small images (SynthPeople: 64×128) enlarged to about this height.
EDITOR_HEIGHT = 384
#: The novel view shown after a reconstruction: degrees of azimuth from the predicted camera.
NOVEL_AZIMUTH = 90
#: Brush colours: the mask colour paints foreground; strokes in the box colour mark a box (their
#: bounding box) for GrabCut.
MASK_COLOR = "rgb(236, 72, 153)"
BOX_COLOR = "rgb(37, 99, 235)"

#: The page's CSS (:func:`mount_ui` passes it): a centred page, compact tables, renders of a
#: few dozen pixels shown as crisp pixels, gallery captions in full.
UI_CSS = """
.gradio-container {max-width: 1360px !important; width: 100% !important; margin: auto;}
#m3d-title h1 {margin-bottom: 0.2em;}
#m3d-readout table {font-size: 0.85em; width: 100%;}
#m3d-readout td, #m3d-readout th {padding: 2px 8px;}
.m3d-help {font-size: 0.85em; opacity: 0.85;}
.m3d-render img {width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated;}
#m3d-gallery .grid-wrap {min-height: 0 !important; max-height: none !important;
    padding-top: 2.4em;}
#m3d-gallery .grid-container {grid-template-columns: repeat(var(--grid-cols), minmax(56px, 1fr));}
#m3d-gallery .thumbnail-item {aspect-ratio: 1 / 2.3; display: flex; flex-direction: column;}
#m3d-gallery .thumbnail-item img {flex: 1; min-height: 0; object-fit: contain;
    image-rendering: pixelated;}
#m3d-gallery .caption-label {position: static; max-width: none; white-space: normal;
    text-align: center; font-family: ui-monospace, monospace; font-size: 0.72em; opacity: 1;
    border: none; border-radius: 0; padding: 2px 1px;}
"""


# ----------------------------------------------------------------------------------------------
# Pure helpers (unit-tested without a browser)


def one_line(e: BaseException) -> str:
    """An exception as the one line the page shows (a KeyError without its quotes)."""
    text = e.args[0] if isinstance(e, KeyError) and e.args else e
    return " ".join(str(text).split()) or type(e).__name__


def _editor_scale(shape: tuple[int, int]) -> int:
    """Integer enlargement of an (H, W) image in the editor: small images get big enough to
    paint on (nearest neighbour, so each pixel stays a square), large ones stay 1:1."""
    return max(1, int(EDITOR_HEIGHT // max(1, shape[0])))


def _enlarge(a: np.ndarray, s: int) -> np.ndarray:
    return a if s == 1 else np.repeat(np.repeat(a, s, axis=0), s, axis=1)


def editor_value(image: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """The ``ImageEditor`` value showing ``mask`` over ``image``.

    Args:
        image: (H, W, 3) uint8 RGB.
        mask: (H, W) bool foreground.

    Returns:
        Gradio's ``EditorValue``: ``{"background": (sH, sW, 3), "layers": [mask layer RGBA
        (sH, sW, 4), :data:`MASK_RGBA` where the mask is], "composite": (sH, sW, 3)}`` with
        s = :func:`_editor_scale`.
    """
    s = _editor_scale(image.shape[:2])
    bg = _enlarge(np.ascontiguousarray(image[..., :3], dtype=np.uint8), s)
    m = _enlarge(np.asarray(mask, dtype=bool), s)
    layer = np.zeros(bg.shape[:2] + (4,), np.uint8)
    layer[m] = MASK_RGBA
    a = MASK_RGBA[3] / 255.0
    comp = bg.astype(np.float32)
    comp[m] = (1 - a) * comp[m] + a * np.asarray(MASK_RGBA[:3], np.float32)
    return {"background": bg, "layers": [layer], "composite": np.round(comp).astype(np.uint8)}


def _strokes(value: dict[str, Any] | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(mask pixels, box-scribble pixels) of the editor's layer, each (sH, sW) bool.

    Painted = alpha > 0; the box colour (blue, :data:`BOX_COLOR`) is told apart from the mask
    colour (magenta) by its blue channel exceeding its red one.
    """
    if not value or not value.get("layers"):
        return None
    a = np.asarray(value["layers"][0])
    if a.ndim != 3 or a.shape[2] < 3:
        return None
    painted = a[..., 3] > 0 if a.shape[2] == 4 else a[..., :3].max(axis=2) > 0
    blue = a[..., 2].astype(np.int16) > a[..., 0].astype(np.int16) + 40
    return painted & ~blue, painted & blue


def editor_mask(value: dict[str, Any] | None, shape: tuple[int, int]) -> np.ndarray | None:
    """The mask the user left on the editor's layer, at the image's (H, W).

    Pixels painted in the mask colour are foreground (box scribbles are not); the layer is
    scaled to ``shape`` by area averaging, so the enlarged editor maps back to image pixels (a
    pixel is foreground when at least half of its enlarged square is painted). None when the
    editor has no layer.
    """
    strokes = _strokes(value)
    if strokes is None:
        return None
    h, w = int(shape[0]), int(shape[1])
    painted = strokes[0].astype(np.float32)
    if painted.shape != (h, w):
        painted = np.asarray(Image.fromarray(painted, mode="F").resize(
            (w, h), Image.Resampling.BOX))
    return painted >= 0.5


def editor_box(value: dict[str, Any] | None, shape: tuple[int, int]
               ) -> tuple[int, int, int, int] | None:
    """The box around the blue scribbles on the editor's layer, in image pixels
    ``(x0, y0, x1, y1)`` (x1, y1 exclusive), clipped to the image; None when there are none."""
    strokes = _strokes(value)
    if strokes is None or not strokes[1].any():
        return None
    ys, xs = np.nonzero(strokes[1])
    lh, lw = strokes[1].shape
    h, w = int(shape[0]), int(shape[1])
    fx, fy = w / lw, h / lh
    x0, y0 = math.floor(xs.min() * fx), math.floor(ys.min() * fy)
    x1, y1 = math.ceil((xs.max() + 1) * fx), math.ceil((ys.max() + 1) * fy)
    return max(0, x0), max(0, y0), min(w, x1), min(h, y1)


def query_pid_from_name(name: str | None) -> int | None:
    """The person id in a Market-1501 style file name (``0101_c1s1_001207_00.jpg`` → 101), else
    None (then the strip shows no ✓/✗)."""
    try:
        return parse_reid_name(pathlib.Path(name or "").name, MARKET_PATTERN)[0]
    except ValueError:
        return None


def _fmt(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "(" + ", ".join(_fmt(x) for x in v) + ")"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def camera_markdown(res: dict[str, Any]) -> str:
    """The camera / light / mesh readout of a reconstruct result (a Markdown table)."""
    cam = res.get("camera") or {}
    units = {"azimuth": "°", "elevation": "°"}
    rows = [f"| {k} | {_fmt(v)}{units.get(k, '')} |" for k, v in cam.items()]
    light = res.get("light")
    if light is not None:
        rows.append(f"| light (SH, 9) | {' '.join(f'{x:+.2f}' for x in light)} |")
    rows.append(f"| mesh | {res.get('num_vertices', '?')} vertices, "
                f"{res.get('num_faces', '?')} faces |")
    extra = [f"mask: {res.get('mask_source', '?')}"]
    if "mask_fraction" in res:
        extra[0] += f" ({100 * float(res['mask_fraction']):.0f} % of the image)"
    if res.get("refine_steps"):
        extra.append(f"refined {res['refine_steps']} steps")
    if "seconds" in res:
        extra.append(f"{1000 * float(res['seconds']):.0f} ms")
    rows.append(f"| request | {', '.join(extra)} |")
    return "**Predicted camera and light**\n\n| quantity | value |\n|---|---|\n" + "\n".join(rows)


def caption(row: dict[str, Any]) -> str:
    """A gallery strip caption: ``#rank score pid cam ✓/✗`` (no mark when the id is unknown)."""
    mark = {True: " ✓", False: " ✗"}.get(row.get("match"), "")
    cam = row.get("camid")
    cam = "?" if cam is None else int(cam) + 1  # 0-based camid, shown as the file name's c<N>
    return f"#{row['rank']} {float(row['score']):.3f} pid {row['pid']} cam {cam}{mark}"


def search_markdown(res: dict[str, Any], query_pid: int | None) -> str:
    """One line above the strip: how many results, and how many are the query's person."""
    rows = res.get("rows") or []
    parts = [f"**Top {len(rows)}** of the gallery"]
    if res.get("kind") == "points":
        parts.append(f"query lifted to {res.get('num_points', '?')} points "
                     f"({res.get('lift_mode') or '?'}, mask: {res.get('mask_source', '?')})")
    if query_pid is not None:
        hits = sum(1 for r in rows if r.get("match"))
        parts.append(f"query pid {query_pid}: {hits} of {len(rows)} ✓")
    if "seconds" in res:
        parts.append(f"{1000 * float(res['seconds']):.0f} ms")
    return " · ".join(parts)


# ----------------------------------------------------------------------------------------------
# The page


def _limits(api: Any) -> UploadLimits:
    limits = getattr(api, "limits", None)
    return limits if isinstance(limits, UploadLimits) else UploadLimits()


def _read_upload(path: str | None, api: Any, what: str = "image") -> np.ndarray:
    """An uploaded file (Gradio's temporary copy) decoded with the REST API's checks."""
    if not path:
        raise InputError(f"{what}: upload a photo first")
    limits = _limits(api)
    with open(path, "rb") as f:
        data = f.read(limits.max_bytes + 1)
    return decode_upload(data, what, limits)


def _to_gr_error(e: BaseException) -> gr.Error:
    if not isinstance(e, (ValueError, KeyError)):
        log.exception("demo page: request failed")
    return gr.Error(one_line(e), print_exception=False)


_MASK_HELP = {
    "estimate": "the automatic estimate (GrabCut from a centred box)",
    "box": "GrabCut in your box",
    "upload": "your mask",
}


def status_markdown(res: dict[str, Any], box: Any = None) -> str:
    """The line above the viewer: where the mask came from and how to correct it."""
    src = res.get("mask_source", "?")
    what = _MASK_HELP.get(src, src)
    if src == "box" and box is not None:
        what += f" {tuple(box) if not isinstance(box, str) else box}"
    frac = res.get("mask_fraction")
    cover = f", {100 * float(frac):.0f} % of the photo" if frac is not None else ""
    return (f"**Mask:** {what}{cover}. Wrong? Paint or erase it in the editor, or scribble around "
            f"the person in blue and press *GrabCut in box*.")


def build_ui(api: Any, title: str = "mirror3d — people in 3D") -> gr.Blocks:
    """The demo page over ``api`` (see the module docstring for the methods it calls).

    Returns:
        A ``gr.Blocks``; serve it with :func:`mount_ui` (or ``blocks.launch(css=UI_CSS)``).
    """
    opts = getattr(api, "opts", None)
    max_steps = int(getattr(opts, "max_refine_steps", 0) or getattr(api, "max_refine_steps", 0)
                    or 0)
    max_k = int(getattr(opts, "max_k", 0) or getattr(api, "max_k", 0) or 50)
    top_k = min(max_k, int(getattr(opts, "top_k", 0) or getattr(api, "top_k", 0) or 10))

    async def _reconstruct(image, mask, box, steps):
        try:
            res = await api.reconstruct(image, mask, box, int(steps or 0))
        except Exception as e:  # noqa: BLE001 - shown to the user in one line
            raise _to_gr_error(e) from None
        used = res.get("mask")
        editor = editor_value(image, used) if used is not None else gr.update()
        try:
            side = await api.novel_view(res["id"], NOVEL_AZIMUTH)
        except Exception:
            log.exception("demo page: novel view failed")
            side = None
        return (res.get("id"), editor, res.get("glb_path"), res.get("input_view"),
                res.get("turntable_gif_path"), camera_markdown(res),
                gr.update(value=NOVEL_AZIMUTH), side, status_markdown(res, box))

    def _need_image(image):
        if image is None:
            raise gr.Error("image: upload a photo first", print_exception=False)

    async def on_upload(path, steps):
        if not path:
            return (None,) + (gr.update(),) * 9
        try:
            image = _read_upload(path, api)
        except Exception as e:  # noqa: BLE001 - shown to the user in one line
            raise _to_gr_error(e) from None
        return (image,) + await _reconstruct(image, None, None, steps)

    async def on_mask(image, editor, steps):
        _need_image(image)
        mask = editor_mask(editor, image.shape[:2])
        if mask is None:
            raise gr.Error("mask: the editor holds no mask; upload the photo again",
                           print_exception=False)
        return (image,) + await _reconstruct(image, mask, None, steps)

    async def on_box(image, editor, box_text, steps):
        _need_image(image)
        box: Any = (box_text or "").strip() or editor_box(editor, image.shape[:2])
        if box is None:
            raise gr.Error("box: scribble around the person in blue, or type x0,y0,x1,y1",
                           print_exception=False)
        return (image,) + await _reconstruct(image, None, box, steps)

    async def on_estimate(image, steps):
        _need_image(image)
        return (image,) + await _reconstruct(image, None, None, steps)

    async def on_azimuth(rid, azimuth):
        if not rid:
            return None
        try:
            return await api.novel_view(rid, float(azimuth))
        except Exception as e:  # noqa: BLE001 - shown to the user in one line
            raise _to_gr_error(e) from None

    async def on_search(path, k):
        if not path:
            return gr.update(), gr.update()
        try:
            image = _read_upload(path, api, "query")
            pid = query_pid_from_name(path)
            res = await api.search(image, None, None, int(k), pid)
        except Exception as e:  # noqa: BLE001 - shown to the user in one line
            raise _to_gr_error(e) from None
        items = [(row["thumbnail"], caption(row)) for row in res.get("rows", [])]
        return items, search_markdown(res, pid)

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f"# {title}\nOne photo of a person → a textured 3D mesh (CASL); a query "
                    "photo → the same person in the gallery (re-id on 2D→3D lifted point "
                    "clouds).", elem_id="m3d-title")
        with gr.Tabs():
            with gr.Tab("Reconstruct", id="reconstruct"):
                image_state = gr.State(None)
                rid_state = gr.State(None)
                with gr.Row(equal_height=False):
                    with gr.Column(scale=3, min_width=240):
                        photo = gr.Image(label="Photo of a person", type="filepath",
                                         sources=["upload", "clipboard"], height=300,
                                         elem_id="m3d-photo")
                        steps = gr.Slider(0, max(1, max_steps), value=0,
                                          step=10 if max_steps >= 10 else 1,
                                          label="Test-time refinement steps",
                                          info="0: one forward pass" if max_steps else
                                          "not offered by this server",
                                          interactive=max_steps > 0)
                        box_text = gr.Textbox(label="Box x0,y0,x1,y1 (photo pixels)",
                                              placeholder="empty: the blue scribbles",
                                              max_lines=1)
                        mask_btn = gr.Button("Reconstruct with this mask", variant="primary",
                                             size="sm")
                        with gr.Row():
                            box_btn = gr.Button("GrabCut in box", size="sm")
                            est_btn = gr.Button("Automatic mask", size="sm")
                    with gr.Column(scale=3, min_width=240):
                        editor = gr.ImageEditor(
                            label="Mask", type="numpy", image_mode="RGBA", sources=[],
                            transforms=(), layers=False, height=520,
                            brush=gr.Brush(colors=[MASK_COLOR, BOX_COLOR], color_mode="fixed"),
                            eraser=gr.Eraser(), elem_id="m3d-editor")
                        gr.Markdown("Paint **magenta** to add to the mask, erase to remove, then "
                                    "*Reconstruct with this mask*. Or scribble around the person "
                                    "in **blue** (or type a box) and press *GrabCut in box*.",
                                    elem_classes="m3d-help")
                    with gr.Column(scale=6, min_width=380):
                        status = gr.Markdown("Upload a photo to start.", elem_id="m3d-status")
                        viewer = gr.Model3D(label="Mesh (GLB): drag to turn, scroll to zoom",
                                            height=380, clear_color=(0.97, 0.97, 0.98, 1.0),
                                            elem_id="m3d-viewer")
                        with gr.Row(equal_height=True):
                            input_view = gr.Image(label="Input view",
                                                  type="numpy", height=200, format="png",
                                                  interactive=False, elem_id="m3d-input-view",
                                                  elem_classes="m3d-render")
                            turntable = gr.Image(label="Turntable", type="filepath", height=200,
                                                 interactive=False, elem_id="m3d-turntable",
                                                 elem_classes="m3d-render")
                            novel = gr.Image(label="Novel view", type="numpy", height=200,
                                             format="png", interactive=False,
                                             elem_id="m3d-novel", elem_classes="m3d-render")
                        azimuth = gr.Slider(-180, 180, value=NOVEL_AZIMUTH, step=15,
                                            label="Novel view: azimuth from the photo's "
                                                  "camera (°)",
                                            elem_id="m3d-azimuth")
                        readout = gr.Markdown("", elem_id="m3d-readout")
                outs = [image_state, rid_state, editor, viewer, input_view, turntable, readout,
                        azimuth, novel, status]
                photo.upload(on_upload, [photo, steps], outs)
                mask_btn.click(on_mask, [image_state, editor, steps], outs)
                box_btn.click(on_box, [image_state, editor, box_text, steps], outs)
                est_btn.click(on_estimate, [image_state, steps], outs)
                azimuth.release(on_azimuth, [rid_state, azimuth], novel,
                                show_progress="minimal")

            with gr.Tab("Search", id="search"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=2, min_width=220):
                        query = gr.Image(label="Query photo", type="filepath",
                                         sources=["upload", "clipboard"], height=300,
                                         elem_id="m3d-query")
                        k = gr.Slider(1, max_k, value=top_k, step=1, label="k (results)")
                        search_btn = gr.Button("Search", variant="primary", size="sm")
                    with gr.Column(scale=8, min_width=400):
                        search_info = gr.Markdown("Upload a query photo to search the gallery.",
                                                  elem_id="m3d-search-info")
                        strip = gr.Gallery(label="Top-k: #rank score pid cam ✓/✗",
                                           columns=10, height="auto", object_fit="contain",
                                           allow_preview=True, elem_id="m3d-gallery")
                query.upload(on_search, [query, k], [strip, search_info])
                search_btn.click(on_search, [query, k], [strip, search_info])
    return demo


def mount_ui(app: Any, api: Any, path: str = "/ui", **kwargs: Any) -> Any:
    """Mount :func:`build_ui` ``(api)`` on a FastAPI ``app`` at ``path`` with the page's CSS.

    ``kwargs`` go to ``gr.mount_gradio_app`` (``allowed_paths``, ``max_file_size``, ...).
    Returns the FastAPI app.
    """
    kwargs.setdefault("css", UI_CSS)
    kwargs.setdefault("ssr_mode", False)
    return gr.mount_gradio_app(app, build_ui(api), path=path, **kwargs)


def wait_for_mesh(page: Any, timeout_s: float = 120.0) -> None:
    """Wait until the page's 3D viewer (``#m3d-viewer``) shows more than its clear colour: a
    Playwright ``page`` of this UI (software WebGL takes a few seconds to load and draw the GLB).
    Used by the browser test and the README screenshots.

    Raises:
        TimeoutError: nothing drawn within ``timeout_s``.
    """
    import io
    import time

    canvas = page.locator("#m3d-viewer canvas")
    deadline = time.monotonic() + timeout_s
    while True:
        shot = Image.open(io.BytesIO(page.screenshot(clip=canvas.bounding_box()))).convert("L")
        if np.asarray(shot, np.float32).std() > 8.0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the 3D viewer drew nothing in {timeout_s:.0f} s")
        time.sleep(1.0)
