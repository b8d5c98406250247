"""The demo's reconstruction service (mirror3d/engine/demo_reconstruct.py) on a tiny trained CASL
run (tests/demo_fixtures.py): GLB with UVs and texture, camera readout, views, the cache, bad
input, and the GLB store of the REST API."""

from __future__ import annotations

import io
import json
import os
import uuid

import numpy as np
import pytest
import trimesh
from PIL import Image

from demo_fixtures import demo_runs  # noqa: F401  (session fixture)
from mirror3d.data.masks import load_binary_mask, load_rgb
from mirror3d.engine.demo_inputs import InputError
from mirror3d.engine.demo_reconstruct import MeshStore, ReconstructResult, ReconstructService


@pytest.fixture(scope="module")
def service(demo_runs):  # noqa: F811
    return ReconstructService(demo_runs.casl, turntable_frames=3, max_refine_steps=2,
                              cache_size=2)


@pytest.fixture(scope="module")
def person(demo_runs):  # noqa: F811
    """A query image of the tiny tree (bytes, array) and its Market-HQ mask."""
    path = demo_runs.images("query")[0]
    [mask_file] = (demo_runs.synth / "Market-HQ" / "seg_hmr").rglob(f"{path.name}_*.png")
    return path.read_bytes(), load_rgb(path), load_binary_mask(mask_file)


def test_reconstruct_returns_a_textured_glb_the_camera_and_views(service, person):
    data, image, mask = person
    res = service.reconstruct(data, mask=mask)
    assert isinstance(res, ReconstructResult) and len(res.id) == 32 and res.mask_source == "upload"
    s = res.summary()
    assert json.loads(json.dumps(s)) == s
    assert set(s["camera"]) == {"azimuth", "elevation", "distance", "bias"}
    assert len(s["light"]) == 9 and s["refine_steps"] == 0 and s["num_faces"] == res.num_faces
    assert np.array_equal(res.mask, mask)
    # the GLB: one textured mesh with per-vertex UVs
    scene = trimesh.load(io.BytesIO(res.glb), file_type="glb")
    [mesh] = scene.geometry.values() if hasattr(scene, "geometry") else [scene]
    assert len(mesh.faces) == res.num_faces
    uv = mesh.visual.uv
    assert uv.shape == (len(mesh.vertices), 2) and np.isfinite(uv).all()
    assert np.ptp(uv[:, 0]) > 0.5 and np.ptp(uv[:, 1]) > 0.5  # spread over the texture
    tex = mesh.visual.material.baseColorTexture
    assert tex is not None and min(tex.size) > 1
    # views at the model's size; azimuth 0 of novel_view is the input view
    w, h = service.image_size
    assert res.input_view.shape == (h, w, 3) and res.input_view.dtype == np.uint8
    assert (res.input_view < 250).any()  # something was drawn on the white
    assert np.array_equal(service.novel_view(res.id, 0.0), res.input_view)
    back = service.novel_view(res.id, 180.0, elevation_deg=20.0)
    assert back.shape == (h, w, 3) and not np.array_equal(back, res.input_view)
    assert len(res.turntable) == 3 and all(f.shape == (h, w, 3) for f in res.turntable)
    gif = Image.open(io.BytesIO(service.turntable_gif(res)))
    assert gif.format == "GIF" and gif.n_frames == 3


