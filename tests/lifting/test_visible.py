import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mirror3d.lifting.visible import (
    MeshReconstruction,
    OracleReconstructor,
    Reconstructor,
    background_points,
    lift_visible,
    visible_surface_points,
)
from mirror3d.render import ico_sphere, look_at_camera
from mirror3d.render.mesh import sample_points_on_faces

H = W = 48
DIST = 2.5


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _sphere():
    v, f = ico_sphere(3, 0.5)
    return MeshReconstruction(v, f, look_at_camera(0.0, 0.0, DIST))


def _naive_pixel(points, camera, h, w, aspect=None):
    """Independent projection: camera space by the look-at axes, then nearest pixel (row, col)."""
    pos = camera.position[0].double()
    rot = camera.rotation[0].double()
    pc = (points.double() - pos) @ rot
    p1 = 1.0 / math.tan(math.atan(1 / 2.5))
    p0 = p1 / (w / h if aspect is None else aspect)
    x = p0 * pc[:, 0] / -pc[:, 2]
    y = p1 * pc[:, 1] / -pc[:, 2]
    col = torch.floor((x * w + w - 1) / 2 + 0.5).long()
    row = torch.floor((h - 1 - y * h) / 2 + 0.5).long()
    return row, col, -pc[:, 2]


def _random_image(h=H, w=W, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_sphere_front_points_face_camera_and_take_their_pixel_colour():
    rec = _sphere()
    img = _random_image()
    vis = visible_surface_points(rec, img, np.ones((H, W), bool), 3000, _gen())
    assert vis.xyz.shape[0] > 300
    # camera-facing side of a 0.5-sphere seen from distance 2.5: z > r²/d = 0.1 (faceting slack)
    assert float(vis.xyz[:, 2].min()) > 0.1 - 0.02
    row, col, _ = _naive_pixel(vis.xyz, rec.camera, H, W)
    assert torch.equal(torch.stack([row, col], -1), vis.pixel)
    expect = torch.as_tensor(img[row.numpy(), col.numpy()], dtype=torch.float32) / 255
    assert torch.allclose(vis.rgb, expect)
    # recall: most samples on camera-facing faces of a convex mesh are kept
    pts, fidx, _ = sample_points_on_faces(rec.vertices[None], rec.faces, 3000, generator=_gen(),
                                          return_faces=True)
    tri = rec.vertices[rec.faces[fidx[0]]]
    n = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    facing = ((rec.camera.position[0] - tri.mean(1)) * n).sum(-1) > 0
    assert vis.xyz.shape[0] >= 0.75 * int(facing.sum())
    assert vis.xyz.shape[0] <= int(facing.sum())


def _two_layer():
    """A big back plane z = 0 (covering the view) and a small front plane z = 0.5, facing +z."""
    def quad(s, z, off):
        v = torch.tensor([[-s, -s, z], [s, -s, z], [s, s, z], [-s, s, z]])
        f = torch.tensor([[0, 1, 2], [0, 2, 3]]) + off
        return v, f

    vb, fb = quad(1.3, 0.0, 0)
    vf, ff = quad(0.5, 0.5, 4)
    cam = look_at_camera(0.0, 0.0, 3.0)
    return MeshReconstruction(torch.cat([vb, vf]), torch.cat([fb, ff]), cam)


def test_two_layers_occluded_back_points_are_dropped():
    rec = _two_layer()
    n = 6000
    cam_z = 3.0
    # image: red where a pixel centre sees the front square, blue elsewhere
    p1 = 2.5
    i, j = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    x_ndc, y_ndc = (2 * j + 1 - W) / W, (H - 2 * i - 1) / H
    scale = (cam_z - 0.5) / p1  # NDC → world on the front plane
    on_front = (np.abs(x_ndc * scale) < 0.5) & (np.abs(y_ndc * scale) < 0.5)
    img = np.zeros((H, W, 3), np.uint8)
    img[on_front] = (255, 0, 0)
    img[~on_front] = (0, 0, 255)
    vis = visible_surface_points(rec, img, np.ones((H, W), bool), n, _gen(1))

    pts = sample_points_on_faces(rec.vertices[None], rec.faces, n, generator=_gen(1))[0]
    # naive visibility of back points: the ray to the camera crosses z = 0.5 outside the square
    back = pts[:, 2].abs() < 1e-6
    t = 0.5 / cam_z
    cross = pts[:, :2] * (1 - t)
    hidden = back & (cross.abs() < 0.5).all(-1)
    row, col, _ = _naive_pixel(pts, rec.camera, H, W)
    in_view = (row >= 0) & (row < H) & (col >= 0) & (col < W)
    pix_size = 2 * (cam_z - 0.5) / (p1 * H)  # world size of a pixel on the front plane
    edge_dist = (0.5 - cross.abs()).abs().min(-1).values
    clear = edge_dist > 1.5 * pix_size

    kept = {tuple(p) for p in np.round(vis.xyz.numpy(), 5).tolist()}
    key = [tuple(p) for p in np.round(pts.numpy(), 5).tolist()]
    kept_mask = torch.tensor([k in kept for k in key])
    assert int((hidden & clear).sum()) > 300
    # visibility is decided at pixel resolution: no point hidden by more than a pixel survives
    assert not (kept_mask & hidden & clear).any()
    assert (kept_mask[in_view & back & ~hidden & clear]).all()  # clearly visible back points stay
    front = pts[:, 2] > 0.4
    assert kept_mask[front].all()
    # a pixel colours only the nearest surface: no kept back point takes a red pixel
    back_rgb = vis.rgb[vis.xyz[:, 2].abs() < 1e-6]
    assert torch.all(back_rgb[:, 0] == 0) and torch.all(back_rgb[:, 2] == 1)


def test_mask_and_image_bounds_filter_points():
    rec = _sphere()
    mask = np.ones((H, W), bool)
    mask[:, : W // 2] = False
    vis = visible_surface_points(rec, _random_image(), mask, 2000, _gen())
    assert vis.pixel.shape[0] > 100
    assert int(vis.pixel[:, 1].min()) >= W // 2
    # a camera so close that the sphere overflows the image: every pixel index stays inside
    rec2 = MeshReconstruction(rec.vertices, rec.faces, look_at_camera(0.0, 0.0, 1.0))
    vis2 = visible_surface_points(rec2, _random_image(), np.ones((H, W), bool), 2000, _gen())
    assert vis2.pixel.shape[0] > 0
    assert int(vis2.pixel.min()) >= 0 and int(vis2.pixel[:, 0].max()) < H
    assert int(vis2.pixel[:, 1].max()) < W


def test_background_at_mean_body_depth_with_pixel_colours():
    rec = _sphere()
    img = _random_image(seed=3)
    mask = np.zeros((H, W), bool)
    mask[12:36, 14:34] = True
    pts = lift_visible(img, mask, rec, 2000, _gen(), background=True)
    body = visible_surface_points(rec, img, mask, 2000, _gen())
    nb = body.xyz.shape[0]
    assert np.allclose(pts[:nb, :3], body.xyz.numpy())
    bg = torch.as_tensor(pts[nb:])
    assert bg.shape[0] == int((~mask).sum())
    row, col, depth = _naive_pixel(bg[:, :3], rec.camera, H, W)
    _, _, body_depth = _naive_pixel(body.xyz, rec.camera, H, W)
    assert torch.allclose(depth, body_depth.mean().expand_as(depth), atol=1e-4)
    rr, cc = np.nonzero(~mask)  # row-major
    assert np.array_equal(row.numpy(), rr) and np.array_equal(col.numpy(), cc)
    assert np.allclose(bg[:, 3:].numpy(), img[rr, cc] / 255.0)
    # direct call: same plane for a given depth
    xyz, rgb = background_points(rec.camera, img, mask, 2.0)
    _, _, d = _naive_pixel(xyz, rec.camera, H, W)
    assert torch.allclose(d, torch.full_like(d, 2.0), atol=1e-5)


def test_deterministic_for_a_seed_and_oracle_protocol():
    rec = _sphere()
    oracle = OracleReconstructor(rec)
    assert isinstance(oracle, Reconstructor)
    img, mask = _random_image(), np.ones((H, W), bool)
    got = oracle.reconstruct(img, mask)
    a = lift_visible(img, mask, got, 1500, _gen(7))
    b = lift_visible(img, mask, got, 1500, _gen(7))
    c = lift_visible(img, mask, got, 1500, _gen(8))
    assert np.array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)
    other = _two_layer()
    per = OracleReconstructor(rec, per_image={"x": other})
    assert per.reconstruct(img, mask, key="x") is other
    assert per.reconstruct(img, mask, key="y") is rec
    assert per.calls == 2


def test_look_at_parameters_and_model_aspect():
    """A camera given as look-at parameters (CASL's CameraParams) equals the Camera; a model that
    saw a 16×32 input projects with aspect 0.5 onto a square photo."""
    rec = _sphere()
    params = SimpleNamespace(azimuth=20.0, elevation=10.0, distance=DIST, bias=(0.05, -0.02))
    cam = look_at_camera(20.0, 10.0, DIST, torch.tensor([0.05, -0.02]))
    img, mask = _random_image(), np.ones((H, W), bool)
    a = lift_visible(img, mask, MeshReconstruction(rec.vertices, rec.faces, params), 800, _gen())
    b = lift_visible(img, mask, MeshReconstruction(rec.vertices, rec.faces, cam), 800, _gen())
    assert np.allclose(a, b, atol=1e-5) and len(a) > 100
    stretched = MeshReconstruction(rec.vertices, rec.faces, cam, image_size=(16, 32))
    vis = visible_surface_points(stretched, img, mask, 800, _gen())
    row, col, _ = _naive_pixel(vis.xyz, cam, H, W, aspect=0.5)
    assert torch.equal(torch.stack([row, col], -1), vis.pixel)
    assert int(vis.pixel[:, 1].min()) < 4 and int(vis.pixel[:, 1].max()) > W - 5  # fills width
    with pytest.raises(ValueError, match="camera"):
        lift_visible(img, mask, MeshReconstruction(rec.vertices, rec.faces, "front"), 100)
    with pytest.raises(ValueError, match="image_size"):
        lift_visible(img, mask, MeshReconstruction(rec.vertices, rec.faces, cam, (0, 4)), 100)


def test_bad_inputs_raise_value_error():
    rec = _sphere()
    img = _random_image()
    with pytest.raises(ValueError, match="mask"):
        lift_visible(img, np.ones((H, W + 1), bool), rec, 100)
    with pytest.raises(ValueError, match="mask"):
        lift_visible(img, None, rec, 100)
    with pytest.raises(ValueError, match="image"):
        lift_visible(img[..., :2], np.ones((H, W), bool), rec, 100)
    two = MeshReconstruction(rec.vertices, rec.faces, look_at_camera([0.0, 10.0], 0.0, DIST))
    with pytest.raises(ValueError, match="camera"):
        lift_visible(img, np.ones((H, W), bool), two, 100)
    with pytest.raises(ValueError, match="faces"):
        lift_visible(img, np.ones((H, W), bool),
                     MeshReconstruction(rec.vertices, rec.faces.float(), rec.camera), 100)
    with pytest.raises(ValueError, match="vertices"):
        bad = rec.vertices.clone()
        bad[0, 0] = float("nan")
        lift_visible(img, np.ones((H, W), bool),
                     MeshReconstruction(bad, rec.faces, rec.camera), 100)
    with pytest.raises(ValueError, match="depth"):
        background_points(rec.camera, img, np.ones((H, W), bool), -1.0)
    with pytest.raises(ValueError, match="mesh"):
        OracleReconstructor()


@pytest.mark.parametrize("azimuth", [0.0, 70.0, -135.0])
def test_camera_frame_is_the_object_frame_seen_by_the_camera(azimuth):
    v, f = ico_sphere(3, 0.5)
    rec = MeshReconstruction(v, f, look_at_camera(azimuth, 10.0, DIST))
    img = _random_image(seed=4)
    mask = np.zeros((H, W), bool)
    mask[12:36, 14:34] = True
    obj = lift_visible(img, mask, rec, 2000, _gen(), background=True)
    cam = lift_visible(img, mask, rec, 2000, _gen(), background=True, frame="camera")
    # naive: the look-at axes as rows, applied to (p - camera position)
    pos, rot = rec.camera.position[0].double(), rec.camera.rotation[0].double()
    expect = (torch.as_tensor(obj[:, :3]).double() - pos) @ rot
    assert np.allclose(cam[:, :3], expect.numpy(), atol=1e-4)
    assert np.array_equal(cam[:, 3:], obj[:, 3:])
    # the background plane faces the camera: constant z = -(mean body depth) at any azimuth
    nb = cam.shape[0] - int((~mask).sum())
    bg_z = cam[nb:, 2]
    assert np.allclose(bg_z, bg_z[0], atol=1e-4) and bg_z[0] < -1.0
    assert np.allclose(bg_z[0], cam[:nb, 2].mean(), atol=1e-3)
    with pytest.raises(ValueError, match="frame"):
        lift_visible(img, mask, rec, 10, _gen(), frame="world")
