"""Job ``eval-casl`` through the CLI (mirror3d/jobs/eval_casl.py): positional RUN_DIR, options
in snake_case, ``data.*`` overrides of the run's data, its presets, one-line errors. The
evaluation itself is tested in tests/engine/test_casl_eval.py."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import dataset_fixtures
from mirror3d.cli import main
from mirror3d.engine.casl_train import CaslDataConfig, CaslTrainConfig
from mirror3d.jobs import presets, resolve_config
from mirror3d.jobs.eval_casl import CaslDataOverrides, EvalCaslConfig
from mirror3d.models.casl.step import build_model
from mirror3d.utils.checkpoint import save_checkpoint
from mirror3d.utils.config import config_to_dict, update_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(run dir with an untrained 32x64 model_final.pt trained on a Market-HQ fixture, data root)."""
    tmp = tmp_path_factory.mktemp("eval_job")
    root = dataset_fixtures.make_market_hq(tmp, size=(32, 64))
    cfg = update_config(CaslTrainConfig(), {"data.root": str(root), "data.image_size": (32, 64)})
    torch.manual_seed(0)
    model, _ = build_model(cfg)
    run = tmp / "run"
    save_checkpoint(run / "model_final.pt", "casl", {"model": model.state_dict(),
                                                     "config": config_to_dict(cfg)})
    return run, root


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("mirror3d eval-casl: error:")
    return err[0]


def test_config_presets_and_data_overrides_section():
    assert presets("eval-casl") == ["default", "smoke"]
    assert resolve_config("eval-casl") == EvalCaslConfig()
    smoke = resolve_config("eval-casl", "smoke")
    assert (smoke.max_images, smoke.samples, smoke.chamfer_points) == (4, 1, 1000)
    # the data section has exactly the run's data keys, every one unset by default
    assert [f.name for f in dataclasses.fields(CaslDataOverrides)] == \
        [f.name for f in dataclasses.fields(CaslDataConfig)]
    assert CaslDataOverrides().as_updates() == {}
    cfg = resolve_config("eval-casl", overrides=["--run_dir", "runs/x", "--data.root", "/d",
                                                 "--data.bg", "false"])
    assert cfg.data.as_updates() == {"data.root": "/d", "data.bg": False} and cfg.run_dir == "runs/x"
    o = cfg.options()
    assert (o.pictures, o.max_images, o.chamfer_points) == (True, 0, 10000)


def test_eval_cli_prints_metrics_and_writes_eval(run, capsys):
    path, root = run
    assert main(["eval-casl", str(path), "--pictures", "false", "--batch_size", "1"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    m = json.loads((path / "eval" / "metrics.json").read_text())
    fd = m["fd"]
    assert out[0] == (f"eval-casl: N=2 MaskIoU {m['mask_iou_pct']:.1f}% SSIM {m['ssim_pct']:.1f}% "
                      f"FD_randcnn recon/novel/90 {fd['recon']['value']:.2f}/"
                      f"{fd['novel']['value']:.2f}/{fd['90']['value']:.2f}")
    assert out[1] == f"eval-casl: wrote {path.resolve()}/eval"
    assert m["pictures"] == [] and m["options"]["batch_size"] == 1
    # --smoke: the preset's few images; data overrides before RUN_DIR
    assert main(["eval-casl", "--smoke", "--data.max_test", "0", str(path)]) == 0
    m = json.loads((path / "eval" / "metrics.json").read_text())
    assert m["options"]["max_images"] == 4 and m["options"]["samples"] == 1 and m["pictures"]


def test_bad_inputs_fail_with_one_line_and_no_output(run, tmp_path, capsys):
    path, root = run
    assert main(["eval-casl"]) == 2
    assert "run_dir: required" in _one_error_line(capsys)
    assert main(["eval-casl", str(tmp_path / "missing")]) == 1
    assert "does not exist" in _one_error_line(capsys)

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    torch.save({"format": "mirror3d/reid", "model": {}}, foreign / "model_final.pt")
    assert main(["eval-casl", str(foreign)]) == 1
    assert "mirror3d/casl" in _one_error_line(capsys)
    (foreign / "model_final.pt").write_bytes(b"not a checkpoint")
    assert main(["eval-casl", str(foreign)]) == 1
    assert "cannot be read" in _one_error_line(capsys)
    assert not (foreign / "eval").exists()

    # another data root that does not exist: a data error (exit 1)
    assert main(["eval-casl", "--data.root", str(tmp_path / "nowhere"), str(path)]) == 1
    assert "nowhere" in _one_error_line(capsys)
    # only the run's data can be changed: other keys are not options of eval-casl
    assert main(["eval-casl", str(path), "--optim.lr", "0.1"]) == 2
    assert "optim.lr" in _one_error_line(capsys)
    assert main(["eval-casl", str(path), "--data.reader", "nope"]) == 2
    assert "data.reader" in _one_error_line(capsys)


def test_refine_steps_option(run, capsys):
    """--refine_steps N reaches evaluate_casl; the result line and metrics say which N."""
    path, _ = run
    assert resolve_config("eval-casl").refine_steps == 0
    cfg = resolve_config("eval-casl", overrides=["--run_dir", str(path), "--refine_steps", "2"])
    assert cfg.options().refine_steps == 2
    assert main(["eval-casl", str(path), "--pictures", "false", "--refine_steps", "2"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert "(refine_steps 2)" in out[0]
    m = json.loads((path / "eval" / "metrics.json").read_text())
    assert m["refine"]["steps"] == 2 and m["options"]["refine_steps"] == 2
    assert main(["eval-casl", str(path), "--refine_steps", "-1"]) == 2
    assert "refine_steps" in _one_error_line(capsys)
