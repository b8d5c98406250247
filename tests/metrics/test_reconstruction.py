"""3D-truth metrics: hand cases for the normalised Chamfer distance (identical, scaled,
translated, rotated with the camera), camera errors with azimuth wrap, novel-view silhouettes."""

from __future__ import annotations

import math

import pytest
import torch

from mirror3d.metrics.reconstruction import (azimuth_difference, camera_errors,
                                             chamfer_l2_normalised, novel_view_mask_iou,
                                             rotated_camera, template_baseline_chamfer,
                                             to_camera_frame)
from mirror3d.render import MeshRenderer, look_at_camera
from mirror3d.render.sphere import ico_sphere, template_mesh


def _rot_y(deg: float) -> torch.Tensor:
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _square():
    verts = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    return verts, faces


# ------------------------------------------------------------------------------ Chamfer
def test_identical_meshes_give_zero():
    v, f, _ = template_mesh(2.0)
    cam = look_at_camera(torch.tensor([30.0]), torch.tensor([5.0]), torch.tensor([4.0]))
    assert chamfer_l2_normalised(v[None], f, v[None], f, n_points=500).item() == 0.0
    out = chamfer_l2_normalised(v[None], f, v[None], f, n_points=500, pred_camera=cam, gt_camera=cam,
                                centre=False)
    assert out.item() == 0.0


def test_scaled_sphere_known_value_normalised_by_the_truth():
    # radius 2 vs radius 1: every nearest distance is ≈ 1 both ways -> 2 before normalisation;
    # the true (radius-1) mesh's box diagonal is 2·sqrt(3) -> 2 / 12 = 1/6.
    v, f = ico_sphere(4, 1.0)
    for centre in (True, False):
        big_vs_unit = chamfer_l2_normalised(2 * v[None], f, v[None], f, n_points=4000, centre=centre)
        assert big_vs_unit.item() == pytest.approx(1 / 6, rel=0.02)
    # swapped, the truth is the big sphere: diagonal 4·sqrt(3) -> 2 / 48
    unit_vs_big = chamfer_l2_normalised(v[None], f, 2 * v[None], f, n_points=4000)
    assert unit_vs_big.item() == pytest.approx(1 / 24, rel=0.02)


def test_scale_invariance_after_normalisation():
    # scaling both meshes by 8 (exact in binary) scales every sample by 8
    v, f, _ = template_mesh(2.0)
    w = v * torch.tensor([1.25, 0.875, 1.5]) + 0.0625
    a = chamfer_l2_normalised(w[None], f, v[None], f, n_points=800, seed=3)
    b = chamfer_l2_normalised(8.0 * w[None], f, 8.0 * v[None], f, n_points=800, seed=3)
    assert a.item() > 1e-4
    assert b.item() == pytest.approx(a.item(), rel=1e-5)


def test_translation_centred_vs_placed():
    # a unit square lifted by h along its normal: the same samples shifted by h, so every
    # nearest distance is exactly h -> 2h² / diag² with diag = sqrt(2).
    v, f = _square()
    h = 0.5
    up = v + torch.tensor([0.0, 0.0, h])
    placed = chamfer_l2_normalised(up[None], f, v[None], f, n_points=300, centre=False)
    assert placed.item() == pytest.approx(2 * h * h / 2.0, rel=1e-5)
    assert chamfer_l2_normalised(up[None], f, v[None], f, n_points=300).item() == pytest.approx(0.0, abs=1e-10)


def test_each_mesh_in_its_own_camera_frame():
    # the object turned by 40° about y, seen by a camera also turned by 40°, looks the same
    v, f, _ = template_mesh(2.0)
    turned = v @ _rot_y(40.0).T
    gt_cam = look_at_camera(torch.tensor([10.0]), torch.tensor([5.0]), torch.tensor([3.0]))
    pred_cam = look_at_camera(torch.tensor([50.0]), torch.tensor([5.0]), torch.tensor([3.0]))
    same = chamfer_l2_normalised(turned[None], f, v[None], f, n_points=1000, pred_camera=pred_cam,
                                 gt_camera=gt_cam, centre=False)
    assert same.item() == pytest.approx(0.0, abs=1e-9)
    # the same mesh with a 90° camera error does not
    side_cam = look_at_camera(torch.tensor([100.0]), torch.tensor([5.0]), torch.tensor([3.0]))
    wrong = chamfer_l2_normalised(v[None], f, v[None], f, n_points=1000, pred_camera=side_cam,
                                  gt_camera=gt_cam)
    assert wrong.item() > 1e-3
    # pre-transformed vertices and cameras are the same thing
    pre = chamfer_l2_normalised(to_camera_frame(v[None], side_cam), f, to_camera_frame(v[None], gt_cam), f,
                                n_points=1000)
    assert pre.item() == pytest.approx(wrong.item(), rel=1e-5)


def test_template_baseline_uses_the_true_camera():
    v, f, _ = template_mesh(2.0)
    cam = look_at_camera(torch.tensor([-70.0, 20.0]), torch.tensor([3.0, -5.0]), torch.tensor([3.0, 2.5]),
                         torch.tensor([[0.05, -0.05], [0.0, 0.1]]))
    gt = torch.stack([v, v * 1.1])
    out = template_baseline_chamfer(v, f, gt, f, cam, n_points=500)
    assert out.shape == (2,)
    assert out[0].item() == pytest.approx(0.0, abs=1e-10)
    assert out[1].item() > 1e-4


