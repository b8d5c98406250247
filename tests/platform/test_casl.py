"""CASL on Ray Train (mirror3d.platform.casl): the driver's checks before Ray, training and
resuming through Ray Train workers, worker errors, and the ablation runner."""

from __future__ import annotations

import json

import pytest
import torch

from mirror3d.jobs import resolve_config
from mirror3d.models.casl import load_casl
from mirror3d.platform import train as rt
from mirror3d.platform.casl import run_ablation, train_casl
from mirror3d.utils.checkpoint import CheckpointError, load_checkpoint
from mirror3d.utils.config import load_config, update_config


@pytest.fixture
def hq(tmp_path, data_fixtures):
    return data_fixtures.make_market_hq(tmp_path / "d", size=(32, 64))


def _cfg(tmp_path, root, **extra):
    # no MLflow (~2-3 s of import and set-up per Ray Train worker; the trainers' MLflow
    # tracking through Ray Train: tests/platform/test_reid.py)
    over = ["--data.root", str(root), "--data.ratio_range", "0.0,1.0",
            "--data.clean_range", "0.0,1.0", "--out_dir", str(tmp_path / "runs"),
            "--tracking.mlflow", "false"]
    for k, v in extra.items():
        over += [f"--{k}", str(v)]
    return resolve_config("train-casl", "smoke", overrides=over)


def test_smoke_training_through_ray_train_and_resume(ray_session, tmp_path, hq):
    cfg = _cfg(tmp_path, hq, name="smoke", **{"ray.torch_threads": 1})
    run = train_casl(cfg)
    assert run == (tmp_path / "runs" / "smoke").resolve()
    (worker,) = [json.loads(x) for x in (run / "ray_workers.jsonl").read_text().splitlines()]
    assert worker["torch_threads"] == 1  # ray.torch_threads reached the worker
    saved = load_config(type(cfg), run / "config.yaml")
    assert saved.data.root == str(hq.resolve())  # workers get an absolute data root
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["epochs_run"] == 2 and 0.0 <= summary["held_out_mask_iou"] <= 100.0
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [0, 1]
    state = load_checkpoint(run, "casl")
    assert state["epoch"] == 1 and "template" in state["model"]
    assert (run / "ray").is_dir()  # Ray Train's own storage; our checkpoints are the .pt files
    assert load_casl(run).model.image_size == (32, 64)
    # resume for one more epoch, from the run directory's newest checkpoint
    run2 = train_casl(update_config(cfg, {"optim.epochs": 3, "resume": str(run), "name": "resumed"}))
    lines2 = [json.loads(x) for x in (run2 / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines2] == [2]
    # a NaN loss inside a worker comes out as the FloatingPointError naming the checkpoint
    bad = update_config(cfg, {"optim.epochs": 5, "resume": str(run2), "name": "nan",
                              "loss.iou": float("inf")})
    with pytest.raises(FloatingPointError, match=r"non-finite CASL loss at epoch 3.*epoch_0002"):
        train_casl(bad)
    assert not (run.parent / "nan" / "model_final.pt").exists()


def test_bad_inputs_fail_before_any_run(tmp_path, hq):
    with pytest.raises(FileNotFoundError):
        train_casl(_cfg(tmp_path, tmp_path / "missing"))
    cfg = update_config(_cfg(tmp_path, hq), {"optim.batch_size": 64})
    with pytest.raises(ValueError, match="optim.batch_size"):
        train_casl(cfg)
    torch.save({"x": 1}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError):
        train_casl(update_config(_cfg(tmp_path, hq), {"resume": str(tmp_path / "foreign.pt")}))
    assert not (tmp_path / "runs").exists()


def test_worker_errors_come_out_of_ray_trains_wrappers():
    class RayTaskError(Exception):  # the shape of ray.exceptions.RayTaskError
        def __init__(self, cause):
            super().__init__(f"wrapped: {cause}")
            self.cause = cause

    class WorkerGroupError(Exception):
        def __init__(self, failures):
            super().__init__("Training failed due to worker errors: ...")
            self.worker_failures = failures

    e = rt.worker_error(WorkerGroupError({1: RayTaskError(ValueError("x")),
                                          0: RayTaskError(FloatingPointError("nan at step 3"))}))
    assert type(e) is FloatingPointError and str(e) == "nan at step 3"
    e = rt.worker_error(WorkerGroupError({0: RayTaskError(OSError("disk full"))}))
    assert isinstance(e, rt.TrainingFailed) and "worker 0: OSError: disk full" in str(e)
    plain = RuntimeError("controller")
    assert rt.worker_error(plain) is plain


def test_smoke_ablation_trains_evaluates_and_reuses(ray_session, tmp_path, data_fixtures):
    hq = data_fixtures.make_market_hq(tmp_path / "d", size=(32, 64))
    cfg = resolve_config("ablate-casl", "smoke", overrides=[
        "--minutes", "0", "--variants", "full,no-encoder-loop",
        "--out_dir", str(tmp_path / "abl"), "--name", "t", "--eval_samples", "1",
        "--base.data.root", str(hq), "--base.data.ratio_range", "0.0,1.0",
        "--base.data.clean_range", "0.0,1.0", "--base.tracking.mlflow", "false"])
    assert cfg.base.optim.epochs == 2 and cfg.eval_chamfer_points == 1000  # the smoke presets
    md = run_ablation(cfg, progress=False)
    data = json.loads((md.parent / "ablation.json").read_text())
    assert [r["variant"] for r in data["rows"]] == ["full", "no-encoder-loop"]
    for r in data["rows"]:
        assert 0.0 <= r["mask_iou"] <= 100.0 and r["epochs"] == 2
        ev = json.loads((md.parent / r["variant"] / "eval" / "metrics.json").read_text())
        assert ev["options"]["chamfer_points"] == 1000 and ev["options"]["samples"] == 1
    saved = load_config(type(cfg.base), md.parent / "no-encoder-loop" / "config.yaml", [])
    assert saved.encoder_loop.schedule == "all"
    text = md.read_text()
    assert "| no-encoder-loop |" in text and "better front view" in text
    stamp = (md.parent / "full" / "model_final.pt").stat().st_mtime_ns
    run_ablation(cfg, progress=False)  # finished variants are reused, not retrained
    assert (md.parent / "full" / "model_final.pt").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="variants"):
        run_ablation(update_config(cfg, {"variants": ()}))
