"""CASL pictures: what each picture shows is checked against direct renders of the model
(an untrained small model is enough: the pictures are functions of its predictions)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from mirror3d.models.casl import viz
from mirror3d.models.casl.step import build_model
from mirror3d.render.mesh_io import export_mesh, load_mesh


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model, _ = build_model({"data": {"image_size": [32, 64]}})  # the smoke preset's size
    model.eval()
    w, h = model.image_size
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 4, h, w, generator=g)
    x[:, 3] = 0
    for k in range(3):
        x[k, 3, 8 + 2 * k:h - 8, 6:w - 6 - 2 * k] = 1
        x[k, :3] *= torch.tensor([1.0, 0.3 + 0.3 * k, 0.2])[:, None, None]
    with torch.no_grad():
        attrs = model.encode(x)
    return model, x, attrs


def _frames(path):
    return [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(Image.open(path))]


def test_helpers():
    t = torch.zeros(3, 2, 2)
    t[0, 0, 0] = 1.0
    t[1, 1, 1] = 0.5
    u = viz.to_uint8(t)
    assert u.shape == (2, 2, 3) and u.dtype == np.uint8
    assert u[0, 0].tolist() == [255, 0, 0] and u[1, 1].tolist() == [0, 128, 0]
    assert viz.safe_name("/a/b/0001_c1s1_001000_01.jpg.png") == "0001_c1s1_001000_01"
    assert viz.safe_name("x y?.png") == "x_y"
    assert viz.chosen_indices(3, 6) == [0, 1, 2]
    assert viz.chosen_indices(10, 3) == [0, 4, 9]
    assert viz.chosen_indices(0, 3) == []
    assert viz.TURNTABLE_AZIMUTHS[0] == -180 and viz.TURNTABLE_AZIMUTHS[-1] == 170
    assert len(viz.TURNTABLE_AZIMUTHS) == 36


def test_reconstruction_grid_cells(setup, tmp_path):
    model, x, attrs = setup
    w, h = model.image_size
    p = viz.reconstruction_grid(tmp_path / "grid.png", model, x, attrs, ["a", "b", "c"], scale=1)
    img = np.asarray(Image.open(p).convert("RGB"))
    # layout: label column 64 px, header 14 px, pad 2; rows input, on white, recon, +90, -90
    # (H each) and the texture (2H)
    assert img.shape == (14 + 5 * h + 2 * h + 7 * 2, 64 + 3 * w + 4 * 2, 3)
    x0, y_input, y_rec = 64 + 2 + (w + 2), 14 + 2, 14 + 2 + 2 * (h + 2)
    np.testing.assert_array_equal(img[y_input:y_input + h, x0:x0 + w], viz.to_uint8(x[1, :3]))
    rec = model.render(viz.select_attrs(attrs, [1])).rgb[0]
    np.testing.assert_array_equal(img[y_rec:y_rec + h, x0:x0 + w], viz.to_uint8(rec))
    y_tex = 14 + 2 + 5 * (h + 2)
    np.testing.assert_array_equal(img[y_tex:y_tex + 2 * h, x0:x0 + w], viz.to_uint8(attrs.texture[1]))


def test_turntable_frames_are_renders_at_those_azimuths(setup, tmp_path):
    model, x, attrs = setup
    az = float(attrs.azimuth[2])
    (f,) = viz.turntable_frames(model, attrs, 2, azimuths=[az])
    np.testing.assert_array_equal(f, viz.to_uint8(model.render(viz.select_attrs(attrs, [2])).rgb[0]))
    frames = viz.turntable_frames(model, attrs, 2, azimuths=[0.0, 90.0])
    side = model.render(model.with_camera(viz.select_attrs(attrs, [2]), azimuth=90.0)).rgb[0]
    np.testing.assert_array_equal(frames[1], viz.to_uint8(side))
    assert not np.array_equal(frames[0], frames[1])
    paths = viz.write_turntables(tmp_path / "tt", model, x[:1], viz.select_attrs(attrs, [0]), ["s0"])
    gif = _frames(paths[0])
    w, h = model.image_size
    assert len(gif) == 36
    assert gif[0].shape == (2 * h, 2 * (2 * w + 2), 3)  # input | render, upscaled 2x


def test_texture_swap(setup, tmp_path):
    model, x, attrs = setup
    r = viz.texture_swap_renders(model, attrs)
    w, h = model.image_size
    assert r.shape == (3, 3, 3, h, w)
    plain = model.render(attrs).rgb
    for i in range(3):
        torch.testing.assert_close(r[i, i], plain[i])
        for j in range(3):
            # geometry (the white background) comes from i, colours from j's texture
            white_ij = (r[i, j] == 1).all(0)
            white_i = (plain[i] == 1).all(0)
            assert torch.equal(white_ij, white_i)
    assert not torch.allclose(r[0, 1], r[0, 0])
    img = Image.open(viz.texture_swap_grid(tmp_path / "swap.png", model, x, attrs))
    assert img.size[0] > 4 * 2 * w and img.size[1] > 4 * 2 * h


def test_histograms_with_and_without_truth(tmp_path):
    pred = {"azimuth": [-170.0, 10.0, 95.0], "elevation": [1.0, 2.0, 3.0], "distance": [3.0, 3.0, 3.0],
            "bias_x": [0.0, 0.1, 0.2], "bias_y": [0.0, 0.0, 0.1], "mean_abs_delta": [0.01, 0.02, 0.03]}
    a = viz.camera_histograms(tmp_path / "h1.png", pred)
    b = viz.camera_histograms(tmp_path / "h2.png", pred, {"azimuth": [0.0, 20.0], "distance": [2.5, 2.6]})
    ia, ib = (np.asarray(Image.open(p).convert("RGB")) for p in (a, b))
    assert ia.shape == ib.shape and ia.shape[0] > 300

    def orange(im):
        r, g, b = im[..., 0].astype(int), im[..., 1].astype(int), im[..., 2].astype(int)
        return ((r > 200) & (g > 150) & (g < 215) & (b < 170)).sum()

    assert orange(ia) == 0 < orange(ib)  # the truth is drawn only when given


def test_template_evolution(setup, tmp_path):
    model, _, _ = setup
    run = tmp_path / "run"
    assert viz.template_evolution(tmp_path / "none.gif", run, model.template_init, model.faces,
                                  model.face_uvs) is None
    t0 = model.template_init.clone()
    for epoch, s in ((2, 1.0), (0, 1.0), (10, 1.3)):
        v = t0 * torch.tensor([s, 1.0, s])
        export_mesh(run / "templates" / f"epoch_{epoch:04d}.obj", v, model.faces, model.face_uvs)
    assert [lab for lab, _ in viz.template_files(run)] == ["epoch 0", "epoch 2", "epoch 10"]
    p = viz.template_evolution(tmp_path / "evo.gif", run, model.template_init, model.faces, model.face_uvs)
    frames = _frames(p)
    assert len(frames) == 4  # initial + 3 snapshots
    body = [f[28:].astype(int) for f in frames]  # below the two label lines
    assert np.abs(body[0] - body[1]).mean() < 0.5  # epoch 0 equals the initial template
    assert np.abs(body[0] - body[3]).mean() > 5  # the widened one differs
    assert not np.array_equal(frames[0][:28], frames[1][:28])  # labelled differently
    export_mesh(run / "templates" / "epoch_0011.obj", t0[:-10], model.faces[:5], model.face_uvs[:5])
    with pytest.raises(ValueError, match="vertices"):
        viz.template_evolution(tmp_path / "bad.gif", run, model.template_init, model.faces, model.face_uvs)


def test_export_meshes_round_trip(setup, tmp_path):
    model, _, attrs = setup
    paths = viz.export_meshes(tmp_path / "m", model, viz.select_attrs(attrs, [0, 1]), ["a", "b"])
    assert sorted(p.name for p in paths) == ["a.glb", "a.obj", "b.glb", "b.obj"]
    assert (tmp_path / "m" / "a.mtl").is_file() and (tmp_path / "m" / "a.png").is_file()
    back = load_mesh(tmp_path / "m" / "b.obj")
    torch.testing.assert_close(back.verts, model.vertices(attrs)[1], atol=1e-5, rtol=0)
    assert back.texture is not None and back.texture.shape == attrs.texture[1].shape
    glb = load_mesh(tmp_path / "m" / "a.glb")
    assert glb.verts.shape[0] == model.template.shape[0]
