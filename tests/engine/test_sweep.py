"""Sweeps without Ray: the spec format and its validation (mirror3d.engine.sweep) and the
outputs (mirror3d.engine.sweep_report): trials table, best.yaml, the paper's claims, curves,
summary.md."""

from __future__ import annotations

import json
import math

import pyarrow.parquet as pq
import pytest
import yaml
from reid_fixtures import market_and_shards

from mirror3d.engine.reid_train import train_reid_loop
from mirror3d.engine.sweep import (SWEEP_JOBS, SweepConfig, casl_final_metrics, finished_trial,
                                   load_spec, plan_sweep, reid_density_evaluation,
                                   reid_final_metrics, trial_config, trial_settings, write_trial)
from mirror3d.engine.sweep_report import (TrialOutcome, best_row, check_claims, trial_rows,
                                          write_outputs)
from mirror3d.jobs import PRESETS_DIR, resolve_config
from mirror3d.utils.config import ConfigError, load_config, save_config, update_config

SWEEPS = PRESETS_DIR / "sweeps"
READY = ("ognet_k", "ognet_density", "ognet_nonlocal", "casl_schedules", "casl_learning")


def make_plan(tmp_path, spec, variant="full", **cfg):
    """A plan from a spec name or a mapping (written to tmp_path/<name>.yaml)."""
    if isinstance(spec, dict):
        path = tmp_path / "spec.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        spec = str(path)
    c = SweepConfig(spec=spec, variant=variant, out_dir=str(tmp_path / "runs"), **cfg)
    s = load_spec(c.spec, SWEEPS, c.variant)
    return plan_sweep(c, s, resolve_config(s.job, s.preset))


def reid_spec(**extra):
    spec = {"job": "train-reid", "preset": "smoke", "space": {"model.k": {"grid": [1, 8]}},
            "metric": {"name": "map_trapezoid", "mode": "max"}}
    spec.update(extra)
    return spec


# ------------------------------------------------------------------------------ the ready specs
@pytest.mark.parametrize("name", READY)
@pytest.mark.parametrize("variant", ["full", "smoke"])
def test_ready_specs_check_against_their_jobs(tmp_path, name, variant):
    plan = make_plan(tmp_path, name, variant)
    assert plan.total_trials >= 1 and plan.spec.keys
    assert plan.sweep_dir == (tmp_path / "runs" / (name + ("-smoke" if variant == "smoke" else ""))).resolve()
    # every trial's resources: one CPU for its one Ray Train worker (the auto share, 0, would
    # give each of two concurrent trials all CPUs)
    assert plan.base.ray.cpus_per_worker == 1.0 and plan.base.ray.num_workers == 1
    if variant == "smoke":
        assert plan.total_trials <= 3 and plan.trial_minutes == 0.0
    else:
        assert plan.trial_minutes > 0  # CPU-budgeted trials


def test_the_k_sweep_is_the_papers_figure_7(tmp_path):
    plan = make_plan(tmp_path, "ognet_k")
    (dim,) = plan.spec.space
    assert (dim.key, dim.kind, dim.values) == ("model.k", "grid", (1, 4, 8, 16, 20, 32, 64))
    assert plan.base.data.shards.endswith("data/lifted/casl-visible")  # absolute for the trials
    (claim,) = plan.spec.claims
    assert (claim.a.where, claim.b.where) == ((("model.k", 20),), (("model.k", 1),))
    assert plan.base.optim.max_minutes == plan.trial_minutes == 10.0


def test_the_density_sweep_tests_at_fractions_of_the_whole_cloud(tmp_path):
    plan = make_plan(tmp_path, "ognet_density")
    assert plan.evaluation == {"num_points": 8192, "densities": [0.25, 0.5, 1.0]}
    assert plan.spec.space[0].values == (4096, 2048, 8192)
    assert plan.spec.metric == "densities/0.5/map_trapezoid"
    assert [c.kind for c in plan.spec.claims] == ["close", "close"]


def test_smoke_section_replaces_keys_and_merges_fixed(tmp_path):
    spec = reid_spec(fixed={"optim.lr": 0.002, "model.init_points": 32},
                     smoke={"fixed": {"optim.lr": 0.003}, "space": {"model.k": {"grid": [2]}}})
    full, smoke = make_plan(tmp_path, spec), make_plan(tmp_path, spec, "smoke")
    assert full.spec.space[0].values == (1, 8) and smoke.spec.space[0].values == (2,)
    assert (full.base.optim.lr, smoke.base.optim.lr) == (0.002, 0.003)
    assert smoke.base.model.init_points == 32
    assert smoke.name == "spec-smoke"


