"""The CASL evaluation (mirror3d.engine.casl_eval) on a real (tiny) trained run: metrics
recomputed by hand, FD naming, SynthPeople 3D truth against the generator's own ground truth,
pictures, data overrides. The eval-casl command line is tested in tests/jobs/test_eval_casl.py."""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

import dataset_fixtures
from mirror3d.data.datasets import ReconstructionDataset
from mirror3d.data.readers import read_recon
from mirror3d.data.synth import build_person_mesh, load_recipes, read_ground_truth
from mirror3d.metrics.image import TorchModuleExtractor, ssim
from mirror3d.metrics.reconstruction import template_baseline_chamfer
from mirror3d.engine.casl_eval import (EvalCaslOptions, apply_data_overrides, evaluate_casl,
                                       find_synth_root)
from mirror3d.engine.casl_train import CaslTrainConfig, train_casl_loop
from mirror3d.jobs import resolve_config
from mirror3d.models.casl.inference import load_casl
from mirror3d.render import look_at_camera
from mirror3d.render.mesh_io import load_mesh
from mirror3d.utils.config import ConfigError


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-epoch smoke run on the Market-HQ fixture (32×64): (run_dir, data_root)."""
    tmp = tmp_path_factory.mktemp("casl_eval")
    root = dataset_fixtures.make_market_hq(tmp, size=(32, 64))
    cfg = resolve_config("train-casl", "smoke", overrides=[
        "--data.root", str(root), "--data.ratio_range", "0.0,1.0", "--data.clean_range", "0.0,1.0",
        "--optim.average_last", "0"])
    run = tmp / "run"
    train_casl_loop(cfg, run)
    return run, root


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A tiny SynthPeople tree at 32×64: 2 ids × 4 images (test id 2 has the queries)."""
    out = tmp_path_factory.mktemp("synth") / "sp"
    return dataset_fixtures.make_synth(out, ids=2, images_per_id=4)


def _read(run):
    m = json.loads((run / "eval" / "metrics.json").read_text())
    rows = [json.loads(line) for line in (run / "eval" / "per_image.jsonl").read_text().splitlines()]
    return m, rows


def test_market_hq_metrics_by_hand(trained):
    run, root = trained
    m = evaluate_casl(run, options=EvalCaslOptions(pictures=False, batch_size=1))
    assert _read(run)[0] == m
    m, rows = _read(run)
    assert m["data"]["n_images"] == 2 == len(rows)  # the fixture's 2 query images
    assert m["synthpeople"] is None and m["pictures"] == []
    assert not list(run.glob(".eval.partial*"))
    # recompute MaskIoU and SSIM from the model and the images
    pred = load_casl(run)
    records = [r for r in read_recon("market_hq", root)[0] if r.split == "test"]
    ds = ReconstructionDataset(records, (32, 64), aug="market", bg=True, train=False)
    x = torch.stack([ds[i]["image"] for i in range(len(ds))])
    with torch.no_grad():
        out = pred.model.render(pred.model.encode(x))
    a, b = out.soft_mask.double(), x[:, 3].double()
    iou = (a * b).sum((1, 2)) / (a + b - a * b).sum((1, 2))
    assert m["mask_iou_pct"] == pytest.approx(100 * iou.mean().item(), rel=1e-4)
    mw = x[:, 3:4]
    on_white = lambda t: t * mw + (1 - mw)  # noqa: E731
    s = ssim(on_white(x[:, :3]), on_white(out.rgb))
    assert m["ssim_pct"] == pytest.approx(100 * s.mean().item(), rel=1e-4)
    assert [r["path"] for r in rows] == [str(r.image_path) for r in records]
    # Fréchet distances: named FD_randcnn (never FID), with N; novel/90 have 2 fakes per image
    fd = m["fd"]
    assert fd["metric"] == "FD_randcnn" and not fd["reports_fid"]
    assert (fd["recon"]["n_real"], fd["recon"]["n_fake"], fd["novel"]["n_fake"], fd["90"]["n_fake"]) == (2, 2, 4, 4)
    assert m["FD_randcnn_recon"] == fd["recon"]["value"] > 0
    assert not any(k.startswith("FID") for k in m)
    md = (run / "eval" / "metrics.md").read_text()
    assert "| FD_randcnn_90 |" in md and "not FID" in md and "FID_" not in md
    # the predicted-parameter summary matches the per-image rows
    assert m["predicted"]["azimuth"]["mean"] == pytest.approx(np.mean([r["azimuth"] for r in rows]))


