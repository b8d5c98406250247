"""A Ray Train worker killed mid-epoch (SIGKILL, injected at a chosen training step: no timing)
with ``FailureConfig(max_failures=1)``: Ray Train restarts the worker group from the last
checkpoint it registered, and the run ends exactly as the run that was never interrupted — the
same metrics for every epoch, each epoch logged once (also the epoch logged after that
checkpoint by the killed worker), the same template and prototype-loop counters (CASL), the
same optimiser states, the same random and sampler states, the same final model.

Both runs train 4 epochs of 2 steps with a checkpoint every 2 epochs; the worker is killed in
the second step of epoch 3, once Ray holds the checkpoint of epoch 1: epoch 2 is then logged
but not checkpointed, epoch 3 half done. The uninterrupted reference is the engine's loop in this
process with the one torch thread the Ray worker gets (``ray.cpus_per_worker 1``): the same
arithmetic (tests/platform/test_multinode_train.py does the same for a lost node).
"""

from __future__ import annotations

import json
import pathlib

import pytest
import torch

import dataset_fixtures
from cluster_fixtures import torch_threads
from faults.fault_injection import killed_once_at_call, ship_to_ray
from mirror3d.engine.casl_train import train_casl_loop
from mirror3d.engine.reid_train import train_reid_loop
from mirror3d.jobs import resolve_config
from mirror3d.platform import casl as platform_casl
from mirror3d.platform import reid as platform_reid
from mirror3d.platform.train import WORKERS_FILE
from mirror3d.utils.checkpoint import load_checkpoint
from mirror3d.utils.config import update_config
from reid_fixtures import market_and_shards

EPOCHS = 4
#: the call of the per-step function that is killed: step 2 of epoch 3 (2 steps per epoch)
KILLED_CALL = 8
#: the epoch of the checkpoint Ray Train restarts from (checkpoints after epochs 1 and 3)
RESTART_EPOCH = 1
#: per-epoch values that are wall times, not training results
TIMING = {"epoch_seconds", "elapsed_seconds"}


@pytest.fixture
def fast_health_checks(monkeypatch):
    """Ray Train's controller polls its workers every 2 s by default: faster here, so that a
    reported checkpoint is registered (and the dead worker noticed) soon."""
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    ship_to_ray()


