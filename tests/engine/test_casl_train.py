"""The CASL training loop in one process, without Ray (mirror3d.engine.casl_train)."""

from __future__ import annotations

import copy
import json
import threading

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

import dataset_fixtures
from mirror3d.engine.casl_train import (CaslTrainConfig, build_optimisers, casl_records,
                                        casl_warm_up, load_casl_data, prefetched, step_settings,
                                        train_casl_loop, use_fused_adam)
from mirror3d.engine.runtime import TrainingClock
from mirror3d.jobs import resolve_config
from mirror3d.models.casl import load_casl
from mirror3d.models.casl.step import build_model
from mirror3d.utils.checkpoint import latest_checkpoint, load_checkpoint
from mirror3d.utils.config import update_config


@pytest.fixture
def hq(tmp_path):
    return dataset_fixtures.make_market_hq(tmp_path / "d", size=(32, 64))


def _cfg(root, **updates):
    """train-casl's smoke preset on the Market-HQ fixture (every image kept)."""
    cfg = resolve_config("train-casl", "smoke", overrides=[
        "--data.root", str(root), "--data.ratio_range", "0.0,1.0", "--data.clean_range", "0.0,1.0"])
    return update_config(cfg, updates) if updates else cfg


def test_smoke_preset_is_the_old_smoke_config():
    cfg = resolve_config("train-casl", "smoke")
    assert (cfg.optim.epochs, cfg.optim.batch_size, cfg.optim.checkpoint_every) == (2, 4, 1)
    assert (cfg.data.image_size, cfg.data.max_train, cfg.data.max_test) == ((32, 64), 16, 8)
    assert (cfg.loss.warm_epochs, cfg.prototype.every) == (1.0, 1)
    rest = update_config(cfg, {"optim.epochs": 30, "optim.batch_size": 16, "optim.checkpoint_every": 5,
                               "data.max_train": 0, "data.max_test": 256,
                               "loss.warm_epochs": 0.0, "prototype.every": 2})
    assert rest == CaslTrainConfig()


