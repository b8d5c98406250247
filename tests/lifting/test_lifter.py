"""One shard in one process (mirror3d/lifting/lifter.py): decode, lift, write, count."""

import json
import pathlib

import numpy as np
import pytest
import torch
from PIL import Image

import dataset_fixtures as fx
from lifting.lift_fixtures import lift_cfg, make_lift_tree
from mirror3d.data.decode import MaskSizeError
from mirror3d.lifting.lifter import META_DIR, ShardLifter, load_sample_image
from mirror3d.lifting.plan import plan_shards
from mirror3d.lifting.reconstructors import build_reconstructor, check_reconstructor
from mirror3d.lifting.shards import read_shards
from mirror3d.models.casl import MaskError
from mirror3d.models.casl.step import build_casl_model
from mirror3d.utils.checkpoint import save_checkpoint


def test_lifter_reuses_one_reconstructor_and_writes_meta(tmp_path):
    tree = make_lift_tree(tmp_path / "data")
    cfg = lift_cfg(tree, tmp_path)
    jobs, _ = plan_shards(cfg)
    lifter = ShardLifter(cfg)
    rec = lifter.reconstructor
    train = [j for j in jobs if j.split == "train"]
    metas = [lifter.lift_job(j) for j in train]
    assert lifter.reconstructor is rec
    masked = sum(1 for j in train for m in j.masks if m)
    assert rec.calls == masked - 1  # the corrupt image never reaches the model
    assert [m["rows"] for m in metas] == [4, 4, 4, 0]
    assert metas[-1]["bad"][0][0] == tree["corrupt"] and "cannot decode" in metas[-1]["bad"][0][1]
    on_disk = json.loads((cfg.out_dir() / META_DIR / "train-00000.json").read_text())
    assert on_disk == metas[0]
    got = read_shards(cfg.out_dir() / "train-00000.parquet")
    assert list(got.path) == train[0].paths and list(got.pid) == train[0].pids


def test_load_sample_image_resizes_image_and_mask(tmp_path):
    img = fx.write_rgb(tmp_path / "a.jpg", size=(8, 16), seed=1)
    mask = np.zeros((16, 8), np.uint8)
    mask[4:12, 2:6] = 255
    mpath = fx.write_mask(tmp_path / "a.png", mask)
    cfg = lift_cfg({"root": str(tmp_path), "masks": str(tmp_path)}, tmp_path, image_size=(4, 8))
    image, m = load_sample_image(str(img), str(mpath), cfg)
    want = np.asarray(Image.open(img).convert("RGB").resize((4, 8), Image.BICUBIC))
    np.testing.assert_array_equal(image, want)
    assert m.shape == (8, 4) and m.dtype == bool and m[4, 2] and not m[0, 0]
    # a mask of another size than its image is bad input by default, never resized silently
    big = fx.write_mask(tmp_path / "big.png", np.kron(mask, np.ones((2, 2), np.uint8)))
    with pytest.raises(MaskSizeError, match=r"big.png is 16x32 but the image is 8x16"):
        load_sample_image(str(img), str(big), cfg)
    cfg.mask_mismatch = "resize"  # asked for: resized (nearest) to the image's size
    _, m2 = load_sample_image(str(img), str(big), cfg)
    np.testing.assert_array_equal(m2, m)
    image, m = load_sample_image(str(img), "", cfg)
    assert m is None and image.shape == (8, 4, 3)
    _, est = load_sample_image(str(img), "", cfg, estimate_seed=3)
    assert est.shape == (8, 4) and est.dtype == bool


class _Refining:
    def __init__(self, checkpoint, refine_steps=0):
        self.refine_steps = refine_steps

    def reconstruct(self, image, mask):
        raise NotImplementedError


def refining_factory(checkpoint, refine_steps=0):
    return _Refining(checkpoint, refine_steps)


def plain_factory(checkpoint):
    return _Refining(checkpoint)


def test_refine_steps_reach_the_casl_reconstructor(tmp_path):
    """lift's refine_steps: the casl reconstructor refines each image by N steps (the lifter
    builds it with cfg.refine_steps); factories get it when they take it; the rest refuse N > 0."""
    torch.manual_seed(0)
    cfg = {"data": {"image_size": [16, 32], "bg": False},
           "net": {"camera_channels": 4, "shape_channels": 4, "texture_channels": 4,
                   "light_channels": [4, 4, 4, 4, 4], "background_channels": 4}}
    ckpt = tmp_path / "casl.pt"
    save_checkpoint(ckpt, "casl", {"model": build_casl_model(cfg).state_dict(), "config": cfg})
    img = (np.random.default_rng(0).random((32, 16, 3)) * 255).astype(np.uint8)
    mask = np.zeros((32, 16), bool)
    mask[4:28, 4:12] = True
    plain = build_reconstructor("casl", str(ckpt))
    refining = build_reconstructor("casl", str(ckpt), refine_steps=2)
    assert plain.refine_steps == 0 and refining.refine_steps == 2
    a, b = plain.reconstruct(img, mask), refining.reconstruct(img, mask)
    assert a.refinement is None and b.refinement.steps == 2
    assert not torch.equal(a.vertices, b.vertices)
    lifter = ShardLifter(lift_cfg({"root": str(tmp_path), "masks": str(tmp_path)}, tmp_path,
                                  reconstructor="casl", checkpoint=str(ckpt), refine_steps=2),
                         set_threads=False)
    assert lifter.reconstructor.refine_steps == 2
    name = __name__
    assert build_reconstructor(f"{name}:refining_factory", "c", refine_steps=4).refine_steps == 4
    check_reconstructor(f"{name}:refining_factory", "c", 4)
    for spec in (f"{name}:plain_factory", "oracle-sphere"):
        check_reconstructor(spec, "c", 0)
        with pytest.raises(ValueError, match="refine_steps: 4 asks for test-time refinement"):
            check_reconstructor(spec, "c", 4)
        with pytest.raises(ValueError, match="refine_steps"):
            build_reconstructor(spec, "c", refine_steps=4)


class _MaskRefusing:
    """A reconstructor that refuses masks with fewer than 40 foreground pixels, like CASL's
    MaskError for a silhouette that vanishes at its input size, and fails otherwise (a bug)."""

    def reconstruct(self, image, mask):
        if mask.sum() < 40:
            raise MaskError(f"mask: no foreground pixel left ({int(mask.sum())} pixels)")
        raise ValueError("a bug in the reconstructor")


def mask_refusing_factory(checkpoint):
    return _MaskRefusing()


def test_an_unusable_mask_is_a_listed_bad_image_and_other_errors_stop_the_shard(tmp_path):
    tree = make_lift_tree(tmp_path / "data")
    job = next(j for j in plan_shards(lift_cfg(tree, tmp_path))[0] if j.split == "gallery")
    for mpath in job.masks:  # every mask of the shard down to 2 pixels (a failed estimate)
        tiny = np.zeros((16, 8), np.uint8)
        tiny[5, 3:5] = 255
        fx.write_mask(pathlib.Path(mpath), tiny)
    lifter = ShardLifter(lift_cfg(tree, tmp_path, reconstructor=f"{__name__}:mask_refusing_factory",
                                  checkpoint="c"), set_threads=False)
    meta = lifter.lift_job(job)
    assert meta["rows"] == 0 and [b[0] for b in meta["bad"]] == job.paths
    assert all("no foreground pixel left" in b[1] for b in meta["bad"])
    ok = next(j for j in plan_shards(lift_cfg(tree, tmp_path))[0] if j.split == "train")
    with pytest.raises(ValueError, match="a bug in the reconstructor"):
        lifter.lift_job(ok)