def test_refine_steps_are_applied_and_reported(trained):
    """eval-casl's refine_steps: every image refined by N steps before scoring (MaskIoU
    recomputed with the predictor's own refinement), N stated in metrics.json and metrics.md;
    0 reports the plain prediction."""
    run, root = trained
    m = evaluate_casl(run, options=EvalCaslOptions(pictures=False, batch_size=2, refine_steps=3))
    m, rows = _read(run)
    assert m["refine"]["steps"] == 3 and m["options"]["refine_steps"] == 3
    assert m["refine"]["seconds_per_image"] > 0
    assert all(r["refine_loss_end"] <= r["refine_loss_start"] for r in rows)
    assert "**refine_steps 3**" in (run / "eval" / "metrics.md").read_text()
    pred = load_casl(run)
    records = [r for r in read_recon("market_hq", root)[0] if r.split == "test"]
    ds = ReconstructionDataset(records, (32, 64), aug="market", bg=True, train=False)
    x = torch.stack([ds[i]["image"] for i in range(len(ds))])
    with torch.no_grad():
        attrs, _ = pred.refine(x, pred.model.encode(x), 3, seed=0)
        out = pred.model.render(attrs)
    a, b = out.soft_mask.double(), x[:, 3].double()
    iou = (a * b).sum((1, 2)) / (a + b - a * b).sum((1, 2))
    assert m["mask_iou_pct"] == pytest.approx(100 * iou.mean().item(), rel=1e-4)
    plain = evaluate_casl(run, options=EvalCaslOptions(pictures=False, batch_size=2))
    assert plain["refine"] == {"steps": 0} and "refine_loss_start" not in _read(run)[1][0]
    assert "no test-time refinement, refine_steps 0" in (run / "eval" / "metrics.md").read_text()
    with pytest.raises(ValueError, match="refine_steps"):
        evaluate_casl(run, options=EvalCaslOptions(refine_steps=-1))


def test_eval_synthpeople_truth_and_pictures(trained, synth):
    run, _ = trained
    data_root = synth / "Market-HQ"
    assert find_synth_root(data_root) == synth.resolve()
    m = evaluate_casl(run, ["--data.root", str(data_root)],
                      EvalCaslOptions(samples=2, chamfer_points=300, seed=1))
    m2, rows = _read(run)
    assert m2["synthpeople"] == m["synthpeople"]
    gt = {r["path"]: r for r in read_ground_truth(synth).to_pylist() if r["tree"] == "market_hq"}
    queries = [p for p in gt if "/query/" in p]
    s = m["synthpeople"]
    assert s["n_images"] == len(queries) == len(rows) and s["n_without_truth"] == 0
    errs = []
    for r in rows:
        row = gt[pathlib.Path(r["path"]).resolve().relative_to(synth.resolve()).as_posix()]
        assert r["gt_azimuth"] == pytest.approx(row["azimuth"]) and r["gt_distance"] == pytest.approx(row["distance"])
        d = abs(r["azimuth"] - row["azimuth"]) % 360
        errs.append(min(d, 360 - d))
        assert 0 <= r["novel_view_mask_iou"] <= 1 and r["chamfer"] > 0 and r["chamfer_placed"] >= 0
    assert s["camera"]["azimuth_median_deg"] == pytest.approx(float(np.median(errs)), abs=1e-4)
    # the initial-template baseline of one image, from the generator's public mesh builder
    r0 = rows[0]
    row = gt[pathlib.Path(r0["path"]).resolve().relative_to(synth.resolve()).as_posix()]
    verts, faces, _, _ = build_person_mesh(load_recipes(synth)[row["recipe_id"]], row["pose_jitter"])
    model = load_casl(run).model
    cam = look_at_camera(torch.tensor([row["azimuth"]]), torch.tensor([row["elevation"]]),
                         torch.tensor([row["distance"]]), torch.tensor([[row["bx"], row["by"]]]))
    base = template_baseline_chamfer(model.template_init, model.faces, verts[None], faces, cam,
                                     n_points=300, seed=1)
    assert r0["chamfer_template_init"] == pytest.approx(base.item(), rel=1e-5)
    md = (run / "eval" / "metrics.md").read_text()
    assert "SynthPeople 3D truth" in md and "azimuth error" in md
    # pictures
    ev = run / "eval"
    for p in m["pictures"]:
        assert (ev / p).is_file(), p
    names = set(m["pictures"])
    assert {"reconstructions.png", "texture_swap.png", "histograms.png", "template_evolution.gif"} <= names
    gifs = sorted(p for p in names if p.startswith("turntables/"))
    objs = sorted(p for p in names if p.startswith("meshes/") and p.endswith(".obj"))
    assert len(gifs) == 2 and len(objs) == 2 and len([p for p in names if p.endswith(".glb")]) == 2
    assert sum(1 for _ in ImageSequence.Iterator(Image.open(ev / gifs[0]))) == 36
    # the template GIF: initial + one snapshot per epoch the trainer wrote
    snaps = len(list((run / "templates").glob("epoch_*.obj")))
    assert snaps == 2
    assert sum(1 for _ in ImageSequence.Iterator(Image.open(ev / "template_evolution.gif"))) == 1 + snaps
    assert load_mesh(ev / objs[0]).verts.shape == (642, 3)


