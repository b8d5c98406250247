import math

import pytest
import torch

from mirror3d.render import FOVY_DEG, look_at_camera, projection_vector
from mirror3d.render.camera import ndc_to_pixel


def test_fovy_and_projection_vectors():
    assert FOVY_DEG == pytest.approx(43.6028, abs=1e-3)
    assert projection_vector(64 / 128) == pytest.approx((5.0, 2.5, -1.0))
    assert projection_vector(1.0) == pytest.approx((2.5, 2.5, -1.0))
    assert projection_vector(96 / 160) == pytest.approx((4.16667, 2.5, -1.0), abs=1e-4)


def test_camera_position_and_axes():
    cam = look_at_camera(torch.tensor([30.0]), torch.tensor([20.0]), torch.tensor([3.0]))
    a, e = math.radians(30), math.radians(20)
    expect = [3 * math.cos(e) * math.sin(a), 3 * math.sin(e), 3 * math.cos(e) * math.cos(a)]
    assert cam.position[0].tolist() == pytest.approx(expect, abs=1e-6)
    r = cam.rotation[0]
    assert torch.allclose(r.T @ r, torch.eye(3), atol=1e-6)
    assert torch.det(r) == pytest.approx(1.0, abs=1e-6)
    # the camera z axis points from the look-at point to the camera
    assert torch.allclose(r[:, 2], cam.position[0] / 3.0, atol=1e-6)


def test_hand_picked_projections_front_camera():
    # azimuth 0, elevation 0, distance 4: camera at (0, 0, 4) looking down −z; W=H=128, p0=p1=2.5
    cam = look_at_camera(0.0, 0.0, 4.0)
    pts = torch.tensor([[[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.5, 0.0], [0.4, -0.4, 1.0]]])
    ndc, depth = cam.project(pts, aspect=1.0)
    expect = torch.tensor(
        [[0, 0], [2.5 * 0.5 / 4, 0], [0, 2.5 * 0.5 / 4], [2.5 * 0.4 / 3, -2.5 * 0.4 / 3]])
    assert torch.allclose(ndc[0], expect, atol=1e-6)
    assert depth[0].tolist() == pytest.approx([4, 4, 4, 3], abs=1e-6)
    px = ndc_to_pixel(ndc, (128, 128))[0]
    # x_ndc = 0.3125 → column (0.3125·128 + 127)/2 = 83.5 ; y up → row 63.5 − 0.3125·64 = 43.5
    expect_px = torch.tensor(
        [[63.5, 63.5], [83.5, 63.5], [63.5, 43.5], [63.5 + 1 / 3 * 64, 63.5 + 1 / 3 * 64]])
    assert torch.allclose(px, expect_px, atol=1e-4)


def test_side_camera_and_aspect():
    # azimuth 90: camera on +x looking toward −x; world +z appears on the image's left
    cam = look_at_camera(90.0, 0.0, 2.0)
    ndc, depth = cam.project(torch.tensor([[[0.0, 0.0, 0.5]]]), aspect=0.5)
    assert ndc[0, 0, 0].item() == pytest.approx(-5.0 * 0.5 / 2.0, abs=1e-5)
    assert depth[0, 0].item() == pytest.approx(2.0, abs=1e-6)


def test_bias_is_the_look_at_point():
    cam = look_at_camera(torch.tensor([25.0, -140.0]), torch.tensor([10.0, -12.0]),
                         torch.tensor([3.0, 5.0]), torch.tensor([[0.3, -0.2], [-0.5, 0.4]]))
    at = torch.tensor([[[0.3, -0.2, 0.0]], [[-0.5, 0.4, 0.0]]])
    ndc, _ = cam.project(at, aspect=0.5)
    assert torch.allclose(ndc, torch.zeros_like(ndc), atol=1e-5)


def test_rays_pass_through_projected_pixel_centres():
    cam = look_at_camera(torch.tensor([33.0]), torch.tensor([-7.0]), torch.tensor([3.5]))
    o, d = cam.pixel_rays((8, 6))
    pts = o + 2.0 * d
    ndc, _ = cam.project(pts, aspect=6 / 8)
    px = ndc_to_pixel(ndc, (8, 6))[0].reshape(8, 6, 2)
    jj, ii = torch.meshgrid(torch.arange(6.0), torch.arange(8.0), indexing="xy")
    assert torch.allclose(px[..., 0], jj, atol=1e-4) and torch.allclose(px[..., 1], ii, atol=1e-4)


def test_gradients_reach_camera_parameters():
    az = torch.tensor([10.0], requires_grad=True)
    dist = torch.tensor([3.0], requires_grad=True)
    cam = look_at_camera(az, torch.tensor([5.0]), dist)
    ndc, _ = cam.project(torch.tensor([[[0.2, 0.3, 0.1]]]), 1.0)
    ndc.sum().backward()
    assert az.grad.abs() > 0 and dist.grad.abs() > 0


def test_bad_camera_arguments():
    with pytest.raises(ValueError, match="distance"):
        look_at_camera(0.0, 0.0, -1.0)
    with pytest.raises(ValueError, match="bias"):
        look_at_camera(0.0, 0.0, 2.0, torch.zeros(3))
    with pytest.raises(ValueError, match="azimuth"):
        look_at_camera(float("nan"), 0.0, 2.0)
    with pytest.raises(ValueError, match="distance"):
        look_at_camera(0.0, torch.zeros(3), torch.full((2,), 2.0))
