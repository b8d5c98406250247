"""Jobs ``train-reid`` and ``eval-reid`` through the CLI (mirror3d/jobs/train_reid.py,
mirror3d/jobs/eval_reid.py), and their presets in configs/train-reid/ and configs/eval-reid/."""

import json

import pytest
import yaml

import mirror3d.jobs.train_reid as job
from mirror3d.cli import main
from mirror3d.engine.reid_train import ReidTrainConfig, train_reid_loop
from mirror3d.jobs import presets, resolve_config
from reid_fixtures import market_and_shards


def test_presets_default_is_the_config_smoke_is_tiny_paper_is_og_net(capsys):
    assert presets("train-reid") == ["default", "paper", "smoke"]
    assert resolve_config("train-reid") == ReidTrainConfig()
    smoke = resolve_config("train-reid", "smoke")
    assert (smoke.optim.epochs, smoke.optim.batch_size, smoke.optim.instances,
            smoke.optim.warm_epochs, smoke.optim.checkpoint_every) == (2, 8, 2, 1, 1)
    assert (smoke.data.num_points, smoke.model.init_points, smoke.model.k) == (256, 64, 8)
    assert (smoke.eval_batch_size, smoke.ranked_queries) == (16, 2)
    paper = resolve_config("train-reid", "paper")
    assert (paper.model.name, paper.model.k, paper.model.init_points) == ("og-net", 20, 768)
    assert (paper.data.num_points, paper.optim.batch_size, paper.optim.lr) == (4096, 36, 1e-3)
    assert (paper.optim.epochs, paper.optim.warm_epochs, paper.optim.average_from) == (1500, 10, 0.9)
    assert main(["config", "show", "train-reid", "--smoke"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["optim"]["epochs"] == 2 and shown["ray"]["num_workers"] == 1


def test_train_reid_prints_r1_map_and_the_run_dir(tmp_path, monkeypatch, capsys):
    """The job's wiring and result line; the training runs in this process (the Ray driver is
    tested in tests/platform/test_reid.py), then ``eval-reid`` evaluates the run."""
    root, shards = market_and_shards(tmp_path)

    def in_process(cfg):
        run = tmp_path / "runs" / cfg.name
        train_reid_loop(cfg, run)
        return run

    monkeypatch.setattr(job, "train_reid", in_process)
    args = ["train-reid", "--smoke", "--data.shards", str(shards), "--data.images", str(root),
            "--out_dir", str(tmp_path / "runs"), "--name", "r1", "--optim.batch_size", "6"]
    assert main(args) == 0
    out, counts = capsys.readouterr().out.strip().splitlines()[-2:]
    res = json.loads((tmp_path / "runs" / "r1" / "eval.json").read_text())
    assert out == (f"train-reid: og-net-small R1 {100 * res['rank1']:.2f} "
                   f"mAP {100 * res['map_trapezoid']:.2f} (trapezoid) -> {tmp_path / 'runs' / 'r1'}")
    # the job ends with its counts: every sample of the shards is used, per split
    n = json.loads((tmp_path / "runs" / "r1" / "input.json").read_text())["splits"]
    total = n["train"] + n["query"] + n["gallery"]
    assert n["gallery"] == res["num_gallery"] and n["query"] == res["num_queries"]
    assert counts == (f"train-reid: read {total} samples, used {total}, skipped 0 (train "
                      f"{n['train']}, query {n['query']}, gallery {n['gallery']})")

    # eval-reid RUN_DIR: the same numbers on the same split, into RUN_DIR/eval
    assert main(["eval-reid", str(tmp_path / "runs" / "r1")]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again == json.loads((tmp_path / "runs" / "r1" / "eval" / "eval.json").read_text())
    assert again["rank1"] == pytest.approx(res["rank1"]) and again["num_gallery"] == 11
    assert (tmp_path / "runs" / "r1" / "eval" / "ranked.png").exists()

    # cross-dataset: other shards (here: a second lifted tree), --out, the model file itself
    _, other = market_and_shards(tmp_path / "b")
    assert main(["eval-reid", str(tmp_path / "runs" / "r1" / "model_final.pt"),
                 "--shards", str(other), "--out", str(tmp_path / "ab")]) == 0
    assert json.loads(capsys.readouterr().out)["num_queries"] == 4
    assert (tmp_path / "ab" / "eval.json").exists()

    # test point densities of a finished run (OG-Net Fig. 8): 1.0 is the plain evaluation
    assert main(["eval-reid", str(tmp_path / "runs" / "r1"), "--densities", "0.25,0.5,1.0",
                 "--out", str(tmp_path / "dens")]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev == json.loads((tmp_path / "dens" / "eval.json").read_text())
    assert {d: v["num_points"] for d, v in ev["densities"].items()} == \
        {"0.25": 64, "0.5": 128, "1.0": 256}
    assert ev["densities"]["1.0"]["rank1"] == ev["rank1"] == again["rank1"]
    assert ev["densities"]["1.0"]["map_trapezoid"] == ev["map_trapezoid"]
    # twice the points the run trained with, at 50 %: the training count again
    assert main(["eval-reid", str(tmp_path / "runs" / "r1"), "--num_points", "512",
                 "--densities", "0.5", "--out", str(tmp_path / "dens2")]) == 0
    ev2 = json.loads(capsys.readouterr().out)
    assert ev2["densities"]["0.5"]["num_points"] == 256


def test_bad_densities_are_one_error_line_before_anything_runs(tmp_path, capsys):
    args = ["train-reid", "--smoke", "--eval_densities", "0.2", "--out_dir", str(tmp_path / "r")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["mirror3d train-reid: error: eval_densities: 0.2 of data.num_points 256 leaves "
                   "51 points, fewer than model.init_points 64 (OG-Net's first FPS level); use a "
                   "density >= 0.25"]
    assert main(["eval-reid", str(tmp_path), "--densities", "0.5,0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["mirror3d eval-reid: error: densities: every element must be in (0, 1], "
                   "got 0.5,0"]
    assert not (tmp_path / "r").exists()


def test_eval_reid_needs_a_run_dir_and_a_real_one(tmp_path, capsys):
    assert presets("eval-reid") == ["default", "smoke"]
    assert main(["eval-reid"]) == 2
    assert "run_dir: required" in capsys.readouterr().err
    assert main(["eval-reid", str(tmp_path / "missing")]) == 1
    assert "error:" in capsys.readouterr().err