def test_values_are_normalised_as_the_config_holds_them(tmp_path):
    plan = make_plan(tmp_path, {
        "job": "train-casl", "space": {"data.image_size": {"choice": [[32, 64], "64,128"]},
                                       "optim.lr": {"loguniform": ["1e-4", 1e-3]},
                                       "optim.seed": {"randint": [0, 3]}},
        "search": {"algorithm": "random", "num_samples": 4},
        "metric": {"name": "mask_iou"}})
    image, lr, seed = plan.spec.space
    assert image.values == ("32,64", "64,128")  # tuples as override text: Optuna samples them
    assert (lr.low, lr.high) == (1e-4, 1e-3) and (seed.low, seed.high) == (0, 3)
    cfg = trial_config(plan, "t1", {"data.image_size": "64,128", "optim.lr": 5e-4, "optim.seed": 2})
    assert cfg.data.image_size == (64, 128) and cfg.optim.lr == 5e-4
    assert (cfg.out_dir, cfg.name) == (str(plan.trials_dir), "t1")
    assert plan.total_trials == 4


# ------------------------------------------------------------------------------ bad specs
BAD = [
    (reid_spec(space={"model.kk": {"grid": [1]}}),
     "sweep spec spec: space: unknown config key 'model.kk'; did you mean: model.k?"),
    (reid_spec(space={"model.k": {"choice": []}}, search={"algorithm": "random"}),
     "sweep spec spec: space.model.k: choice: empty list; expected at least one value"),
    (reid_spec(space={"optim.lr": {"uniform": [0.01, 0.001]}}, search={"algorithm": "random"}),
     "sweep spec spec: space.optim.lr: uniform: low 0.01 > high 0.001"),
    (reid_spec(space={"optim.lr": {"loguniform": [0, 0.001]}}, search={"algorithm": "random"}),
     "sweep spec spec: space.optim.lr: loguniform: low must be > 0, got 0"),
    (reid_spec(space={"optim.lr": {"normal": [0, 1]}}),
     "sweep spec spec: space.optim.lr: unknown search kind 'normal'"),
    (reid_spec(space={"model.k": {"grid": [1, 200]}}),
     "sweep spec spec: space: model.k: must be in [1, 128], got 200"),
    (reid_spec(space={"model.last_graph": {"grid": ["position", "colour"]}}),
     "sweep spec spec: space: model.last_graph: expected one of 'position+appearance', "
     "'position', got 'colour'"),
    (reid_spec(space={"optim.lr": {"uniform": [0.5, 20.0]}}, search={"algorithm": "random"}),
     "sweep spec spec: space: optim.lr: must be in [0.0, 10.0], got 20.0"),
    (reid_spec(space={"model.k": {"uniform": [1, 8]}}, search={"algorithm": "random"}),
     "sweep spec spec: space.model.k: uniform: needs a float field, model.k is int"),
    (reid_spec(space={"optim.lr": {"uniform": [0.001, 0.01]}}),
     "the grid search takes only grid dimensions"),
    (reid_spec(search={"algorithm": "optuna"}), "Optuna samples, it does not take grids"),
    (reid_spec(space={"ray.num_workers": {"grid": [1, 2]}}), "ray.num_workers: set by the sweep"),
    (reid_spec(fixed={"out_dir": "x"}), "fixed: out_dir: set by the sweep"),
    (reid_spec(space={"model": {"grid": [1]}}), "space: model: is a config section"),
    (reid_spec(metric={"name": "map"}), "metric.name: unknown metric 'map'"),
    (reid_spec(asha={"metric": "map_trapezoid", "mode": "max"}),
     "asha.metric: unknown metric 'map_trapezoid'"),
    (reid_spec(asha={"metric": "loss", "reduction_factor": 1}), "asha.reduction_factor: expected > 1"),
    (reid_spec(job="train-lol"), "job: expected one of train-reid, train-casl"),
    (reid_spec(serach={"algorithm": "grid"}), "unknown key 'serach'; did you mean: search?"),
    (reid_spec(paper={"claims": [{"a": {"model.kk": 1}, "b": {"model.k": 8}}]}),
     "paper.claims[0].a: model.kk: not a searched key (model.k)"),
    (reid_spec(evaluation={"num_points": 512, "densities": [0.01]}),
     "evaluation: eval_densities: 0.01 of data.num_points 512 leaves 5 points"),
    (reid_spec(), None),  # the good one, for contrast
]


