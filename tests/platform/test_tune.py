"""The Ray Tune driver of sweeps (mirror3d.platform.tune): Tune's search space, searchers and
scheduler from a spec, and an interrupted sweep resumed on local Ray, with a crashing trial."""

from __future__ import annotations

import collections
import json

import pyarrow.parquet as pq
import pytest
import yaml
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator
from reid_fixtures import market_and_shards

from mirror3d.engine.sweep import SweepConfig, load_spec, plan_sweep
from mirror3d.jobs import PRESETS_DIR, resolve_config
from mirror3d.platform import tune as pt


def _plan(tmp_path, spec: dict, **cfg):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    c = SweepConfig(spec=str(path), out_dir=str(tmp_path / "runs"), **cfg)
    s = load_spec(c.spec, PRESETS_DIR / "sweeps")
    return plan_sweep(c, s, resolve_config(s.job, s.preset))


def test_tune_objects_follow_the_spec(tmp_path):
    plan = _plan(tmp_path, {
        "job": "train-casl", "preset": "smoke",
        "space": {"optim.lr": {"loguniform": [1e-4, 1e-2]}, "loss.iou": {"uniform": [0.5, 2]},
                  "optim.seed": {"randint": [0, 2]},
                  "data.image_size": {"choice": [[32, 64], [64, 128]]}},
        "search": {"algorithm": "optuna", "num_samples": 5},
        "metric": {"name": "mask_iou", "mode": "max"},
        "asha": {"metric": "train_mask_iou", "mode": "max", "grace_period": 1}}, seed=3,
        max_concurrent_trials=2)
    space = pt.param_space(plan)
    assert isinstance(space["optim.lr"], tune.search.sample.Float)
    assert (space["optim.seed"].lower, space["optim.seed"].upper) == (0, 3)  # high end included
    assert space["data.image_size"].categories == ["32,64", "64,128"]
    searcher = pt.search_algorithm(plan)
    assert isinstance(searcher, pt.FinalMetricOptuna)
    assert (searcher.metric, searcher.mode) == ("mask_iou", "max")
    searcher.on_trial_result("t", {"train_mask_iou": 0.5})  # a per-epoch report: not Optuna's
    asha = pt.scheduler(plan)
    assert isinstance(asha, ASHAScheduler)
    assert (asha.metric, asha._max_t) == ("train_mask_iou", plan.base.optim.epochs + 1)

    grid = _plan(tmp_path, {"job": "train-reid", "space": {"model.k": {"grid": [1, 8]}},
                            "metric": {"name": "rank1"}}, max_concurrent_trials=2)
    gen = pt.search_algorithm(grid)
    assert isinstance(gen, BasicVariantGenerator) and gen.max_concurrent == 2
    assert pt.scheduler(grid) is None
    assert pt.param_space(grid) == {"model.k": {"grid_search": [1, 8]}}


def test_interrupted_sweep_resumes_only_unfinished_trials_and_records_a_crash(
        ray_session, tmp_path, monkeypatch):
    """Four trials, two at a time: two train (1 and 3 epochs), two crash at once (missing
    data). The driver is stopped after the first trial finished; the same sweep then resumes:
    the finished and failed trials are not run again, the interrupted one trains again."""
    root, shards = market_and_shards(tmp_path)
    plan = _plan(tmp_path, {
        "job": "train-reid", "preset": "smoke",
        "space": {"data.shards": {"grid": [str(shards), str(tmp_path / "missing")]},
                  "optim.epochs": {"grid": [1, 3]}},
        "metric": {"name": "map_trapezoid", "mode": "max"}},
        max_concurrent_trials=2, name="resume",
        overrides=f"data.shards={shards} data.images={root} optim.batch_size=6 "
                  f"optim.instances=2 tracking.mlflow=false")
    monkeypatch.setenv(pt.INTERRUPT_ENV, "1")
    with pytest.raises(pt.SweepInterrupted, match="interrupted after 1 finished trial"):
        pt.run_sweep(plan)
    events = [json.loads(x) for x in (plan.sweep_dir / "events.jsonl").read_text().splitlines()]
    before = collections.Counter((e["trial"], e["event"]) for e in events)
    started = {t for t, e in before if e == "start"}
    ended = {t for t, e in before if e in ("finished", "failed")}
    monkeypatch.delenv(pt.INTERRUPT_ENV)

    out = pt.run_sweep(plan)  # the same sweep again: resumed
    events = [json.loads(x) for x in (plan.sweep_dir / "events.jsonl").read_text().splitlines()]
    after = collections.Counter((e["trial"], e["event"]) for e in events)
    rows = {r["trial_id"]: r for r in pq.read_table(plan.sweep_dir / "trials.parquet").to_pylist()}
    assert len(rows) == 4 and len(out.rows) == 4
    for trial, row in rows.items():
        # ended before the interrupt: trained once; cut off by it: trained twice; not yet
        # started: once
        assert after[(trial, "start")] == 1 + (trial in started - ended), (trial, after)
        crashed = row["data.shards"].endswith("missing")
        assert row["status"] == ("failed" if crashed else "finished"), row
        if crashed:
            assert row["error"].startswith("InputNotFound: data.shards: ") and "\n" not in row["error"]
        else:
            assert row["map_trapezoid"] is not None and row["epochs"] == row["optim.epochs"]
    long_run = next(t for t, r in rows.items() if r["optim.epochs"] == 3
                    and not r["data.shards"].endswith("missing"))
    assert after[(long_run, "start")] == 2  # it was training when the driver stopped
    assert (plan.sweep_dir / "best.yaml").exists() and out.best["status"] == "finished"
