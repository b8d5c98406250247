"""SynthPeople meshes: closed, outward-wound primitives; posing against a naive reference;
normalisation; the atlas."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from mirror3d.data.synth.body import (
    BONES,
    box,
    build_person,
    build_person_mesh,
    capsule,
    ellipsoid,
    lathe,
    signed_volume,
)
from mirror3d.data.synth.recipe import POSE_NAMES, draw_recipe
from mirror3d.data.synth.textures import ATLAS_COLS, ATLAS_ROWS, PART_CELLS


def _edges_ok(faces: np.ndarray) -> bool:
    """Closed and consistently oriented: every directed edge once, its reverse once."""
    directed = Counter()
    for a, b, c in faces:
        for e in ((a, b), (b, c), (c, a)):
            directed[e] += 1
    return all(n == 1 for n in directed.values()) and all(directed[(b, a)] == 1 for a, b in directed)


def _normals_point_outward(verts: np.ndarray, faces: np.ndarray, centre: np.ndarray) -> bool:
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    n = np.cross(b - a, c - a)
    cen = (a + b + c) / 3
    return bool((np.einsum("ij,ij->i", n, cen - centre) > 0).all())


@pytest.mark.parametrize("prim,centre", [
    (ellipsoid((0.3, 0.5, 0.2), (1.0, -2.0, 0.5)), np.array([1.0, -2.0, 0.5])),
    (capsule(1.0, 0.2, 0.1), np.array([0.0, -0.5, 0.0])),
    (box((0.1, 0.2, 0.3), (0.5, 0.5, 0.5)), np.array([0.5, 0.5, 0.5])),
    (lathe([(0, 0, 0), (0, 0.5, 0.4), (1, 0.3, 0.2), (1, 0, 0)], 12), np.array([0.0, 0.5, 0.0])),
])
def test_primitives_are_closed_and_wound_outward(prim, centre):
    assert _edges_ok(prim.faces)
    assert signed_volume(prim.verts, prim.faces) > 0
    assert _normals_point_outward(prim.verts, prim.faces, centre)
    assert prim.st.shape == (len(prim.faces), 3, 2)
    assert prim.st.min() >= 0 and prim.st.max() <= 1


def test_ellipsoid_volume_matches_formula():
    prim = ellipsoid((0.3, 0.5, 0.2), n_lat=40, n_seg=64)
    exact = 4 / 3 * math.pi * 0.3 * 0.5 * 0.2
    assert signed_volume(prim.verts, prim.faces) == pytest.approx(exact, rel=0.01)


def test_box_volume_and_rotation_keep_winding():
    rot = Rotation.from_euler("xyz", [20, 30, 40], degrees=True).as_matrix()
    prim = box((0.1, 0.2, 0.3), rotation=rot)
    assert signed_volume(prim.verts, prim.faces) == pytest.approx(0.2 * 0.4 * 0.6)


def test_lathe_rejects_bad_profiles():
    with pytest.raises(ValueError, match="poles"):
        lathe([(0, 0.1, 0.1), (1, 0.2, 0.2), (2, 0, 0)])
    with pytest.raises(ValueError, match="decrease"):
        lathe([(1, 0, 0), (0, 0.2, 0.2), (2, 0, 0)])
    with pytest.raises(ValueError, match="rings"):
        lathe([(0, 0, 0), (1, 0, 0)])


def _recipes():
    """Recipes covering every lower garment, hair style and bag."""
    rs = [draw_recipe(0, i) for i in range(1, 80)]
    want = {}
    for r in rs:
        for key in (("lower", r.lower_kind), ("hair", r.hair_style), ("bag", r.bag)):
            want.setdefault(key, r)
    return list({r.recipe_id: r for r in want.values()}.values())


@pytest.mark.parametrize("recipe", _recipes(), ids=lambda r: f"id{r.recipe_id}")
def test_person_parts_are_closed_outward_and_normalised(recipe):
    mesh = build_person(recipe)
    jit = torch.tensor(np.random.default_rng(0).normal(0, 4, (2, len(POSE_NAMES))), dtype=torch.float32)
    verts = torch.cat([mesh.posed(None), mesh.posed(jit)]).double().numpy()
    faces = mesh.faces.numpy()
    assert _edges_ok(faces)
    for name, pr in mesh.parts.items():
        f = faces[pr.f0:pr.f1] - pr.v0
        assert f.min() >= 0 and f.max() < pr.v1 - pr.v0, name
        for v in verts:
            assert signed_volume(v[pr.v0:pr.v1], f) > 0, name
    # no two vertices coincide (an OBJ round trip that merges equal positions is lossless)
    assert all(len(np.unique(v.astype(np.float32), axis=0)) == len(v) for v in verts)
    rest = verts[0]
    assert rest[:, 1].min() == pytest.approx(-0.9, abs=1e-6)
    assert rest[:, 1].max() == pytest.approx(0.9, abs=1e-6)
    mid = (rest.min(0) + rest.max(0)) / 2
    assert np.abs(mid).max() < 1e-6
    expected = {"torso", "neck", "head", "hand_l", "foot_r"}
    if recipe.lower_kind in ("skirt", "dress"):
        expected.add("skirt")
    if recipe.hair_style != "short":
        expected.add("hair")
    if recipe.bag != "none":
        expected.add("bag")
    assert expected <= set(mesh.parts)
    assert ("skirt" in mesh.parts) == (recipe.lower_kind in ("skirt", "dress"))


def test_person_faces_plus_z():
    r = next(r for r in (draw_recipe(0, i) for i in range(1, 200)) if r.bag == "backpack")
    mesh = build_person(r)
    v = mesh.posed(None)[0].numpy()
    p = mesh.parts
    torso_z = v[p["torso"].v0:p["torso"].v1, 2].mean()
    assert v[p["bag"].v0:p["bag"].v1, 2].mean() < torso_z - 0.05  # the backpack is behind
    for side in "lr":
        foot = v[p[f"foot_{side}"].v0:p[f"foot_{side}"].v1]
        shin = v[p[f"shin_{side}"].v0:p[f"shin_{side}"].v1]
        toe = foot[foot[:, 2].argmax()]
        assert toe[2] > shin[:, 2].mean() + 0.05  # toes point to +z
    left = v[p["hand_l"].v0:p["hand_l"].v1, 0].mean()
    right = v[p["hand_r"].v0:p["hand_r"].v1, 0].mean()
    assert left > 0 > right  # the person's left is +x when facing +z


def _naive_pose(mesh, angles_deg: np.ndarray) -> np.ndarray:
    """Reference forward kinematics: one part at a time, scipy rotations, numpy loops."""
    a = dict(zip(POSE_NAMES, angles_deg))
    j = mesh.joints
    l_ua, l_th = mesh.lengths
    frames = {0: (np.eye(3), np.zeros(3))}
    for side, sfx, b_up, b_fa, jj in ((1, "l", 1, 2, j[0]), (-1, "r", 3, 4, j[1])):
        r_up = Rotation.from_euler("ZX", [side * a[f"arm_abduct_{sfx}"], -a[f"arm_swing_{sfx}"]],
                                   degrees=True).as_matrix()
        r_fa = r_up @ Rotation.from_euler("x", -a[f"elbow_{sfx}"], degrees=True).as_matrix()
        frames[b_up] = (r_up, jj)
        frames[b_fa] = (r_fa, jj + r_up @ np.array([0, -l_ua, 0]))
    for side, sfx, b_th, b_sh, jj in ((1, "l", 5, 6, j[2]), (-1, "r", 7, 8, j[3])):
        r_th = Rotation.from_euler("ZX", [side * 3.0, -a[f"leg_swing_{sfx}"]], degrees=True).as_matrix()
        r_sh = r_th @ Rotation.from_euler("x", a[f"knee_{sfx}"], degrees=True).as_matrix()
        frames[b_th] = (r_th, jj)
        frames[b_sh] = (r_sh, jj + r_th @ np.array([0, -l_th, 0]))
    local = mesh.local_verts.numpy()
    bone = mesh.bone.numpy()
    out = np.empty_like(local)
    for i in range(len(local)):
        rot, t = frames[int(bone[i])]
        out[i] = rot @ local[i] + t
    return (out - mesh.centre) * mesh.scale


def test_posing_matches_naive_reference():
    r = draw_recipe(0, 5)
    mesh = build_person(r)
    jit = np.random.default_rng(1).normal(0, 5, (3, len(POSE_NAMES))).astype(np.float32)
    fast = mesh.posed(torch.from_numpy(jit)).double().numpy()
    for b in range(3):
        ref = _naive_pose(mesh, np.asarray(r.pose) + jit[b].astype(np.float64))
        np.testing.assert_allclose(fast[b], ref, atol=1e-5)
    assert len(BONES) == 9


def test_pose_angle_directions():
    r = draw_recipe(0, 2)
    mesh = build_person(r)
    p = mesh.parts
    idx = {n: POSE_NAMES.index(n) for n in POSE_NAMES}

    def centroid(jit, part):
        v = mesh.posed(torch.tensor(jit, dtype=torch.float32))[0].numpy()
        return v[p[part].v0:p[part].v1].mean(0)

    zero = np.zeros(len(POSE_NAMES))
    base = {part: centroid(zero, part) for part in ("hand_l", "hand_r", "foot_l")}
    jit = zero.copy()
    jit[idx["arm_swing_l"]] = 8.0
    assert centroid(jit, "hand_l")[2] > base["hand_l"][2] + 0.02  # swing forward → +z
    jit = zero.copy()
    jit[idx["arm_abduct_r"]] = 8.0
    assert centroid(jit, "hand_r")[0] < base["hand_r"][0] - 0.02  # right arm out → −x
    jit = zero.copy()
    jit[idx["knee_l"]] = 8.0
    assert centroid(jit, "foot_l")[2] < base["foot_l"][2] - 0.01  # knee bends backward


def test_build_person_mesh_outputs_and_atlas():
    r = draw_recipe(0, 9)
    verts, faces, uvs, tex = build_person_mesh(r, np.zeros(len(POSE_NAMES)))
    assert verts.dtype == torch.float32 and verts.shape[1] == 3
    assert faces.dtype == torch.int64 and faces.shape[1] == 3 and int(faces.max()) < len(verts)
    assert uvs.shape == (len(faces), 3, 2) and tex.shape[0] == 3
    # zero jitter is the rest pose; the texture holds exact 8-bit levels
    rest, *_ = build_person_mesh(r, None)
    assert torch.equal(verts, rest)
    assert torch.equal(tex, torch.round(tex * 255) / 255)
    # every part's UVs stay inside its atlas cell
    mesh = build_person(r)
    for name, pr in mesh.parts.items():
        row, col = PART_CELLS[name]
        u = mesh.face_uvs[pr.f0:pr.f1, :, 0]
        v = mesh.face_uvs[pr.f0:pr.f1, :, 1]
        assert (u > col / ATLAS_COLS).all() and (u < (col + 1) / ATLAS_COLS).all(), name
        assert (v > 1 - (row + 1) / ATLAS_ROWS).all() and (v < 1 - row / ATLAS_ROWS).all(), name
    with pytest.raises(ValueError, match="pose_jitter"):
        build_person_mesh(r, np.zeros(3))


def test_build_person_is_deterministic_and_recipe_dependent():
    r = draw_recipe(0, 4)
    a, b = build_person(r), build_person(r)
    assert torch.equal(a.posed(None), b.posed(None)) and torch.equal(a.texture, b.texture)
    other = dataclasses.replace(r, girth=min(1.38, r.girth + 0.2))
    c = build_person(other)
    assert not torch.equal(a.local_verts, c.local_verts)
    with pytest.raises(ValueError, match="recipe"):
        build_person({"recipe_id": 1})
