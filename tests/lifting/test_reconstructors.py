"""The ``synth-truth`` reconstructor (mirror3d/lifting/reconstructors.py): each SynthPeople image's
true mesh and camera, in the convention the lifting uses (checked against the generator's own
masks), looked up by path, with one clear error for an image without ground truth."""

import dataclasses
import pathlib
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from lifting.lift_fixtures import lift_cfg, make_lift_tree
import dataset_fixtures
from mirror3d.data.synth import build_person_mesh, load_recipes, read_ground_truth
from mirror3d.lifting.lifter import ShardLifter, load_sample_image
from mirror3d.lifting.modes import lift_image, seed_for_key
from mirror3d.lifting.plan import plan_shards
from mirror3d.lifting.reconstructors import SYNTH_TRUTH, build_reconstructor, check_reconstructor
from mirror3d.lifting.run import lift_dataset
from mirror3d.lifting.shards import read_shards
from mirror3d.lifting.visible import visible_surface_points
from mirror3d.metrics.image import mask_iou
from mirror3d.render import MeshRenderer, look_at_camera


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A tiny SynthPeople tree at 32×64: 2 ids × 3 images, a distractor and a junk person."""
    out = tmp_path_factory.mktemp("synth") / "sp"
    return dataset_fixtures.make_synth(out, ids=2, images_per_id=3, distractor_ids=1, junk_ids=1)


def _market_rows(synth):
    return [r for r in read_ground_truth(synth).to_pylist() if r["tree"] == "market1501"]


def _gt_mask(synth, row) -> torch.Tensor:
    """The generator's written mask of a Market-1501 image (train and query have one)."""
    return torch.tensor(np.asarray(Image.open(synth / row["mask_path"])) > 127)


def test_true_mesh_at_true_camera_draws_the_ground_truth_mask(synth):
    """The convention: the reconstruction rendered by mirror3d.render at its own camera covers
    exactly the pixels of the generator's mask; another image's camera does not."""
    rec = build_reconstructor(SYNTH_TRUTH, root=synth / "Market-1501")
    rows = [r for r in _market_rows(synth) if r["mask_path"]]
    assert len(rows) >= 4
    renderer = MeshRenderer((64, 32))
    for k, row in enumerate(rows):
        path = str(synth / row["path"])
        got = rec.reconstruct(np.zeros((64, 32, 3), np.uint8), None, path=path)
        assert got.vertices.shape[1] == 3 and got.faces.dtype == torch.int64
        assert got.image_size == (32, 64) and got.camera.batch_size == 1
        gt = _gt_mask(synth, row)[None].float()
        sil = renderer.silhouette(got.vertices[None], got.faces, got.camera)
        assert float(mask_iou(sil, gt)) > 0.99, row["path"]
        # a wrong camera (the next image's, or the azimuth turned by 90°) does not fit
        other = rows[(k + 1) % len(rows)]
        for cam in (rec.truth.camera(other),
                    look_at_camera(torch.tensor([row["azimuth"] + 90.0]),
                                   torch.tensor([row["elevation"]]),
                                   torch.tensor([row["distance"]]),
                                   torch.tensor([[row["bx"], row["by"]]]))):
            wrong = renderer.silhouette(got.vertices[None], got.faces, cam)
            assert float(mask_iou(wrong, gt)) < 0.9, row["path"]
    assert rec.calls == len(rows)


def _on_mask(recon, image, mask):
    """(share of the visible surface points on the mask, on the mask dilated by one pixel,
    share of the mask's pixels hit by a point), through the lifting's own projection."""
    vis = visible_surface_points(recon, image, None, 20000, torch.Generator().manual_seed(0))
    r, c = vis.pixel[:, 0].numpy(), vis.pixel[:, 1].numpy()
    hit = np.zeros_like(mask)
    hit[r, c] = True
    return (float(mask[r, c].mean()), float(ndimage.binary_dilation(mask)[r, c].mean()),
            float((hit & mask).sum() / mask.sum()))


def test_visible_points_land_on_the_person_at_any_lifting_size(synth, tmp_path):
    """Through the lifting's own projection: at the rendered size the visible surface points
    fall exactly on the generator's mask and cover it; in an image stretched to another aspect
    (48×64, as lifting's image_size may do) they stay within a pixel of it, because the
    reconstruction carries the rendered (W, H); without it they would not."""
    rec = build_reconstructor(SYNTH_TRUTH, root=synth / "Market-1501")
    tree = {"root": synth / "Market-1501", "masks": synth / "Market-HQ"}
    for row in [r for r in _market_rows(synth) if r["mask_path"]][:3]:
        path, mpath = str(synth / row["path"]), str(synth / row["mask_path"])
        image, mask = load_sample_image(path, mpath, lift_cfg(tree, tmp_path, image_size=(32, 64)))
        on, _, cover = _on_mask(rec.reconstruct(image, mask, path=path), image, mask)
        assert on > 0.99 and cover > 0.95, row["path"]
        image, mask = load_sample_image(path, mpath, lift_cfg(tree, tmp_path, image_size=(48, 64)))
        recon = rec.reconstruct(image, mask, path=path)
        _, near, cover = _on_mask(recon, image, mask)
        assert near > 0.999 and cover > 0.9, row["path"]
        _, _, cover = _on_mask(dataclasses.replace(recon, image_size=None), image, mask)
        assert cover < 0.75, row["path"]