@pytest.mark.parametrize("spec, message", BAD)
def test_bad_specs_are_one_line_errors_naming_the_key(tmp_path, spec, message):
    if message is None:
        make_plan(tmp_path, spec)
        return
    with pytest.raises(ConfigError) as info:
        make_plan(tmp_path, spec)
    text = str(info.value)
    assert message in text and "\n" not in text


def test_bad_sweep_options_and_missing_specs(tmp_path):
    with pytest.raises(ConfigError, match="spec: required"):
        make_plan(tmp_path, "")
    with pytest.raises(ConfigError, match="no sweep spec 'ognet_kk'.*did you mean: ognet_k"):
        make_plan(tmp_path, "ognet_kk")
    with pytest.raises(ConfigError, match="overrides: unknown config key 'model.kk'"):
        make_plan(tmp_path, reid_spec(), overrides="model.kk=3")
    with pytest.raises(ConfigError, match="overrides: ray.cpus_per_worker: not a key"):
        make_plan(tmp_path, reid_spec(), overrides="ray.cpus_per_worker=2")
    with pytest.raises(ConfigError, match="smoke: the spec has no smoke section"):
        make_plan(tmp_path, reid_spec(), variant="smoke")
    plan = make_plan(tmp_path, reid_spec(), overrides="optim.epochs=3 data.image_size=32,64",
                     cpus_per_trial=2.0, gpus_per_trial=2, trial_minutes=1.5)
    assert plan.base.optim.epochs == 3 and plan.base.data.image_size == (32, 64)
    assert (plan.base.ray.num_workers, plan.base.ray.use_gpu, plan.base.ray.cpus_per_worker) == (2, True, 1.0)
    assert plan.base.optim.max_minutes == 1.5


# ------------------------------------------------------------------------------ trials
def test_trial_records_are_reused_only_with_the_same_settings(tmp_path):
    plan = make_plan(tmp_path, reid_spec())
    cfg = trial_config(plan, "t0", {"model.k": 8})
    assert cfg.model.k == 8 and cfg.tracking.run_name == "t0"
    assert cfg.tracking.experiment == "sweep-spec"
    run = plan.trial_dir("t0")
    assert finished_trial(run, cfg) is None
    write_trial(run, {"status": "finished", "settings": trial_settings(cfg), "report": {}})
    assert finished_trial(run, cfg) is not None
    # resources, run directory and tracking are not settings; the searched values are
    assert finished_trial(run, update_config(cfg, {"ray.cpus_per_worker": 2.0, "name": "x"})) is not None
    assert finished_trial(run, update_config(cfg, {"model.k": 1})) is None
    write_trial(run, {"status": "failed", "settings": trial_settings(cfg)})
    assert finished_trial(run, cfg) is None


def test_final_metrics_of_both_jobs():
    ev = {"model": "og-net-small", "rank1": 0.5, "map_trapezoid": 0.25, "rank5": 1.0,
          "densities": {"0.5": {"rank1": 0.4, "map_trapezoid": 0.2}}}
    got = reid_final_metrics(ev)
    assert got["rank1"] == 0.5 and got["densities/0.5/rank1"] == 0.4 and "model" not in got
    extra = {"densities": {"0.25": {"rank1": 0.1}, "1.0": {"rank1": 0.3}}}
    got = reid_final_metrics(ev, extra)
    assert "densities/0.5/rank1" not in got and got["densities/1.0/rank1"] == 0.3
    casl = {"mask_iou_pct": 60.0, "ssim_pct": 70.0, "fd": {"recon": {"value": 1.5}, "novel": {},
                                                           "90": {"value": None}},
            "synthpeople": {"chamfer_l2": {"prediction_mean": 0.01, "template_init_mean": 0.04},
                            "camera": {"azimuth_median_deg": 12.0},
                            "novel_view_mask_iou_pct": 40.0}}
    got = casl_final_metrics(casl, {"held_out_mask_iou": 55.0})
    assert got == {"mask_iou": 60.0, "ssim": 70.0, "fd_recon": 1.5, "chamfer": 0.01,
                   "chamfer_ratio": 0.25, "azimuth_median_deg": 12.0,
                   "novel_view_mask_iou": 40.0, "held_out_mask_iou": 55.0}
    assert set(got) <= set(SWEEP_JOBS["train-casl"].final_metrics)
    assert casl_final_metrics({"mask_iou_pct": 1.0}, {}) == {"mask_iou": 1.0}  # no 3D truth