def test_chamfer_rejects_bad_input():
    v, f, _ = template_mesh(2.0)
    with pytest.raises(ValueError, match="batch size"):
        chamfer_l2_normalised(v[None], f, torch.stack([v, v]), f, n_points=10)
    with pytest.raises(ValueError, match="zero-size"):
        chamfer_l2_normalised(v[None], f, torch.zeros(1, 642, 3), f, n_points=10)
    with pytest.raises(ValueError, match="n_points"):
        chamfer_l2_normalised(v[None], f, v[None], f, n_points=0)
    with pytest.raises(ValueError, match="pred_verts"):
        chamfer_l2_normalised(torch.full((1, 642, 3), float("nan")), f, v[None], f, n_points=10)


# ------------------------------------------------------------------------------ camera errors
def test_azimuth_wrap():
    assert azimuth_difference(350.0, 10.0).item() == pytest.approx(20.0)
    assert azimuth_difference(-170.0, 170.0).item() == pytest.approx(20.0)
    assert azimuth_difference(0.0, 180.0).item() == pytest.approx(180.0)
    assert azimuth_difference(-90.0, 270.0).item() == pytest.approx(0.0)


def test_camera_errors_and_summary():
    pred = {"azimuth": [350.0, 40.0, 0.0], "elevation": [5.0, -5.0, 0.0], "distance": [3.0, 2.0, 4.0]}
    gt = {"azimuth": [10.0, 0.0, 180.0], "elevation": [0.0, 0.0, 10.0], "distance": [2.0, 2.0, 5.0]}
    e = camera_errors(pred, gt)
    assert e.azimuth.tolist() == pytest.approx([20.0, 40.0, 180.0])
    assert e.elevation.tolist() == pytest.approx([5.0, 5.0, 10.0])
    assert e.distance_rel.tolist() == pytest.approx([0.5, 0.0, 0.2])
    s = e.summary()
    assert s["azimuth_median_deg"] == pytest.approx(40.0)
    assert s["azimuth_mean_deg"] == pytest.approx(80.0)
    assert s["distance_rel_median"] == pytest.approx(0.2)
    assert s["n"] == 3
    cam = look_at_camera(torch.tensor([350.0]), torch.tensor([5.0]), torch.tensor([3.0]))
    truth = {"azimuth": 10.0, "elevation": 0.0, "distance": 2.0}
    assert camera_errors(cam, truth).azimuth.item() == pytest.approx(20.0)


def test_camera_errors_reject_mismatch():
    with pytest.raises(ValueError, match="batch size"):
        camera_errors({"azimuth": [1.0, 2.0], "elevation": [0.0], "distance": [1.0]},
                      {"azimuth": [1.0], "elevation": [0.0], "distance": [1.0]})
    with pytest.raises(ValueError, match="distance"):
        camera_errors({"azimuth": [1.0], "elevation": [0.0]}, {"azimuth": [1.0], "elevation": [0.0], "distance": [1.0]})


# ------------------------------------------------------------------------------ novel view
def test_rotated_camera_wraps_and_keeps_the_rest():
    cam = look_at_camera(torch.tensor([170.0]), torch.tensor([7.0]), torch.tensor([3.0]), torch.tensor([[0.1, -0.2]]))
    r = rotated_camera(cam, 90.0)
    assert r.azimuth.item() == pytest.approx(-100.0)
    assert (r.elevation.item(), r.distance.item()) == pytest.approx((7.0, 3.0))
    assert r.bias[0].tolist() == pytest.approx([0.1, -0.2])


def test_novel_view_iou_identical_concentric_and_depth_error():
    renderer = MeshRenderer((192, 192))
    v, f = ico_sphere(3, 0.3)
    cam = look_at_camera(torch.tensor([20.0]), torch.tensor([0.0]), torch.tensor([4.0]))
    assert novel_view_mask_iou(v[None], f, v[None], f, cam, renderer).item() == 1.0
    # concentric spheres: discs with tan(asin(r/d)) radii -> IoU = (t(0.3)/t(0.6))² ≈ 0.2457
    t = lambda r: math.tan(math.asin(r / 4.0))  # noqa: E731
    iou = novel_view_mask_iou(v[None], f, 2 * v[None], f, cam, renderer).item()
    assert iou == pytest.approx((t(0.3) / t(0.6)) ** 2, abs=0.015)
    # depth stretched 3x along the viewing axis of the input (azimuth 0: the z axis): almost the
    # same silhouette at the input view, much wider from the side (+90)
    front = look_at_camera(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([4.0]))
    deep = v * torch.tensor([1.0, 1.0, 3.0])
    side_iou = novel_view_mask_iou(deep[None], f, v[None], f, front, renderer).item()
    input_iou = novel_view_mask_iou(deep[None], f, v[None], f, front, renderer, azimuth_offset=0.0).item()
    assert side_iou < 0.45
    assert input_iou > 0.8
