"""Job ``train-casl`` through the CLI (mirror3d/jobs/train_casl.py) and its presets in
configs/train-casl/."""

from __future__ import annotations

import json

import yaml

import dataset_fixtures
import mirror3d.jobs.train_casl as job
from mirror3d.cli import main
from mirror3d.engine.casl_train import CaslTrainConfig, train_casl_loop
from mirror3d.jobs import presets, resolve_config


def test_presets_default_smoke_paper(capsys):
    assert presets("train-casl") == ["default", "paper", "smoke"]
    assert resolve_config("train-casl") == CaslTrainConfig()
    smoke = resolve_config("train-casl", "smoke")
    assert (smoke.optim.epochs, smoke.data.image_size, smoke.data.max_train) == (2, (32, 64), 16)
    paper = resolve_config("train-casl", "paper")
    assert (paper.optim.lr, paper.optim.batch_size, paper.optim.epochs) == (5e-5, 48, 600)
    assert paper.net.shape_backbone_lr_scale == 0.05 and paper.data.image_size == (64, 128)
    assert paper.net.disc_channels == 16 and paper.ray.use_gpu
    assert main(["config", "show", "train-casl", "--smoke"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["optim"]["epochs"] == 2 and shown["data"]["image_size"] == [32, 64]


def test_train_casl_prints_mask_iou_and_the_run_dir(tmp_path, monkeypatch, capsys):
    """The job's wiring and result line; the training runs in this process (the Ray driver is
    tested in tests/platform/test_casl.py)."""
    root = dataset_fixtures.make_market_hq(tmp_path / "d", size=(32, 64))
    seen = []

    def in_process(cfg):
        seen.append(cfg)
        run = tmp_path / "runs" / cfg.name
        train_casl_loop(cfg, run)
        return run

    monkeypatch.setattr(job, "train_casl", in_process)
    assert main(["train-casl", "--smoke", "--data.root", str(root), "--data.ratio_range", "0.0,1.0",
                 "--data.clean_range", "0.0,1.0", "--name", "cli", "--optim.epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert seen[0].optim.epochs == 1 and seen[0].data.image_size == (32, 64)  # smoke + option
    summary = json.loads((tmp_path / "runs" / "cli" / "train_summary.json").read_text())
    result, counts = out.strip().splitlines()[-2:]
    assert result == (f"train-casl: held-out mask IoU {summary['held_out_mask_iou']:.1f}% after 1 "
                      f"epochs -> {tmp_path / 'runs' / 'cli'}")
    # the job ends with its counts (the fixture's 5 training images all have masks)
    assert counts == (f"train-casl: read 5 images, used 5, skipped 0 (skipped images with "
                      f"reasons: {tmp_path / 'runs' / 'cli'}/skipped.tsv)")
    assert (tmp_path / "runs" / "cli" / "skipped.tsv").read_text() == ""
    assert "train-casl  epoch 1/1" in out  # the loop's progress line


def test_bad_data_is_one_error_line(tmp_path, capsys):
    assert main(["train-casl", "--data.root", str(tmp_path / "missing"),
                 "--out_dir", str(tmp_path / "runs")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mirror3d train-casl: error:")
    assert not (tmp_path / "runs").exists()
    assert main(["train-casl", "--optim.epochs", "0"]) == 2
    assert "optim.epochs" in capsys.readouterr().err