def test_loop_trains_checkpoints_reports_and_resumes(tmp_path, hq, capsys):
    cfg = _cfg(hq)
    run = tmp_path / "run"
    reports = []
    summary = train_casl_loop(cfg, run, report=lambda m, f: reports.append((m["epoch"], f)))
    assert summary == json.loads((run / "train_summary.json").read_text())
    assert summary["epochs_run"] == 2 and 0.0 <= summary["held_out_mask_iou"] <= 100.0
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [0, 1]
    assert all(np.isfinite(m["loss"]) for m in lines)
    # one readable progress line per epoch (rank 0), with the main loss and metric
    out = [x for x in capsys.readouterr().out.splitlines() if x.startswith("train-casl")]
    assert len(out) == 2 and out[0].startswith("train-casl  epoch 1/2")
    assert "loss" in out[0] and "train_mask_iou" in out[0] and "ETA" in out[1]
    # every epoch reported once, with the checkpoint written (checkpoint_every 1)
    assert [e for e, _ in reports] == [0, 1]
    assert [f.parent.name for _, f in reports] == ["epoch_0000", "epoch_0001"]
    # the prototype loop runs every epoch in the smoke preset until weight averaging starts
    # (the last epoch of two), and exports the template at each update
    assert sorted(p.name for p in (run / "templates").glob("*.obj")) == ["epoch_0000.obj"]
    assert "prototype_move" in lines[0] and "prototype_move" not in lines[1]
    assert (run / "template_final.obj").is_file()
    state = load_checkpoint(run, "casl")
    assert state["epoch"] == 1 and "template" in state["model"] and state["averaged"] is not None
    assert not torch.equal(state["model"]["template"], state["model"]["template_init"])
    final = load_checkpoint(run / "model_final.pt", "casl")
    assert final["metrics"]["held_out_mask_iou"] == summary["held_out_mask_iou"]
    assert load_casl(run).model.image_size == (32, 64)

    # resume for one more epoch (a run directory resumes from its newest checkpoint)
    run2 = tmp_path / "resumed"
    train_casl_loop(update_config(cfg, {"optim.epochs": 3}), run2, resume=str(run))
    lines2 = [json.loads(x) for x in (run2 / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines2] == [2]
    assert json.loads((run2 / "train_summary.json").read_text())["epochs_run"] == 3

    # a NaN loss stops training with a message naming the last good checkpoint, kept intact
    good = latest_checkpoint(run2)
    before = good.read_bytes()
    bad = update_config(cfg, {"optim.epochs": 5, "loss.iou": float("inf")})
    with pytest.raises(FloatingPointError, match=r"non-finite CASL loss at epoch 3, step \d+"
                                                 r".*last good checkpoint: .*epoch_0002"):
        train_casl_loop(bad, tmp_path / "nan", resume=str(good))
    assert good.read_bytes() == before
    assert not (tmp_path / "nan" / "model_final.pt").exists()


def test_data_checks_and_schedules(tmp_path, hq):
    train, test = casl_records(_cfg(hq))
    assert len(train) == 5 and len(test) == 2  # the fixture: train_all 5, query 2
    assert len(casl_records(_cfg(hq, **{"data.max_train": 3, "data.max_test": 1}))[0]) == 3
    with pytest.raises(ValueError, match="optim.batch_size"):
        load_casl_data(_cfg(hq, **{"optim.batch_size": 64}))
    with pytest.raises(FileNotFoundError):
        load_casl_data(_cfg(tmp_path / "missing"))
    cfg = _cfg(hq)
    s = step_settings(cfg)
    assert (s.loss, s.bias_range, s.gan, s.bg) == (cfg.loss, 0.5, True, True)
    clock = TrainingClock(2)
    assert casl_warm_up(cfg, clock, 0.0) == pytest.approx(0.01)
    assert casl_warm_up(cfg, clock, 1.0) == 1.0  # warm_epochs 1 in the smoke preset


def test_prefetched_batches_are_the_loaders_in_order_errors_raised_early_exit_stops():
    loader = torch.utils.data.DataLoader(list(range(40)), batch_size=4, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    again = torch.utils.data.DataLoader(list(range(40)), batch_size=4, shuffle=True,
                                        generator=torch.Generator().manual_seed(0))
    got = list(prefetched(loader, 2))
    assert len(got) == 10 and all(torch.equal(a, b) for a, b in zip(got, again))
    assert [x for x in prefetched(range(5), 0)] == list(range(5))  # depth 0: no thread

    def failing():
        yield 1
        raise OSError("bad image")

    it = prefetched(failing(), 2)
    assert next(it) == 1
    with pytest.raises(OSError, match="bad image"):
        next(it)
    before = threading.active_count()
    for i, _ in enumerate(prefetched(iter(range(10 ** 6)), 2)):  # leaving early
        if i == 3:
            break
    assert threading.active_count() == before  # the thread is gone


def _per_tensor_twin(opt_e, cfg):
    """Copies of ``opt_e``'s parameters (same groups and values) under the per-tensor Adam."""
    params = [p for g in opt_e.param_groups for p in g["params"]]
    ref_params = [p.detach().clone().requires_grad_() for p in params]
    ref_groups, start = [], 0
    for g in opt_e.param_groups:  # the same groups, as plain tensors of the same values
        ref_groups.append({"params": ref_params[start:start + len(g["params"])], "lr": g["lr"]})
        start += len(g["params"])
    ref = torch.optim.Adam(ref_groups, lr=cfg.optim.lr, betas=(cfg.optim.beta1, 0.999),
                           amsgrad=True, foreach=False)
    return params, ref_params, ref


def _steps(pairs, opts, gen, n=3):
    for _ in range(n):
        for p, q in pairs:
            p.grad = torch.randn(p.shape, generator=gen)
            q.grad = p.grad.clone()
        for opt in opts:
            opt.step()


def test_optimisers_update_as_the_per_tensor_adam():
    """The fused Adam of build_optimisers = the per-tensor Adam (amsgrad) up to float rounding,
    and a state saved by the foreach/per-tensor update (older checkpoints) continues fused."""
    cfg = CaslTrainConfig()
    torch.manual_seed(0)
    model, disc = build_model(update_config(cfg, {"data.image_size": (32, 64)}))
    opt_e, opt_d = build_optimisers(cfg, model, disc)
    assert all(g["amsgrad"] and g["fused"] for g in opt_e.param_groups + opt_d.param_groups)
    assert {g["lr_scale"] for g in opt_e.param_groups} == {1.0, 0.05}
    params, ref_params, ref = _per_tensor_twin(opt_e, cfg)
    start = [p.detach().clone() for p in params]
    gen = torch.Generator().manual_seed(1)
    _steps(list(zip(params, ref_params)), (opt_e, ref), gen)
    assert all(not torch.equal(p, s) for p, s in zip(params, start))  # every tensor moved
    # equal up to the fused kernel's rounding (a missed or doubled update differs by ~lr = 1e-3)
    assert max(float((p - q).abs().max()) for p, q in zip(params, ref_params)) < 1e-6
    # resume from the reference's (per-tensor) state: the fused update continues it
    for p, q in zip(params, ref_params):
        p.data.copy_(q.data)
    opt_e.load_state_dict(copy.deepcopy(ref.state_dict()))  # (its own moment tensors)
    assert not any(g["fused"] for g in opt_e.param_groups)
    use_fused_adam(opt_e)
    assert all(g["fused"] and not g["foreach"] for g in opt_e.param_groups)
    _steps(list(zip(params, ref_params)), (opt_e, ref), gen)
    assert max(float((p - q).abs().max()) for p, q in zip(params, ref_params)) < 1e-6
    assert int(opt_e.state[params[0]]["step"]) == 6


def test_training_run_logs_its_config_epochs_curve_summary_and_template_to_mlflow(tmp_path, hq):
    store = tmp_path / "mlflow"
    cfg = _cfg(hq, **{"tracking.uri": str(store), "optim.eval_every": 1})
    run = tmp_path / "casl-run"
    summary = train_casl_loop(cfg, run)
    client = MlflowClient(tracking_uri=store.as_uri())
    [tracked] = client.search_runs([client.get_experiment_by_name("train-casl").experiment_id])
    assert (tracked.info.run_name, tracked.info.status) == ("casl-run", "FINISHED")
    assert tracked.data.params["optim.epochs"] == "2"
    assert tracked.data.params["data.image_size"] == "32,64"
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    history = client.get_metric_history(tracked.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(x["epoch"], x["loss"]) for x in lines]
    assert tracked.data.metrics["held_out_mask_iou"] == summary["held_out_mask_iou"]
    # the learning-curve points (optim.eval_every) at their training steps
    curve = [json.loads(x) for x in (run / "curve.jsonl").read_text().splitlines()]
    key = next(k for k in curve[0] if k not in ("step", "epoch", "train_minutes"))
    assert [m.step for m in client.get_metric_history(tracked.info.run_id, f"curve/{key}")] == \
        [c["step"] for c in curve]
    assert {a.path for a in client.list_artifacts(tracked.info.run_id)} == {
        "config.yaml", "template_final.obj", "train_summary.json"}
