"""Round trips of mirror3d.render.mesh_io on the CASL icosphere with seam-split per-corner UVs.

The texture is asymmetric (top half red, bottom half blue, one marker pixel) and the files are
also read back without trimesh (OBJ text, GLB chunks), so a flipped v would be caught.
"""

import io
import json
import math
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from mirror3d.render.mesh_io import MeshData, export_mesh, load_mesh, split_uv_seams
from mirror3d.render.sphere import ico_sphere


def _sphere_with_uvs():
    """642-vertex icosphere, UVs u = 0.5 + asin(x/r)/pi, v = (0.25 + atan2(y, z)/2pi) mod 1 per corner.

    Faces straddling the v seam get v + 1 on their low corners (as the template does), so seam
    vertices carry different UVs in different faces.
    """
    v, f = ico_sphere(3, dtype=torch.float64)
    corners = v[f]  # (F, 3, 3)
    r = corners.norm(dim=-1)
    u = 0.5 + torch.asin((corners[..., 0] / r).clamp(-1, 1)) / math.pi
    vv = torch.remainder(0.25 + torch.atan2(corners[..., 1], corners[..., 2]) / (2 * math.pi), 1.0)
    straddle = (vv.max(dim=1).values - vv.min(dim=1).values) > 0.5
    vv = torch.where(straddle[:, None] & (vv < 0.5), vv + 1.0, vv)
    return v.float(), f, torch.stack([u, vv], dim=-1).float()


def _texture():
    tex = np.zeros((16, 8, 3), np.uint8)
    tex[:8] = (255, 0, 0)  # top half red: v in (0.5, 1]
    tex[8:] = (0, 0, 255)  # bottom half blue
    tex[12, 5] = (10, 200, 30)  # marker (bottom half)
    return tex