def test_the_mesh_is_the_generators_mesh_of_the_image(synth):
    rec = build_reconstructor(SYNTH_TRUTH, root=synth)  # the SynthPeople root itself works too
    recipes = load_recipes(synth)
    for row in _market_rows(synth)[::4]:
        got = rec.reconstruct(np.zeros((64, 32, 3), np.uint8), None, path=str(synth / row["path"]))
        verts, faces, _, _ = build_person_mesh(recipes[row["recipe_id"]], row["pose_jitter"])
        assert torch.equal(got.vertices, verts) and torch.equal(got.faces, faces)


def test_lift_image_passes_the_path_and_lifts_like_any_reconstruction(synth):
    rec = build_reconstructor(SYNTH_TRUTH, root=synth / "Market-1501")
    row = next(r for r in _market_rows(synth) if r["mask_path"])
    path = str(synth / row["path"])
    image = np.asarray(Image.open(path))
    mask = _gt_mask(synth, row).numpy()
    res = lift_image(image, mask, "casl-visible+bg", rec, seed=3, path=path)
    assert res.points.shape[1] == 6 and res.num_lifted > mask.size - mask.sum()
    with pytest.raises(ValueError, match="needs path="):
        lift_image(image, mask, "casl-visible", rec)


def test_images_without_truth_are_one_clear_error(synth, tmp_path):
    rec = build_reconstructor(SYNTH_TRUTH, root=synth / "Market-1501")
    img = np.zeros((64, 32, 3), np.uint8)
    # an image outside the tree, and a file inside it that the ground truth does not list
    stray = synth / "Market-1501" / "query" / "0002_c1s1_999999_00.jpg"
    outside = tmp_path / "0001_c1s1_000001_00.jpg"
    for path in (outside, stray):
        with pytest.raises(ValueError, match=f"{path.name} has no ground truth"):
            rec.reconstruct(img, None, path=str(path))
    # a dataset that is not a SynthPeople tree: named at check and at build
    tree = make_lift_tree(tmp_path / "market")
    for call in (check_reconstructor, build_reconstructor):
        with pytest.raises(FileNotFoundError, match="not inside a SynthPeople tree"):
            call(SYNTH_TRUTH, root=tree["root"])
    with pytest.raises(ValueError, match="takes no checkpoint"):
        check_reconstructor(SYNTH_TRUTH, "model.pt", root=synth)
    with pytest.raises(ValueError, match="refine_steps: 2 asks"):
        build_reconstructor(SYNTH_TRUTH, refine_steps=2, root=synth)
    check_reconstructor(SYNTH_TRUTH, root=synth / "Market-1501",
                        paths=[str(synth / r["path"]) for r in _market_rows(synth)])
    with pytest.raises(ValueError, match=f"1 image.s. have no ground truth .*{stray.name}"):
        check_reconstructor(SYNTH_TRUTH, root=synth, paths=[str(synth / _market_rows(synth)[0]["path"]),
                                                             str(stray)])


def test_lifting_job_with_true_meshes_and_its_errors(synth, tmp_path):
    """The lifting driver (in process) lifts every image of the tree with its true mesh, the
    same cloud as lift_image with that image's truth; a tree with an image the ground truth
    does not list is refused before any shard, naming the image; a worker given such an image
    stops with the same error."""
    tree = {"root": synth / "Market-1501", "masks": synth / "Market-HQ"}
    cfg = lift_cfg(tree, tmp_path, mode="casl-visible", reconstructor=SYNTH_TRUTH,
                   image_size=(32, 64), missing_mask="estimate", preview=0)
    rep = lift_dataset(cfg, run_dir=False)
    n = len(_market_rows(synth))
    assert rep.summary["images"] == n and rep.summary["rows"] == n
    got = read_shards(rep.out_dir)
    jobs, _ = plan_shards(cfg)
    job = jobs[0]
    image, mask = load_sample_image(job.paths[0], job.masks[0], cfg)
    rec = build_reconstructor(SYNTH_TRUTH, root=tree["root"])
    want = lift_image(image, mask, "casl-visible", rec, cfg.params(),
                      seed_for_key(job.keys[0], cfg.seed), path=job.paths[0])
    i = list(got.path).index(job.paths[0])
    assert np.array_equal(got.points[i], want.points)

    copy = tmp_path / "copy"
    shutil.copytree(synth, copy)
    src = copy / "Market-1501" / "query"
    stray = src / "0002_c1s1_999999_00.jpg"
    shutil.copy(sorted(src.glob("*.jpg"))[0], stray)
    bad = dataclasses.replace(cfg, root=str(copy / "Market-1501"), mask_dir=str(copy / "Market-HQ"),
                              out=str(tmp_path / "out2"))
    with pytest.raises(ValueError, match=stray.name):
        lift_dataset(bad, run_dir=False)
    assert not pathlib.Path(bad.out).exists()
    lifter = ShardLifter(bad, set_threads=False)
    [query] = [j for j in plan_shards(bad)[0] if j.split == "query"]
    with pytest.raises(ValueError, match=f"{stray.name} has no ground truth"):
        lifter.lift_job(query)
