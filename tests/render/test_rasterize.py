import numpy as np
import pytest
import torch
import trimesh

from mirror3d.render import MeshRenderer, rasterize, rasterize_naive
from mirror3d.render.rasterize import drawable_faces, face_candidates


def _project(verts, faces, camera, image_size):
    ndc, depth = camera.project(verts, image_size[1] / image_size[0])
    return ndc[:, faces], depth[:, faces]


@pytest.mark.parametrize("size", [(32, 16), (24, 24)])
def test_binned_rasteriser_equals_all_faces_reference(deformed_meshes, random_cameras, size):
    verts, faces, _ = deformed_meshes(3, seed=1, amount=0.2)
    cam = random_cameras(3, seed=2)
    face_ndc, face_depth = _project(verts, faces, cam, size)
    fast = rasterize(face_ndc, face_depth, size)
    ref = rasterize_naive(face_ndc, face_depth, size)
    assert fast.coverage.sum() > 20
    assert torch.equal(fast.face_index, ref.face_index)
    assert torch.allclose(fast.bary, ref.bary, atol=1e-6)
    assert torch.allclose(fast.depth, ref.depth, atol=1e-5)


def test_candidates_only_visit_faces_near_each_pixel(deformed_meshes, random_cameras):
    verts, faces, _ = deformed_meshes(1, seed=3)
    cam = random_cameras(1, seed=4)
    size = (64, 64)
    face_ndc, face_depth = _project(verts, faces, cam, size)
    valid = drawable_faces(face_ndc, face_depth)
    b, f, r, c = face_candidates(face_ndc, valid, size, margin=0.0)
    # far fewer pairs than pixels × faces, and every pair's pixel centre is inside the face box
    assert b.numel() < 0.02 * size[0] * size[1] * int(valid.sum())
    x = (2 * c + 1 - size[1]) / size[1]
    y = (size[0] - 2 * r - 1) / size[0]
    lo, hi = face_ndc[b, f].amin(1), face_ndc[b, f].amax(1)
    assert bool(((x >= lo[:, 0] - 1e-6) & (x <= hi[:, 0] + 1e-6)).all())
    assert bool(((y >= lo[:, 1] - 1e-6) & (y <= hi[:, 1] + 1e-6)).all())


def test_hard_silhouette_matches_independent_ray_caster(deformed_meshes, random_cameras):
    """Coverage vs trimesh's ray-triangle intersector on deformed spheres, random cameras."""
    size = (128, 128)
    verts, faces, _ = deformed_meshes(4, seed=5, amount=0.25)
    cam = random_cameras(4, seed=6)
    renderer = MeshRenderer(size)
    sil = renderer.silhouette(verts, faces, cam)
    origins, dirs = cam.pixel_rays(size)
    for b in range(verts.shape[0]):
        mesh = trimesh.Trimesh(verts[b].double().numpy(), faces.numpy(), process=False)
        hit = trimesh.ray.ray_triangle.RayMeshIntersector(mesh).intersects_any(
            origins[b].double().numpy(), dirs[b].double().numpy())
        truth = torch.from_numpy(hit.reshape(size).astype(np.float32))
        ours = sil[b]
        iou = float((truth * ours).sum() / ((truth + ours) > 0).float().sum())
        assert truth.sum() > 200
        assert iou >= 0.99, f"sample {b}: IoU {iou:.4f}"


def test_z_buffer_keeps_the_nearest_surface():
    # two parallel squares facing the camera; the nearer (z = 0.5) must win where they overlap
    from mirror3d.render import look_at_camera
    quad = torch.tensor([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])
    near = torch.cat([quad * 0.6, torch.full((4, 1), 0.5)], 1)
    far = torch.cat([quad + 0.2, torch.zeros(4, 1)], 1)
    verts = torch.cat([far, near])[None]
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    cam = look_at_camera(0.0, 0.0, 3.0)
    face_ndc, face_depth = _project(verts, faces, cam, (32, 32))
    frags = rasterize(face_ndc, face_depth, (32, 32))
    centre = frags.face_index[0, 16, 16].item()
    assert centre in (2, 3)
    assert frags.depth[0, 16, 16].item() == pytest.approx(2.5, abs=1e-4)
    # a corner only the far quad covers
    assert frags.face_index[0, 9, 23].item() in (0, 1)
    assert frags.depth[0, 9, 23].item() == pytest.approx(3.0, abs=1e-4)


def test_back_faces_are_culled():
    from mirror3d.render import look_at_camera
    verts = torch.tensor([[[-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.0, 0.5, 0.0]]])
    cam_front = look_at_camera(0.0, 0.0, 3.0)
    cam_back = look_at_camera(180.0, 0.0, 3.0)
    r = MeshRenderer((16, 16))
    faces = torch.tensor([[0, 1, 2]])
    assert r.silhouette(verts, faces, cam_front).sum() > 10
    assert r.silhouette(verts, faces, cam_back).sum() == 0