def test_the_density_evaluation_tests_at_fractions_of_the_evaluation_cloud(tmp_path):
    """What an ognet_density trial adds after training (in this process here): the trained
    model evaluated at evaluation.num_points per test cloud, thinned to each density."""
    root, shards = market_and_shards(tmp_path)
    plan = make_plan(tmp_path, "ognet_density", "smoke", overrides=(
        f"data.shards={shards} data.images={root} optim.batch_size=6 optim.instances=2 "
        f"optim.epochs=1 tracking.mlflow=false"))
    cfg = trial_config(plan, "t0", {"data.num_points": 256})
    run = plan.trial_dir("t0")
    evaluation = train_reid_loop(cfg, run)
    extra = reid_density_evaluation(run, plan.evaluation["num_points"], plan.evaluation["densities"])
    assert [v["num_points"] for v in extra["densities"].values()] == [128, 256, 512]
    assert json.loads((run / "eval" / "eval.json").read_text()) == extra
    final = reid_final_metrics(evaluation, extra)
    assert final["rank1"] == evaluation["rank1"]  # at the 256 training points
    assert {f"densities/{d}/map_trapezoid" for d in ("0.25", "0.5", "1.0")} <= set(final)
    assert plan.spec.metric in final and all(0.0 <= v <= 1.0 for v in final.values())


# ------------------------------------------------------------------------------ outputs
def _finished(plan, trial_id, params, final, epochs=2):
    run = plan.trial_dir(trial_id)
    cfg = trial_config(plan, trial_id, params)
    run.mkdir(parents=True)
    save_config(cfg, run / "config.yaml")
    (run / "metrics.jsonl").write_text("".join(
        json.dumps({"epoch": e, "loss": 1.0 / (e + 1), "steps": 3}) + "\n" for e in range(epochs)))
    (run / "model_final.pt").write_bytes(b"x")
    write_trial(run, {"trial_id": trial_id, "status": "finished", "params": params,
                      "settings": trial_settings(cfg), "final": final, "report": final,
                      "wall_s": 90.0, "error": None})