def test_mask_sources_refinement_and_array_input(service, person):
    data, image, mask = person
    h, w = image.shape[:2]
    box = f"{w // 8},{h // 16},{w - w // 8},{h - h // 16}"
    by_box = service.reconstruct(image, box=box, turntable=False)
    assert by_box.mask_source == "box" and by_box.turntable == []
    assert not by_box.mask[:, : w // 8].any()
    est = service.reconstruct(image, turntable=False)
    assert est.mask_source == "estimate" and est.mask.any()
    refined = service.reconstruct(image, mask=mask, refine_steps=1, turntable=False)
    assert refined.refine_steps == 1
    with pytest.raises(ValueError, match="no frames"):
        service.turntable_gif(est)


def test_novel_view_cache(service, person):
    _, image, mask = person
    a = service.reconstruct(image, mask=mask, turntable=False)
    b = service.reconstruct(image, mask=mask, turntable=False)
    service.novel_view(a.id, 10)  # a is now the most recently used
    c = service.reconstruct(image, mask=mask, turntable=False)  # cache_size 2: b is dropped
    assert service.novel_view(a.id, 0).shape == service.novel_view(c.id, 0).shape
    with pytest.raises(KeyError, match="unknown or expired"):
        service.novel_view(b.id, 0)
    with pytest.raises(KeyError):
        service.novel_view(uuid.uuid4().hex, 0)
    with pytest.raises(InputError, match="finite"):
        service.novel_view(a.id, float("nan"))
    with pytest.raises(InputError, match="elevation"):
        service.novel_view(a.id, 0, elevation_deg=95)


def test_a_view_state_renders_the_same_views_in_another_service(service, person, demo_runs):  # noqa: F811
    """The REST API keeps each result's view state beside its GLB and lets any replica render
    it: a second service on the same run (another replica, empty cache) draws the same pixels
    as the service that made the mesh."""
    data, image, mask = person
    res = service.reconstruct(data, mask=mask, turntable=False)
    other = ReconstructService(demo_runs.casl, turntable_frames=1)
    assert np.array_equal(other.render_state(res.view_state, 0.0), res.input_view)
    assert np.array_equal(other.render_state(res.view_state, 120.0, elevation_deg=-10.0),
                          service.novel_view(res.id, 120.0, elevation_deg=-10.0))
    with pytest.raises(KeyError):
        other.novel_view(res.id, 0.0)  # the cache is per service; the state is not
    # bytes that are not a view state, or arrays of the wrong shapes: one line, no pickle
    z = np.load(io.BytesIO(res.view_state))
    arrays = {k: z[k] for k in z.files}
    arrays["faces"] = arrays["faces"] + arrays["vertices"].shape[0]  # indices past the mesh
    broken = io.BytesIO()
    np.savez(broken, **arrays)
    for state, words in ((b"not npz", "not a reconstruction"), (broken.getvalue(), "wrong shapes")):
        with pytest.raises(InputError, match=words) as ei:
            other.render_state(state, 0.0)
        assert "\n" not in str(ei.value)
    with pytest.raises(InputError, match="elevation"):
        other.render_state(res.view_state, 0.0, elevation_deg=90.5)


def test_bad_input_is_an_input_error_and_the_service_keeps_working(service, person):
    data, image, mask = person
    h, w = image.shape[:2]
    cases = [
        (dict(image=b"not an image"), 400, "not an image"),
        (dict(image=data[: len(data) // 2]), 400, "truncated"),
        (dict(image=data, mask=np.zeros((h, w), bool)), 400, "mask: empty"),
        (dict(image=data, mask=np.ones((h + 1, w), bool)), 400, f"image is {w}x{h}"),
        (dict(image=data, box="0,0,1"), 400, "box"),
        (dict(image=data, mask=mask, refine_steps=3), 400, "refine_steps"),
        (dict(image=data, mask=mask, refine_steps=-1), 400, "refine_steps"),
        (dict(image=np.zeros((h, w), np.uint8)), 400, "(H, W, 3)"),
    ]
    for kwargs, status, words in cases:
        with pytest.raises(InputError) as ei:
            service.reconstruct(**kwargs)
        assert ei.value.status == status and words in str(ei.value), kwargs.keys()
        assert "\n" not in str(ei.value)
    # a mask of 1 pixel vanishes at the model's input size: CASL's MaskError → InputError
    big = np.asarray(Image.fromarray(image).resize((w * 8, h * 8)))
    one = np.zeros((h * 8, w * 8), bool)
    one[h * 4, w * 4] = True  # nearest downscaling by 8 samples rows / columns 8k + 4
    with pytest.raises(InputError, match="no foreground pixel left"):
        service.reconstruct(big, mask=one, turntable=False)
    assert service.reconstruct(data, mask=mask, turntable=False).num_faces > 0


def test_mesh_store(tmp_path):
    store = MeshStore(tmp_path / "meshes", max_items=2)
    ids = [uuid.uuid4().hex for _ in range(3)]
    p0 = store.put(ids[0], b"glb0")
    assert p0 == store.path(ids[0]) and store.get(ids[0]) == b"glb0" and ids[0] in store
    store.put(ids[1], b"glb1")
    store.put(ids[2], b"glb2")  # the oldest (ids[0]) goes
    assert len(store) == 2 and ids[0] not in store
    with pytest.raises(KeyError, match="not found"):
        store.path(ids[0])
    assert store.get(ids[2]) == b"glb2"
    for bad in ["../x", "../" + ids[1], ids[1].upper(), ids[1] + ".glb", "", "x" * 32,
                ids[1][:31], "/etc/passwd", None]:
        with pytest.raises(KeyError):
            store.path(bad)
        with pytest.raises(KeyError):
            store.put(bad, b"x")
    assert sorted(os.listdir(tmp_path / "meshes")) == sorted(f"{i}.glb" for i in ids[1:])
    # another store on the same folder (another replica) sees and evicts the same files
    other = MeshStore(tmp_path / "meshes", max_items=2)
    other.put(uuid.uuid4().hex, b"glb3")
    assert ids[1] not in store and ids[2] in store
    with pytest.raises(ValueError, match="max_items"):
        MeshStore(tmp_path / "m2", max_items=0)
    # other kinds of files by id (turntables, view states): their own suffix, same rules
    gifs = MeshStore(tmp_path / "meshes", max_items=1, suffix=".gif")
    gifs.put(ids[2], b"gif")
    assert (tmp_path / "meshes" / f"{ids[2]}.gif").is_file() and ids[2] in store  # .glb kept
    for bad in ("gif", "../x", ".G IF"):
        with pytest.raises(ValueError, match="suffix"):
            MeshStore(tmp_path / "m3", suffix=bad)
