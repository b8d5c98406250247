"""SynthPeople's ground truth by image (mirror3d/data/synth/truth.py): rows of both trees, the
exact mesh and camera of an image, a bounded cache of built people, the rendered size."""

import pytest
import torch

import dataset_fixtures
from mirror3d.data.synth import build_person_mesh, load_recipes, read_ground_truth, rerender_row
from mirror3d.data.synth import truth as truth_module
from mirror3d.data.synth.truth import SynthTruth
from mirror3d.render import MeshRenderer


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("truth") / "sp"
    return dataset_fixtures.make_synth(out, ids=3, images_per_id=2, image_size=(24, 40))


def test_rows_meshes_and_cameras_of_both_trees(synth):
    truth = SynthTruth.find(synth / "Market-HQ")
    assert truth.root == synth.resolve() and truth.image_size == (24, 40)
    rows = read_ground_truth(synth).to_pylist()
    assert {r["tree"] for r in rows} == {"market1501", "market_hq"}
    recipes = load_recipes(synth)
    renderer = MeshRenderer((40, 24))
    for row in rows[::3]:
        assert truth.row_for(synth / row["path"]) == row
        verts, faces = truth.mesh(row)
        want, want_faces, _, _ = build_person_mesh(recipes[row["recipe_id"]], row["pose_jitter"])
        assert torch.equal(verts, want) and torch.equal(faces, want_faces)
    # the camera draws the image's person where the generator drew it
    row = rows[0]
    verts, faces = truth.mesh(row)
    _, mask = rerender_row(synth, row)
    sil = renderer.silhouette(verts[None], faces, truth.camera(row))[0].bool()
    assert torch.equal(sil, torch.as_tensor(mask))
    assert truth.row_for(synth / "Market-1501" / "query" / "nope.jpg") is None
    assert truth.row_for("/elsewhere/0001_c1s1_000001_00.jpg") is None
    with pytest.raises(FileNotFoundError, match="not inside a SynthPeople tree"):
        SynthTruth.find(synth / "Market-1501" / "query")


def test_the_people_cache_is_bounded_and_least_recently_used(synth, monkeypatch):
    built = []
    real = truth_module.build_person
    monkeypatch.setattr(truth_module, "build_person", lambda r: built.append(r.recipe_id) or real(r))
    truth = SynthTruth(synth, cache_size=2)
    rows = {r["recipe_id"]: r for r in read_ground_truth(synth).to_pylist()}
    a, b, c = sorted(rows)[:3]
    for rid in (a, b, a, c, a, b, c):  # c evicts b (a was used last), then b evicts c
        truth.mesh(rows[rid])
    assert built == [a, b, c, b, c]
    with pytest.raises(ValueError, match="cache_size"):
        SynthTruth(synth, cache_size=0)