def test_outputs_table_best_claims_curves_and_summary(tmp_path):
    spec = reid_spec(space={"model.k": {"grid": [1, 8, 16]}},
                     evaluation={"num_points": 256, "densities": [0.5, 1.0]},
                     asha={"metric": "loss", "mode": "min"},
                     paper={"source": "OG-Net, Table IV",
                            "claims": [{"text": "graph beats linear", "a": {"model.k": 8},
                                        "b": {"model.k": 1}, "paper": "69.33 vs 65.50"},
                                       {"text": "robust to density", "kind": "close",
                                        "tolerance": 0.05,
                                        "a": {"model.k": 8, "metric": "densities/0.5/rank1"},
                                        "b": {"model.k": 8, "metric": "densities/1.0/rank1"}},
                                       {"text": "k = 16 beats k = 1", "a": {"model.k": 16},
                                        "b": {"model.k": 1}}]})
    plan = make_plan(tmp_path, spec)
    _finished(plan, "t0", {"model.k": 1}, {"map_trapezoid": 0.3, "rank1": 0.5,
                                           "densities/0.5/rank1": 0.4, "densities/1.0/rank1": 0.5})
    _finished(plan, "t1", {"model.k": 8}, {"map_trapezoid": 0.4, "rank1": 0.6,
                                           "densities/0.5/rank1": 0.58, "densities/1.0/rank1": 0.6,
                                           "densities/0.5/map_trapezoid": 0.35,
                                           "densities/1.0/map_trapezoid": 0.4})
    # a failed trial and one that ASHA stopped (Tune: ended without an error, no final record)
    fail = plan.trial_dir("t2")
    fail.mkdir(parents=True)
    write_trial(fail, {"status": "failed", "error": "FloatingPointError: non-finite loss",
                       "params": {"model.k": 16}})
    plan.trial_dir("t3").mkdir(parents=True)
    (plan.trial_dir("t3") / "metrics.jsonl").write_text(json.dumps({"epoch": 0, "steps": 3}) + "\n")
    outcomes = [TrialOutcome("t1", "TERMINATED", {"model.k": 8}, {"loss": 0.25}),
                TrialOutcome("t0", "TERMINATED", {"model.k": 1}, {"loss": 0.5}),
                TrialOutcome("t2", "ERROR", {"model.k": 16}, {}, "Traceback...\nRayTaskError: x"),
                TrialOutcome("t3", "TERMINATED", {"model.k": 16}, {"loss": 2.0})]
    out = write_outputs(plan, outcomes)

    table = pq.read_table(plan.sweep_dir / "trials.parquet").to_pylist()
    assert [r["trial_id"] for r in table] == ["t0", "t1", "t2", "t3"]
    assert [r["status"] for r in table] == ["finished", "finished", "failed", "stopped"]
    assert [r["model.k"] for r in table] == [1, 8, 16, 16]
    assert table[2]["error"] == "FloatingPointError: non-finite loss"
    assert table[1]["map_trapezoid"] == 0.4 and table[2]["map_trapezoid"] is None
    assert table[1]["last_loss"] == 0.25 and [r["epochs"] for r in table] == [2, 2, 0, 1]
    assert table[0]["checkpoint"].endswith("t0/model_final.pt") and table[0]["wall_s"] == 90.0
    assert {"densities/0.5/rank1", "rank5", "run_dir"} <= set(table[0])

    assert out.best["trial_id"] == "t1"
    best = load_config(plan.job.config, plan.sweep_dir / "best.yaml")
    assert best.model.k == 8 and best.model.init_points == plan.base.model.init_points
    assert (best.out_dir, best.name, best.ray) == (plan.preset.out_dir, "", plan.preset.ray)

    holds = [c["holds"] for c in out.claims]
    assert holds == [True, True, None]  # t2 failed, t3 stopped: no finished k = 16 trial
    assert math.isclose(out.claims[1]["a"], 0.58)

    names = sorted(p.name for p in out.pictures)
    assert names == ["metric_vs_model.k.png", "metric_vs_test_density.png"]
    for p in out.pictures:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = out.summary.read_text()
    assert md.startswith("# Sweep `spec`")
    assert "| `t1` | 8 | finished | 40.00 |" in md  # best first, metric in %
    assert "| graph beats linear (a: model.k = 8; b: model.k = 1) | 69.33 vs 65.50 | 40.00 % vs 30.00 %" in md
    assert "| yes |" in md and "n/a (a side has no finished trial)" in md
    assert "- `t2` (model.k = 16): FloatingPointError: non-finite loss" in md
    assert "![metric_vs_model.k](metric_vs_model.k.png)" in md
    assert f"python -m mirror3d train-reid --config {plan.sweep_dir / 'best.yaml'}" in md
    assert "2 finished, 1 stopped, 1 failed" in md


def test_best_follows_the_mode_and_casl_curves_read_the_learning_curve(tmp_path):
    plan = make_plan(tmp_path, {"job": "train-casl", "preset": "smoke",
                                "space": {"encoder_loop.schedule": {"grid": ["all", "shape,texture,camera"]}},
                                "metric": {"name": "chamfer", "mode": "min"}})
    _finished(plan, "a", {"encoder_loop.schedule": "all"}, {"chamfer": 0.02, "mask_iou": 60.0})
    _finished(plan, "b", {"encoder_loop.schedule": "shape,texture,camera"},
              {"chamfer": 0.01, "mask_iou": 50.0})
    (plan.trial_dir("a") / "curve.jsonl").write_text(
        "".join(json.dumps({"step": s, "mask_iou": 40.0 + s}) + "\n" for s in (0, 5, 10)))
    rows = trial_rows(plan, [TrialOutcome("a", "TERMINATED", {"encoder_loop.schedule": "all"}),
                             TrialOutcome("b", "TERMINATED",
                                          {"encoder_loop.schedule": "shape,texture,camera"})])
    assert best_row(rows, "chamfer", "min")["trial_id"] == "b"
    assert best_row(rows, "mask_iou", "max")["trial_id"] == "a"
    assert check_claims(plan, rows) == []
    out = write_outputs(plan, [TrialOutcome("a", "TERMINATED", {"encoder_loop.schedule": "all"}),
                               TrialOutcome("b", "TERMINATED",
                                            {"encoder_loop.schedule": "shape,texture,camera"})])
    assert sorted(p.name for p in out.pictures) == ["mask_iou_vs_steps.png",
                                                     "metric_vs_encoder_loop.schedule.png"]
    assert load_config(plan.job.config, plan.sweep_dir / "best.yaml").encoder_loop.schedule == \
        "shape,texture,camera"
