"""The demo's REST API against a real ``serve.run`` on local Ray (one Serve app for this module,
on 127.0.0.1 with a free port; mirror3d/serve_apps/): reconstruct → JSON + a GLB that trimesh
loads with UVs, a novel view; search → k sorted results whose scores are GalleryIndex's;
/healthz; every bad input → 4xx with one line of JSON and the server still serving; the upload
size cap."""

from __future__ import annotations

import io
import socket
import struct
import zlib

import httpx
import numpy as np
import pytest
import trimesh
from PIL import Image
from ray import serve

import dataset_fixtures
from mirror3d.engine.demo_search import SearchService
from mirror3d.serve_apps.app import APP_NAME, start_demo, stop_demo
from mirror3d.serve_apps.options import DemoOptions

MAX_MB = 0.25  # a small upload cap, so the size tests send little


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _huge_png_header(w: int, h: int) -> bytes:
    """A PNG whose IHDR declares w x h (the pixel cap must refuse it before decoding)."""
    data = bytearray(_png(np.zeros((16, 16, 3), np.uint8)))
    ihdr = struct.pack(">II", w, h) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


@pytest.fixture(scope="module")
def person():
    image, mask = dataset_fixtures.person_pair(64, 128, (0.4, 0.8), seed=1)
    return image, mask


@pytest.fixture(scope="module")
def demo(ray_session, demo_runs, tmp_path_factory):
    opts = DemoOptions(casl=str(demo_runs.casl), reid=str(demo_runs.reid), port=_free_port(),
                       max_upload_mb=MAX_MB, mesh_dir=str(tmp_path_factory.mktemp("meshes")),
                       index_dir=str(tmp_path_factory.mktemp("index")), max_k=20, ui=True)
    for replicas in (opts.reconstructor, opts.search):
        replicas.num_cpus = 0.4
        replicas.autoscaling.max_replicas = 1
    url = start_demo(opts)
    with httpx.Client(base_url=url, timeout=120) as client:
        yield client
    stop_demo()


def _files(image: bytes, mask: bytes | None = None, name: str = "person.png") -> dict:
    files = {"image": (name, image, "image/png")}
    if mask is not None:
        files["mask"] = ("mask.png", mask, "image/png")
    return files


def _ok(r: httpx.Response) -> dict:
    assert r.status_code == 200, r.text
    return r.json()


def test_healthz_and_the_page(demo, demo_runs):
    body = _ok(demo.get("/healthz"))
    assert body["status"] == "ok" and body["casl"] == str(demo_runs.casl.resolve())
    assert demo.get("/ui/").status_code == 200
    app = serve.status().applications[APP_NAME]
    assert app.status == "RUNNING"
    assert set(app.deployments) == {"DemoIngress", "Reconstructor", "ReidSearch"}


def test_reconstruct_returns_json_and_a_glb_with_uvs(demo, person):
    image, mask = person
    body = _ok(demo.post("/api/reconstruct", files=_files(_png(image), _png(mask.astype(np.uint8) * 255))))
    assert set(body["camera"]) == {"azimuth", "elevation", "distance", "bias"}
    assert len(body["light"]) == 9 and body["num_vertices"] > 0 and body["num_faces"] > 0
    assert body["mask_source"] == "upload" and body["mesh_url"] == f"/api/meshes/{body['id']}.glb"
    glb = demo.get(body["mesh_url"])
    assert glb.status_code == 200 and glb.headers["content-type"] == "model/gltf-binary"
    scene = trimesh.load(io.BytesIO(glb.content), file_type="glb")
    mesh = next(iter(scene.geometry.values())) if isinstance(scene, trimesh.Scene) else scene
    uv = mesh.visual.uv
    assert uv is not None and uv.shape == (len(mesh.vertices), 2) and np.isfinite(uv).all()
    view = demo.get(f"/api/views/{body['id']}.png", params={"azimuth": 90})
    assert view.status_code == 200 and view.headers["content-type"] == "image/png"
    w, h = body["image_size"]
    assert Image.open(io.BytesIO(view.content)).size == (w, h)
    # a box instead of a mask: GrabCut in the box
    boxed = _ok(demo.post("/api/reconstruct", files=_files(_png(image)),
                          data={"box": "16,8,48,120"}))
    assert boxed["mask_source"] == "box" and boxed["id"] != body["id"]