def _lines(path: pathlib.Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _assert_restarted_once_from_the_checkpoint(run: pathlib.Path, marker: pathlib.Path) -> None:
    killed = json.loads(marker.read_text())
    assert killed["call"] == KILLED_CALL and killed["ray_checkpoint"] is True
    first, second = _lines(run / WORKERS_FILE)  # two starts of the worker group, no more
    assert first["pid"] == killed["pid"] and first["resume_epoch"] is None
    assert second["pid"] != killed["pid"] and second["resume_epoch"] == RESTART_EPOCH
    assert f"resuming after epoch {RESTART_EPOCH}" in (run / "progress.log").read_text()


def _assert_same_metrics(run: pathlib.Path, ref_run: pathlib.Path) -> None:
    lines, want = _lines(run / "metrics.jsonl"), _lines(ref_run / "metrics.jsonl")
    assert [m["epoch"] for m in lines] == list(range(EPOCHS))  # each epoch once, in order
    for got, ref in zip(lines, want):
        assert set(got) == set(ref)
        for key in set(ref) - TIMING:
            assert got[key] == pytest.approx(ref[key], rel=1e-4, abs=1e-6), (got["epoch"], key)


def _assert_same_tensors(got, want, what: str) -> None:
    """Nested state dicts / lists of equal structure hold the same values."""
    if isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor) and got.shape == want.shape, what
        if want.dtype.is_floating_point:
            assert torch.allclose(got, want, rtol=1e-4, atol=1e-5), what
        else:
            assert torch.equal(got, want), what
    elif isinstance(want, dict):
        assert set(got) == set(want), what
        for k in want:
            _assert_same_tensors(got[k], want[k], f"{what}.{k}")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), what
        for i, (g, w) in enumerate(zip(got, want)):
            _assert_same_tensors(g, w, f"{what}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-4, abs=1e-6), what
    else:
        assert got == want, what


# ------------------------------------------------------------------------------ CASL
def test_casl_worker_killed_mid_epoch_resumes_as_if_never_stopped(ray_session, fast_health_checks,
                                                                  tmp_path, monkeypatch):
    hq = dataset_fixtures.make_market_hq(tmp_path / "hq", size=(32, 64)).resolve()
    cfg = update_config(resolve_config("train-casl", "smoke"), {
        "data.root": str(hq), "data.ratio_range": (0.0, 1.0), "data.clean_range": (0.0, 1.0),
        "optim.epochs": EPOCHS, "optim.batch_size": 2, "optim.checkpoint_every": 2,
        "out_dir": str(tmp_path / "runs"), "name": "killed", "tracking.mlflow": False,
        "ray.max_failures": 1, "ray.cpus_per_worker": 1.0})
    ref_run = tmp_path / "ref"
    with torch_threads(1):
        ref_summary = train_casl_loop(cfg, ref_run)

    marker = tmp_path / "killed.json"
    monkeypatch.setattr(platform_casl, "casl_worker", killed_once_at_call(
        platform_casl.casl_worker, "mirror3d.engine.casl_train", "casl_step", KILLED_CALL,
        str(marker)))
    run = platform_casl.train_casl(cfg)

    _assert_restarted_once_from_the_checkpoint(run, marker)
    _assert_same_metrics(run, ref_run)
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["steps"] == ref_summary["steps"] == 2 * EPOCHS
    assert summary["template_updates"] == ref_summary["template_updates"] > 0
    assert summary["held_out_mask_iou"] == pytest.approx(ref_summary["held_out_mask_iou"],
                                                         abs=1e-3)
    # the last checkpoint: model (template included), critic, both optimisers, the prototype
    # loop's state, the averaged model, the step count and every random state (the DataLoader's
    # shuffle generator: the sampler's position) are the uninterrupted run's
    last = f"checkpoints/epoch_{EPOCHS - 1:04d}"
    got, want = load_checkpoint(run / last, "casl"), load_checkpoint(ref_run / last, "casl")
    for key in ("model", "disc", "opt_e", "opt_d", "prototype", "averaged", "epoch", "step", "rng"):
        _assert_same_tensors(got[key], want[key], key)
    _assert_same_tensors(load_checkpoint(run / "model_final.pt", "casl")["model"],
                         load_checkpoint(ref_run / "model_final.pt", "casl")["model"], "final")


# ------------------------------------------------------------------------------ OG-Net
def test_ognet_worker_killed_mid_epoch_resumes_as_if_never_stopped(ray_session,
                                                                   fast_health_checks,
                                                                   tmp_path, monkeypatch):
    root, shards = market_and_shards(tmp_path / "data")
    # 12 training clouds of 3 identities, 3 x 2 per batch: 2 steps per epoch
    cfg = update_config(resolve_config("train-reid", "smoke"), {
        "data.shards": str(shards.resolve()), "data.images": str(root.resolve()),
        "optim.batch_size": 6, "optim.instances": 2, "optim.epochs": EPOCHS,
        "optim.checkpoint_every": 2, "out_dir": str(tmp_path / "runs"), "name": "killed",
        "tracking.mlflow": False, "ray.max_failures": 1, "ray.cpus_per_worker": 1.0})
    ref_run = tmp_path / "ref"
    with torch_threads(1):
        ref_eval = train_reid_loop(cfg, ref_run)

    marker = tmp_path / "killed.json"
    # ``_inputs`` turns a batch into the model's inputs: called once per training step
    monkeypatch.setattr(platform_reid, "reid_worker", killed_once_at_call(
        platform_reid.reid_worker, "mirror3d.engine.reid_train", "_inputs", KILLED_CALL,
        str(marker)))
    run = platform_reid.train_reid(cfg)

    _assert_restarted_once_from_the_checkpoint(run, marker)
    _assert_same_metrics(run, ref_run)
    assert [m["steps"] for m in _lines(run / "metrics.jsonl")] == [2] * EPOCHS
    last = f"checkpoints/epoch_{EPOCHS - 1:04d}"
    got, want = load_checkpoint(run / last, "reid"), load_checkpoint(ref_run / last, "reid")
    for key in ("model", "optimizer", "averaged", "epoch", "rng"):
        _assert_same_tensors(got[key], want[key], key)
    _assert_same_tensors(load_checkpoint(run / "model_final.pt", "reid")["model"],
                         load_checkpoint(ref_run / "model_final.pt", "reid")["model"], "final")
    res = json.loads((run / "eval.json").read_text())
    for key in ("map_trapezoid", "num_queries", "num_gallery"):
        assert res[key] == pytest.approx(ref_eval[key], abs=1e-6), key