def _sample_nearest(tex_hw3: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Nearest-texel lookup with v up (row 0 is v = 1), v wrapped into [0, 1)."""
    h, w = tex_hw3.shape[:2]
    col = np.clip((uv[:, 0] * w).astype(int), 0, w - 1)
    row = np.clip(((1.0 - np.mod(uv[:, 1], 1.0)) * h).astype(int), 0, h - 1)
    return tex_hw3[row, col]


def _as_uint8(texture: torch.Tensor) -> np.ndarray:
    return np.round(texture.numpy().transpose(1, 2, 0) * 255).astype(np.uint8)


def test_split_uv_seams_keeps_originals_first():
    v, f, uv = _sphere_with_uvs()
    src, vert_uv, new_faces = split_uv_seams(f.numpy(), uv.numpy(), 642)
    assert len(src) > 642  # the seam and the poles are split
    assert np.array_equal(src[:642], np.arange(642))
    # every corner keeps its position and its own uv
    assert np.array_equal(src[new_faces], f.numpy())
    assert np.allclose(vert_uv[new_faces], uv.numpy(), atol=0)
    # one output vertex per distinct (vertex, uv) pair
    pairs = {(a, float(b[0]), float(b[1])) for a, b in zip(f.reshape(-1).tolist(), uv.reshape(-1, 2).numpy())}
    assert len(src) == len(pairs)


@pytest.mark.parametrize("suffix", [".obj", ".glb"])
def test_textured_round_trip(tmp_path, suffix):
    v, f, uv = _sphere_with_uvs()
    tex = _texture()
    path = export_mesh(tmp_path / f"sphere{suffix}", v, f, uv, tex)
    md = load_mesh(path)
    assert isinstance(md, MeshData)
    assert md.faces.shape == f.shape and md.faces.dtype == torch.int64
    # seams merged back: the original vertices, order and faces
    assert md.verts.shape == (642, 3) and torch.equal(md.faces, f)
    assert torch.allclose(md.verts[md.faces], v[f], atol=1e-5)
    assert torch.allclose(md.face_uvs, uv, atol=1e-5)
    assert md.texture.shape == (3, 16, 8) and md.texture.dtype == torch.float32
    assert np.array_equal(_as_uint8(md.texture), tex)
    # colours looked up with the reloaded UVs and texture equal the original lookup, and a
    # corner in the upper half of the texture (v > 0.5) reads red
    c_new = _sample_nearest(_as_uint8(md.texture), md.face_uvs.reshape(-1, 2).numpy())
    c_old = _sample_nearest(tex, uv.reshape(-1, 2).numpy())
    assert np.array_equal(c_new, c_old)
    upper = (np.mod(uv.reshape(-1, 2).numpy()[:, 1], 1.0) > 0.55)
    assert upper.any() and (c_new[upper] == (255, 0, 0)).all()
    # without merging, the split vertices stay split but per-corner data is the same
    raw = load_mesh(path, merge_seams=False)
    assert raw.verts.shape[0] > 642
    assert torch.allclose(raw.verts[raw.faces], v[f], atol=1e-5)
    assert torch.allclose(raw.face_uvs, uv, atol=1e-5)


def test_obj_files_store_v_up_and_reference_vts(tmp_path):
    v, f, uv = _sphere_with_uvs()
    export_mesh(tmp_path / "m.obj", v, f, uv, torch.from_numpy(_texture().transpose(2, 0, 1) / 255.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mtl", "m.obj", "m.png"]
    text = (tmp_path / "m.obj").read_text()
    assert "mtllib m.mtl" in text
    assert "map_Kd m.png" in (tmp_path / "m.mtl").read_text()
    pos = np.array([[float(t) for t in ln.split()[1:4]] for ln in text.splitlines() if ln.startswith("v ")])
    vts = np.array([[float(t) for t in ln.split()[1:3]] for ln in text.splitlines() if ln.startswith("vt ")])
    fv, ft = [], []
    for ln in text.splitlines():
        if ln.startswith("f "):
            refs = [c.split("/") for c in ln.split()[1:]]
            fv.append([int(r[0]) - 1 for r in refs])
            ft.append([int(r[1]) - 1 for r in refs])
    fv, ft = np.array(fv), np.array(ft)
    assert np.allclose(pos[fv], v[f].numpy(), atol=1e-6)
    assert np.allclose(vts[ft], uv.numpy(), atol=1e-6)  # OBJ is v-up like us: no flip
    png = np.asarray(Image.open(tmp_path / "m.png").convert("RGB"))
    assert np.array_equal(png, _texture())  # float texture quantised losslessly


def _read_glb(path):
    data = path.read_bytes()
    magic, _, _ = struct.unpack_from("<4sII", data, 0)
    assert magic == b"glTF"
    off, chunks = 12, {}
    while off < len(data):
        length, kind = struct.unpack_from("<I4s", data, off)
        chunks[kind] = data[off + 8 : off + 8 + length]
        off += 8 + length
    return json.loads(chunks[b"JSON"]), chunks[b"BIN\x00"]


def _accessor(gltf, binary, index):
    acc = gltf["accessors"][index]
    view = gltf["bufferViews"][acc["bufferView"]]
    dtype = {5126: np.float32, 5125: np.uint32, 5123: np.uint16}[acc["componentType"]]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3}[acc["type"]]
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    return np.frombuffer(binary, dtype=dtype, count=acc["count"] * width, offset=start).reshape(acc["count"], width)


def test_glb_stores_gltf_v_down_and_embeds_the_texture(tmp_path):
    v, f, uv = _sphere_with_uvs()
    tex = _texture()
    export_mesh(tmp_path / "m.glb", v.numpy(), f.numpy(), uv.numpy(), tex)
    assert [p.name for p in tmp_path.iterdir()] == ["m.glb"]
    gltf, binary = _read_glb(tmp_path / "m.glb")
    prim = gltf["meshes"][0]["primitives"][0]
    idx = _accessor(gltf, binary, prim["indices"]).reshape(-1, 3).astype(np.int64)
    pos = _accessor(gltf, binary, prim["attributes"]["POSITION"])
    tc = _accessor(gltf, binary, prim["attributes"]["TEXCOORD_0"])
    assert np.allclose(pos[idx], v[f].numpy(), atol=1e-6)
    # glTF's texture origin is the top-left: v_gltf = 1 - v
    assert np.allclose(tc[idx][..., 0], uv[..., 0].numpy(), atol=1e-6)
    assert np.allclose(tc[idx][..., 1], 1.0 - uv[..., 1].numpy(), atol=1e-6)
    image = gltf["images"][0]
    view = gltf["bufferViews"][image["bufferView"]]
    png = binary[view.get("byteOffset", 0) : view.get("byteOffset", 0) + view["byteLength"]]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), tex)


def test_ply_and_untextured_exports(tmp_path):
    v, f, uv = _sphere_with_uvs()
    md = load_mesh(export_mesh(tmp_path / "m.ply", v, f, uv, _texture()))
    assert md.face_uvs is None and md.texture is None
    assert torch.equal(md.faces, f) and torch.allclose(md.verts, v, atol=1e-6)
    plain = load_mesh(export_mesh(tmp_path / "plain.obj", v, f))
    assert plain.face_uvs is None and plain.texture is None
    assert torch.equal(plain.faces, f) and torch.allclose(plain.verts, v, atol=1e-6)
    uv_only = load_mesh(export_mesh(tmp_path / "uv.glb", v, f, uv))
    assert uv_only.texture is None and torch.allclose(uv_only.face_uvs, uv, atol=1e-5)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.obj"):
        load_mesh(tmp_path / "missing.obj")
    junk = tmp_path / "junk.obj"
    junk.write_text("this is not a mesh\n")
    with pytest.raises(ValueError, match=r"junk\.obj.*expected a mesh file \(\.obj/\.glb/\.ply\)"):
        load_mesh(junk)
    bad_glb = tmp_path / "bad.glb"
    bad_glb.write_bytes(b"\x00\x01garbage")
    with pytest.raises(ValueError, match=r"bad\.glb.*expected a mesh file"):
        load_mesh(bad_glb)
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    with pytest.raises(ValueError, match="expected a mesh file"):
        load_mesh(txt)


def test_export_bad_input_raises_and_writes_nothing(tmp_path):
    v, f, uv = _sphere_with_uvs()
    tex = _texture()
    nan_v = v.clone()
    nan_v[3, 1] = float("nan")
    cases = [
        (dict(path=tmp_path / "a.obj", verts=nan_v, faces=f, face_uvs=uv, texture=tex), "verts"),
        (dict(path=tmp_path / "a.obj", verts=v, faces=f + 1, face_uvs=uv, texture=tex), "faces"),
        (dict(path=tmp_path / "a.glb", verts=v, faces=f.float(), face_uvs=uv, texture=tex), "faces"),
        (dict(path=tmp_path / "a.obj", verts=v, faces=f, face_uvs=uv[:10], texture=tex), "face_uvs"),
        (dict(path=tmp_path / "a.obj", verts=v, faces=f, face_uvs=uv, texture=tex[:, :, :2]), "texture"),
        (dict(path=tmp_path / "a.glb", verts=v, faces=f, face_uvs=uv, texture=torch.rand(16, 8, 3)), "texture"),
        (dict(path=tmp_path / "a.obj", verts=v, faces=f, face_uvs=None, texture=tex), "texture"),
        (dict(path=tmp_path / "a.stl", verts=v, faces=f, face_uvs=uv, texture=tex), "path"),
    ]
    for kwargs, name in cases:
        with pytest.raises(ValueError, match=name):
            export_mesh(**kwargs)
    assert list(tmp_path.iterdir()) == []


def test_export_failure_leaves_no_partial_files(tmp_path, monkeypatch):
    import mirror3d.render.mesh_io as mesh_io

    v, f, uv = _sphere_with_uvs()
    real_replace = mesh_io.os.replace
    calls = []

    def failing_replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # fail after the first file (the texture) was renamed
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(mesh_io.os, "replace", failing_replace)
    with pytest.raises(OSError):
        export_mesh(tmp_path / "m.obj", v, f, uv, _texture())
    assert len(calls) == 2
    assert list(tmp_path.iterdir()) == []  # no temporaries, and the renamed texture removed again