class _Tiny(torch.nn.Module):
    def forward(self, x):
        return torch.cat([x.mean((2, 3)), x.std((2, 3))], 1)


def test_user_extractor_is_reported_as_fid(trained):
    run, _ = trained
    ext = TorchModuleExtractor(_Tiny(), resize=(16, 16), name="inception", reports_fid=True)
    m = evaluate_casl(run, options=EvalCaslOptions(pictures=False), extractor=ext)
    assert m["fd"]["metric"] == "FID" and m["fd"]["dims"] == 6
    assert m["FID_recon"] == m["fd"]["recon"]["value"] and "FD_randcnn_recon" not in m
    assert "| FID_novel |" in (run / "eval" / "metrics.md").read_text()


def test_data_overrides_only_change_data(trained):
    run, root = trained
    cfg = CaslTrainConfig()
    a = apply_data_overrides(cfg, ["--data.root", "/x", "--data.max_test=3"])
    b = apply_data_overrides(cfg, {"data.root": "/x", "data.max_test": 3})
    assert a == b and (a.data.root, a.data.max_test) == ("/x", 3) and a.optim == cfg.optim
    assert apply_data_overrides(cfg, []) is cfg and apply_data_overrides(cfg, {}) is cfg
    for bad in (["--optim.lr", "0.1"], {"optim.lr": 0.1}):
        with pytest.raises(ConfigError, match="only data.*"):
            apply_data_overrides(cfg, bad)
    with pytest.raises(ValueError, match=r"trained at \(32, 64\)"):
        evaluate_casl(run, {"data.image_size": (64, 128)})
    assert not list(run.glob(".eval.partial*"))


def test_a_failed_evaluation_leaves_the_earlier_one(trained, tmp_path):
    """A file that is not an image in the data: the error names it; an earlier eval/ stays."""
    run, root = trained
    run2 = tmp_path / "run2"
    run2.mkdir()
    shutil.copy(run / "model_final.pt", run2 / "model_final.pt")
    (run2 / "eval").mkdir()
    (run2 / "eval" / "marker.txt").write_text("old")
    data = tmp_path / "hq"
    shutil.copytree(root, data)
    bad = sorted((data / "pytorch" / "query").rglob("*.png"))[0]
    bad.write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match=bad.name):
        evaluate_casl(run2, {"data.root": str(data)})
    assert sorted(p.name for p in (run2 / "eval").iterdir()) == ["marker.txt"]
    assert not list(run2.glob(".eval.partial*"))