def test_search_returns_k_sorted_results_scored_like_gallery_index(demo, demo_runs, person,
                                                                    tmp_path):
    image, _ = person
    name = "0003_c1s1_000100_00.png"  # a Market-1501 name: the query's pid is 3
    body = _ok(demo.post("/api/search", files=_files(_png(image), name=name), data={"k": "4"}))
    rows = body["rows"]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4] and body["query_pid"] == 3
    scores = np.array([r["score"] for r in rows])
    assert (np.diff(scores) <= 1e-6).all()
    assert all(r["match"] == (r["pid"] == 3) for r in rows)
    # the same query embedded in this process, searched in a GalleryIndex built afresh
    svc = SearchService(demo_runs.reid, index_dir=tmp_path)
    feat, _ = svc.embed(image)
    expected, _ = svc.index.search(feat[None], 4)
    np.testing.assert_allclose(scores, expected[0], atol=1e-5)
    all_scores, all_idx = svc.index.search(feat[None], len(svc.index))
    by_index = dict(zip(all_idx[0].tolist(), all_scores[0].tolist()))
    assert all(abs(by_index[r["index"]] - r["score"]) < 1e-5 for r in rows)


def _bad_inputs(image: np.ndarray):
    good = _png(image)
    jpeg = io.BytesIO()
    Image.fromarray(image).save(jpeg, format="JPEG")
    h, w = image.shape[:2]
    return [
        ("not an image", "/api/reconstruct", _files(b"hello, not an image"), {}, 400, "image"),
        ("truncated jpeg", "/api/reconstruct", _files(jpeg.getvalue()[:400], name="p.jpg"), {}, 400, "image"),
        ("1x1 image", "/api/reconstruct", _files(_png(image[:1, :1])), {}, 400, "image"),
        ("10000x10000", "/api/reconstruct", _files(_huge_png_header(10_000, 10_000)), {}, 413, "image"),
        ("empty mask", "/api/reconstruct", _files(good, _png(np.zeros((h, w), np.uint8))), {}, 400, "mask"),
        ("mask of the wrong size", "/api/reconstruct",
         _files(good, _png(np.full((h // 2, w), 255, np.uint8))), {}, 400, "mask"),
        ("bad box", "/api/reconstruct", _files(good), {"box": "40,8,20,120"}, 400, "box"),
        ("bad refine_steps", "/api/reconstruct", _files(good), {"refine_steps": "-1"}, 400, "refine_steps"),
        ("no image", "/api/reconstruct", None, {"box": "1,1,5,5"}, 400, "image"),
        ("search: not an image", "/api/search", _files(b"GIF89a..."), {}, 400, "image"),
        ("search: k 0", "/api/search", _files(good), {"k": "0"}, 400, "k"),
        ("search: k too large", "/api/search", _files(good), {"k": "21"}, 400, "k"),
        ("one file over the cap", "/api/reconstruct",
         _files(b"\x89PNG" + bytes(int(MAX_MB * 2**20) + 10)), {}, 413, "image"),
    ]


def test_bad_inputs_are_4xx_with_one_line_of_json_and_the_server_keeps_serving(demo, person):
    image, _ = person
    for what, path, files, data, status, word in _bad_inputs(image):
        r = demo.post(path, files=files, data=data)
        assert r.status_code == status, (what, r.status_code, r.text)
        body = r.json()
        assert set(body) == {"error"}, (what, body)
        assert word in body["error"] and "\n" not in body["error"], (what, body)
    for path in ("/api/meshes/0123456789abcdef0123456789abcdef.glb", "/api/meshes/..%2Fsecret.glb",
                 "/api/views/0123456789abcdef0123456789abcdef.png", "/nope"):
        r = demo.get(path)
        assert r.status_code == 404 and set(r.json()) == {"error"}, (path, r.text)
    # a request body over the cap (two uploads + 1 MiB of framing) is refused from its length,
    # before any parsing
    big = bytes(2 * int(MAX_MB * 2**20) + 2**21)
    r = demo.post("/api/search", files=_files(big))
    assert r.status_code == 413 and "request body larger than" in r.json()["error"]
    # still serving
    assert _ok(demo.get("/healthz"))["status"] == "ok"
    assert len(_ok(demo.post("/api/search", files=_files(_png(image)), data={"k": "2"}))["rows"]) == 2
