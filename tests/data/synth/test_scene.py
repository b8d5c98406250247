"""SynthPeople scenes: camera ids, views, batched rendering and compositing."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mirror3d.data.synth.body import build_person
from mirror3d.data.synth.recipe import draw_recipe
from mirror3d.data.synth.scene import (
    assign_cameras,
    camera_rig,
    draw_views,
    render_views,
    view_background,
)
from mirror3d.render import MeshRenderer, look_at_camera


def test_camera_rig_is_deterministic_and_covers_the_circle():
    rig = camera_rig(6, 0)
    assert rig == camera_rig(6, 0) and rig != camera_rig(6, 1)
    assert len({c.style for c in rig}) == 6
    centres = np.sort([(c.azimuth_centre + 360) % 360 for c in rig])
    gaps = np.diff(np.concatenate([centres, centres[:1] + 360]))
    assert gaps.max() < 90  # no quarter of the circle is left without a camera
    with pytest.raises(ValueError, match="n_cameras"):
        camera_rig(0, 0)


def test_assign_cameras_uses_at_least_two_cameras_each_at_least_once():
    for seed in range(20):
        rng = np.random.default_rng(seed)
        ids = assign_cameras(rng, 7, 6)
        assert len(ids) == 7 and all(0 <= c < 6 for c in ids)
        assert 2 <= len(set(ids)) <= 5
    assert sorted(assign_cameras(np.random.default_rng(0), 2, 6)) != [0, 0]
    assert len(set(assign_cameras(np.random.default_rng(0), 2, 6))) == 2


def test_views_stay_in_range_and_are_float32_exact():
    rig = camera_rig(4, 0)
    camids = [0, 1, 2, 3] * 50
    views = draw_views(np.random.default_rng(0), rig, camids)
    az = np.array([v.azimuth for v in views])
    assert np.all((az >= -180) & (az < 180))
    assert all(-15 <= v.elevation <= 15 and 2 <= v.distance <= 6 for v in views)
    assert all(abs(v.bx) <= 0.1 and abs(v.by) <= 0.1 for v in views)
    assert all(2.5 <= v.light[0] <= 3.5 and max(map(abs, v.light[1:])) <= 0.1 for v in views)
    for v in views[:10]:
        for x in (v.azimuth, v.distance, v.bx, *v.light, *v.pose_jitter):
            assert float(np.float32(x)) == x
    # a camera keeps to its azimuth sector: images of one camera are closer to its centre
    for cam in rig:
        mine = az[np.array(camids) == cam.camid]
        d = np.abs((mine - cam.azimuth_centre + 180) % 360 - 180)
        assert np.median(d) < 45
    junk = draw_views(np.random.default_rng(0), rig, [0] * 40, junk=True)
    assert all(v.junk for v in junk)
    assert all(max(abs(v.bx), abs(v.by)) >= 0.25 or v.distance >= 12 for v in junk)
    with pytest.raises(ValueError, match="camids"):
        draw_views(np.random.default_rng(0), rig, [7])


@pytest.fixture(scope="module")
def rendered():
    rig = camera_rig(6, 0)
    mesh = build_person(draw_recipe(0, 3))
    views = draw_views(np.random.default_rng(3), rig, [0, 1, 2, 3, 4])
    renderer = MeshRenderer((64, 32))
    rgb, mask = render_views(mesh, views, rig, renderer)
    return rig, mesh, views, renderer, rgb, mask


def test_render_views_shapes_and_coverage_match_the_renderer(rendered):
    rig, mesh, views, renderer, rgb, mask = rendered
    assert rgb.shape == (5, 64, 32, 3) and rgb.dtype == np.uint8
    assert mask.shape == (5, 64, 32) and mask.dtype == bool
    assert 0.05 < mask.mean() < 0.6
    # independently: the renderer's own silhouette for the same cameras and poses
    jit = torch.tensor(np.array([v.pose_jitter for v in views], np.float32))
    cam = look_at_camera(torch.tensor([v.azimuth for v in views]), torch.tensor([v.elevation for v in views]),
                         torch.tensor([v.distance for v in views]),
                         torch.tensor([[v.bx, v.by] for v in views]))
    sil = renderer.silhouette(mesh.posed(jit), mesh.faces, cam).numpy() > 0.5
    np.testing.assert_array_equal(sil, mask)


def test_background_is_composited_unshaded_outside_the_mask(rendered):
    rig, mesh, views, renderer, rgb, mask = rendered
    for k, v in enumerate(views):
        bg = np.round(view_background(v, rig, 64, 32) * 255).astype(np.uint8)
        np.testing.assert_array_equal(rgb[k][~mask[k]], bg[~mask[k]])
        assert (rgb[k][mask[k]] != bg[mask[k]]).any(axis=-1).mean() > 0.8


def test_render_is_batch_invariant(rendered):
    rig, mesh, views, renderer, rgb, mask = rendered
    for k in (0, 3):
        one_rgb, one_mask = render_views(mesh, [views[k]], rig, renderer)
        np.testing.assert_array_equal(one_rgb[0], rgb[k])
        np.testing.assert_array_equal(one_mask[0], mask[k])
    chunked_rgb, _ = render_views(mesh, views, rig, renderer, batch_size=2)
    np.testing.assert_array_equal(chunked_rgb, rgb)


def test_pose_jitter_and_camera_change_the_image(rendered):
    rig, mesh, views, renderer, rgb, mask = rendered
    moved = dataclasses.replace(views[0], pose_jitter=tuple(x + 8.0 for x in views[0].pose_jitter))
    _, m2 = render_views(mesh, [moved], rig, renderer)
    assert (m2[0] != mask[0]).sum() > 5
    farther = dataclasses.replace(views[0], distance=views[0].distance + 1.5)
    _, m3 = render_views(mesh, [farther], rig, renderer)
    assert m3[0].sum() < 0.8 * mask[0].sum()
    with pytest.raises(ValueError, match="views"):
        render_views(mesh, [], rig, renderer)
