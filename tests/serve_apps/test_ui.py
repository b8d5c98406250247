"""The demo page without a browser (mirror3d/serve_apps/ui.py, local_api.py): the mask ↔ image
editor round trip, the box from blue scribbles, captions and readouts, errors as one-line
``gr.Error``, and the in-process api over the tiny runs of conftest.py."""

from __future__ import annotations

import asyncio
import pathlib

import gradio as gr
import httpx
import numpy as np
import pytest
from PIL import Image

import dataset_fixtures
from mirror3d.engine.demo_inputs import InputError
from mirror3d.serve_apps import ui
from mirror3d.serve_apps.local_api import LocalDemoApi, LocalServer


def _person(seed: int = 1):
    return dataset_fixtures.person_pair(64, 128, (0.4, 0.8), seed=seed)


def test_editor_round_trip_keeps_the_mask():
    image, mask = _person()
    value = ui.editor_value(image, mask)
    s = ui.EDITOR_HEIGHT // 128
    assert value["background"].shape == (128 * s, 64 * s, 3)
    assert value["layers"][0].shape == (128 * s, 64 * s, 4)
    assert value["composite"].shape == value["background"].shape
    np.testing.assert_array_equal(ui.editor_mask(value, mask.shape), mask)
    assert ui.editor_box(value, mask.shape) is None


def test_editor_mask_and_box_from_strokes():
    """A magenta stroke adds to the mask, erased pixels leave it, blue scribbles give the box
    (in photo pixels) and are not mask; a layer of another size is scaled to the photo."""
    h, w = 20, 10
    layer = np.zeros((2 * h, 2 * w, 4), np.uint8)  # the editor at 2x
    layer[0:10, 0:6] = (236, 72, 153, 255)         # mask: photo rows 0..4, cols 0..2
    layer[20:30, 4:16] = (37, 99, 235, 255)       # box scribble: photo rows 10..14, cols 2..7
    value = {"background": None, "layers": [layer], "composite": None}
    m = ui.editor_mask(value, (h, w))
    expected = np.zeros((h, w), bool)
    expected[0:5, 0:3] = True
    np.testing.assert_array_equal(m, expected)
    assert ui.editor_box(value, (h, w)) == (2, 10, 8, 15)
    assert ui.editor_mask(None, (h, w)) is None
    assert ui.editor_mask({"layers": []}, (h, w)) is None


def test_captions_readouts_and_names():
    row = {"rank": 1, "score": 0.87312, "pid": 101, "camid": 1, "match": True}
    assert ui.caption(row) == "#1 0.873 pid 101 cam 2 ✓"
    assert ui.caption({**row, "match": False}).endswith(" ✗")
    assert ui.caption({**row, "match": None}) == "#1 0.873 pid 101 cam 2"
    assert ui.query_pid_from_name("/tmp/x/0101_c1s1_001207_00.jpg") == 101
    assert ui.query_pid_from_name("holiday.jpg") is None
    res = {"camera": {"azimuth": 12.0, "elevation": -3.0, "distance": 2.7, "bias": [0.1, -0.2]},
           "light": [0.5] * 9, "num_vertices": 642, "num_faces": 1280, "mask_source": "box",
           "mask_fraction": 0.25, "seconds": 0.2}
    text = ui.camera_markdown(res)
    for part in ("azimuth | 12.000°", "(0.100, -0.200)", "642 vertices", "mask: box (25 %"):
        assert part in text
    assert "GrabCut in your box" in ui.status_markdown(res, (1, 2, 3, 4))
    assert ui.one_line(KeyError("id: no recent\nreconstruction")) == "id: no recent reconstruction"


class _FailingApi:
    def __init__(self, tmp: pathlib.Path):
        self.root = tmp

    async def reconstruct(self, image, mask=None, box=None, refine_steps=0, turntable=True):
        raise InputError("mask: empty (no foreground pixel) after GrabCut from the box; draw it")

    async def novel_view(self, id, azimuth, elevation=None):
        raise KeyError("id: no recent reconstruction 'x'; reconstruct again")

    async def search(self, image, mask=None, box=None, k=None, query_pid=None, thumbnails=True):
        raise AssertionError("not called")


def _handler(blocks: gr.Blocks, name: str):
    return next(f.fn for f in blocks.fns.values() if f.name == name)


def _page_error(coro) -> str:
    """The message a handler shows in the page's error toast."""
    with pytest.raises(gr.Error) as e:
        asyncio.run(coro)
    return e.value.message


def test_errors_reach_the_page_as_one_line(tmp_path):
    blocks = ui.build_ui(_FailingApi(tmp_path))
    image, _ = _person()
    assert _page_error(_handler(blocks, "on_estimate")(image, 0)) == (
        "mask: empty (no foreground pixel) after GrabCut from the box; draw it")
    assert _page_error(_handler(blocks, "on_azimuth")("x", 90)) == (
        "id: no recent reconstruction 'x'; reconstruct again")
    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tiny)
    assert _page_error(_handler(blocks, "on_upload")(str(tiny), 0)) == (
        "image: 8x8 pixels, smaller than the 16-pixel minimum side (min_side)")
    assert _page_error(_handler(blocks, "on_mask")(None, None, 0)) == (
        "image: upload a photo first")


def test_local_api_over_the_tiny_runs(demo_runs, tmp_path):
    """Reconstruct → GLB + GIF files, the mask, a novel view; search → k rows with thumbnails;
    the page's upload handler fills every output; the page is served over loopback."""
    api = LocalDemoApi.from_runs(demo_runs.casl, demo_runs.reid, root=tmp_path / "files", top_k=3)
    image, mask = _person()
    res = asyncio.run(api.reconstruct(image, mask, None, 0))
    assert res["mask_source"] == "upload" and res["mask"].shape == mask.shape
    assert pathlib.Path(res["glb_path"]).read_bytes()[:4] == b"glTF"
    assert pathlib.Path(res["turntable_gif_path"]).suffix == ".gif"
    assert Image.open(res["turntable_gif_path"]).format == "GIF"
    view = asyncio.run(api.novel_view(res["id"], 90))
    assert view.ndim == 3 and view.dtype == np.uint8
    with pytest.raises(KeyError, match="no recent reconstruction"):
        asyncio.run(api.novel_view("0" * 32, 0))
    found = asyncio.run(api.search(image, k=3, query_pid=3))
    assert [r["rank"] for r in found["rows"]] == [1, 2, 3]
    assert all(r["thumbnail"].ndim == 3 for r in found["rows"])
    with pytest.raises(InputError, match="k: expected"):
        asyncio.run(api.search(image, k=0))

    blocks = ui.build_ui(api)
    photo = tmp_path / "0003_c1s1_000001_00.png"
    Image.fromarray(image).save(photo)
    out = asyncio.run(_handler(blocks, "on_upload")(str(photo), 0))
    img, rid, editor, glb, view, gif, readout, _, side, status = out
    assert img.shape == image.shape and rid and glb.endswith(".glb") and gif.endswith(".gif")
    assert editor["layers"][0].shape[2] == 4 and "azimuth" in readout and side is not None
    assert "automatic estimate" in status
    strip, info = asyncio.run(_handler(blocks, "on_search")(str(photo), 3))
    assert len(strip) == 3 and strip[0][1].startswith("#1 ") and "query pid 3" in info

    with LocalServer(api) as url:
        page = httpx.get(f"{url}/ui/", timeout=30)
    assert page.status_code == 200 and "mirror3d" in page.text
