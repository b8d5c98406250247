"""Job ``sweep`` through the CLI (mirror3d/jobs/sweep.py, configs/sweep/, configs/sweeps/): its
presets, bad specs as one error line before any trial, and a smoke sweep of a ready spec end to
end on local Ray: CASL with Optuna + ASHA. The re-id grid sweep of k (``ognet_k --smoke``) and
every output it writes: tests/platform/test_storage_jobs.py (its storage in S3, one run instead
of a second identical local one) and tests/platform/test_job_submit.py (a submitted job, local
storage); the density sweep's own evaluation: tests/engine/test_sweep.py; resume and a crashing
trial: tests/platform/test_tune.py."""

from __future__ import annotations

import dataset_fixtures
import pyarrow.parquet as pq
import pytest
import yaml

import mirror3d.jobs.sweep as job
from mirror3d.cli import main
from mirror3d.engine.casl_train import CaslTrainConfig
from mirror3d.engine.sweep import SweepConfig
from mirror3d.jobs import presets, resolve_config
from mirror3d.utils.config import load_config


def test_presets_default_is_the_config_smoke_is_the_specs_smoke_variant():
    assert presets("sweep") == ["default", "smoke"]
    assert resolve_config("sweep") == SweepConfig()
    smoke = resolve_config("sweep", "smoke")
    assert (smoke.variant, smoke.max_concurrent_trials, smoke.cpus_per_trial) == ("smoke", 2, 1.0)
    p = job.plan(resolve_config("sweep", "smoke", overrides=["--spec", "ognet_k"]))
    assert p.spec.variant == "smoke" and p.name == "ognet_k-smoke"


@pytest.mark.parametrize("space, message", [
    ({"model.kk": {"grid": [1, 8]}}, "unknown config key 'model.kk'; did you mean: model.k?"),
    ({"model.k": {"choice": []}}, "space.model.k: choice: empty list"),
    ({"optim.lr": {"uniform": [0.01, 0.001]}}, "space.optim.lr: uniform: low 0.01 > high 0.001"),
])
def test_a_bad_search_space_is_one_error_line_before_any_trial(tmp_path, capsys, monkeypatch,
                                                               space, message):
    monkeypatch.setattr(job, "run_sweep", lambda plan: pytest.fail("the sweep started"))
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump({"job": "train-reid", "space": space,
                                    "search": {"algorithm": "random", "num_samples": 2},
                                    "metric": {"name": "rank1"}}))
    code = main(["sweep", str(spec), "--out_dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("mirror3d sweep: error: sweep spec bad: ") and message in err[0]
    assert not (tmp_path / "runs").exists()


def test_missing_spec_and_missing_data_fail_before_ray(tmp_path, capsys, monkeypatch):
    assert main(["sweep"]) == 2
    assert "spec: required" in capsys.readouterr().err
    assert main(["sweep", "ognet_kk"]) == 2
    assert "did you mean: ognet_k," in capsys.readouterr().err  # the closest first
    assert main(["sweep", "ognet_k", "--smoke", "--out_dir", str(tmp_path / "runs"),
                 "--overrides", f"data.shards={tmp_path / 'none'}"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"mirror3d sweep: error: data.shards: {tmp_path / 'none'} does not exist (set it "
                   f"with --overrides 'data.shards=...' or in the spec's fixed keys)")
    assert not (tmp_path / "runs").exists()


def test_casl_learning_smoke_sweep_optuna_with_asha(ray_session, tmp_path, capsys):
    """Optuna's TPE with ASHA over CASL trials; each trial evaluated with eval-casl."""
    hq = dataset_fixtures.make_market_hq(tmp_path / "d", size=(32, 64))
    assert main(["sweep", "casl_learning", "--smoke", "--num_samples", "2",
                 "--out_dir", str(tmp_path / "runs"), "--overrides",
                 f"data.root={hq} data.ratio_range=0.0,1.0 data.clean_range=0.0,1.0 "
                 f"tracking.mlflow=false"]) == 0
    sweep = tmp_path / "runs" / "casl_learning-smoke"
    rows = pq.read_table(sweep / "trials.parquet").to_pylist()
    assert len(rows) == 2 and {r["status"] for r in rows} <= {"finished", "stopped"}
    done = [r for r in rows if r["status"] == "finished"]
    assert done, rows  # ASHA keeps at least the first trial at each rung
    for r in done:
        assert 5e-4 <= r["optim.lr"] <= 2e-3 and r["data.image_size"] == "32,64"
        assert 0.0 <= r["mask_iou"] <= 100.0 and r["epochs"] == 2
        assert (sweep / "trials" / r["trial_id"] / "eval" / "metrics.json").exists()
    best = load_config(CaslTrainConfig, sweep / "best.yaml")
    assert best.data.image_size == (32, 64) and best.optim.lr in [r["optim.lr"] for r in done]
    pngs = sorted(p.name for p in sweep.glob("*.png"))
    assert "mask_iou_vs_steps.png" in pngs and "metric_vs_optim.lr.png" in pngs
    assert "ASHA stops trials early on `train_mask_iou`" in (sweep / "summary.md").read_text()
