"""The main job (mirror3d/jobs/pipeline.py, jobs/pipeline.py): presets composed from the stage
jobs' presets, the --smoke pipeline end to end, stage reuse and resume."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys

import pytest
import yaml

from mirror3d.cli import main
from mirror3d.jobs import PRESETS_DIR, resolve_config
from mirror3d.jobs.pipeline import PipelineConfig, resolve_run_dir, run_pipeline
from mirror3d.utils.rundir import RunExistsError
from mirror3d.utils.config import ConfigError, flatten_config, update_config

ROOT = pathlib.Path(__file__).resolve().parents[2]
STAGES = ["synth", "casl", "eval-casl", "lift:flat", "lift:casl-visible", "lift:casl-visible+bg",
          "lift:oracle:casl-visible+bg", "reid:flat", "reid:casl-visible", "reid:casl-visible+bg",
          "reid:oracle:casl-visible+bg", "reid:baseline"]


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def test_default_preset_is_the_config_defaults():
    assert resolve_config("pipeline") == PipelineConfig()


def test_smoke_preset_composes_the_stage_jobs_smoke_presets():
    preset = yaml.safe_load((PRESETS_DIR / "pipeline" / "smoke.yaml").read_text())
    compose = preset.pop("compose")
    assert compose == {"synth": "synth", "casl": "train-casl", "lift": "lift", "reid": "train-reid"}
    own = _flat(preset)
    cfg = resolve_config("pipeline", "smoke")
    values = flatten_config(cfg)
    for section, job in compose.items():
        # every key of the stage's smoke preset holds, unless the pipeline's preset sets it
        stage = _flat(yaml.safe_load((PRESETS_DIR / job / "smoke.yaml").read_text()) or {})
        assert stage, job
        for key, value in stage.items():
            key = f"{section}.{key}"
            expected = own.get(key, value)
            got = values[key]
            assert (list(got) if isinstance(got, tuple) else got) == expected, key
    # no key is copied: the pipeline's preset only sets what differs from the stage's preset
    for key, value in own.items():
        section, _, rest = key.partition(".")
        if section in compose:
            stage = _flat(yaml.safe_load((PRESETS_DIR / compose[section] / "smoke.yaml").read_text()))
            assert stage.get(rest, object()) != value, f"{key} copies the {compose[section]} preset"


def test_smoke_presets_sit_below_user_options(capsys):
    cfg = resolve_config("pipeline", "smoke", overrides=["--reid.optim.epochs", "3", "--name", "x"])
    assert cfg.name == "x" and cfg.title_note
    assert cfg.reid.optim.epochs == 3  # the user's option wins
    stage = resolve_config("train-casl", "smoke")
    assert cfg.casl.optim.epochs == stage.optim.epochs and cfg.synth.ids == resolve_config("synth", "smoke").ids
    full = resolve_config("pipeline")
    assert full.synth.ids == 200 and full.casl.optim.max_minutes > 0 and not full.title_note
    # the CLI shows the same
    assert main(["config", "show", "pipeline", "--smoke", "--reid.optim.epochs", "3"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["reid"]["optim"]["epochs"] == 3 and shown["synth"]["ids"] == cfg.synth.ids


def test_run_dir_placeholder_and_mode_checks(tmp_path):
    cfg = update_config(PipelineConfig(), {"out_dir": str(tmp_path), "name": "r",
                                           "synth.out": "{run_dir}/synthpeople"})
    resolved, run_dir = resolve_run_dir(cfg)
    assert run_dir == (tmp_path / "r").resolve()
    assert resolved.synth.out == str(run_dir / "synthpeople")
    assert resolve_run_dir(PipelineConfig())[0].synth.out == str(pathlib.Path("data/synthpeople").resolve())
    with pytest.raises(ConfigError, match="modes"):
        update_config(PipelineConfig(), {"modes": (), "oracle_modes": (), "baseline": ""})
    with pytest.raises(ConfigError, match="oracle_modes"):  # flat has no mesh to replace
        update_config(PipelineConfig(), {"oracle_modes": ("flat",)})


def test_bad_config_value_is_one_clear_line():
    res = subprocess.run([sys.executable, "jobs/pipeline.py", "--modes", "flat,3d-magic"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode != 0
    assert "modes" in res.stderr and "3d-magic" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def _links(md: str) -> list[str]:
    return re.findall(r"\]\(([^)]+)\)", md)


#: The test's changes to ``make run --smoke`` (time, not results: every stage, row and report
#: line is the same): no MLflow tracking in the training stages (MLflow's import and run set-up
#: cost ~2-3 s in each of the 8 Ray Train workers here; nothing of the pipeline reads it; the
#: trainers' MLflow tracking through Ray Train: tests/platform/test_reid.py), and the first run's
#: lifting stages in this process (a Ray Data actor pool costs ~6-10 s to start per stage; the
#: pipeline's Ray Data lifting, CASL checkpoint read by the actor included, runs in
#: :func:`test_rerun_reuses_stages_and_resumes_at_the_failed_one`).
TEST_OVERRIDES = ["--casl.tracking.mlflow=false", "--reid.tracking.mlflow=false",
                  "--lift.no_ray=true"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, ray_session):
    out = tmp_path_factory.mktemp("pipeline")
    cfg = resolve_config("pipeline", "smoke",
                         overrides=[f"--out_dir={out}", "--name=smoke", *TEST_OVERRIDES])
    assert not cfg.casl.tracking.mlflow and not cfg.reid.tracking.mlflow and cfg.lift.no_ray
    return cfg, run_pipeline(cfg)


def test_smoke_pipeline_writes_the_report(smoke_run):
    cfg, res = smoke_run
    assert list(res.stages) == STAGES
    assert pathlib.Path(res.stages["synth"].result["root"]) == res.run_dir / "synthpeople"
    assert not any(r.reused for r in res.stages.values())
    md = res.report.read_text()
    assert md.startswith("# mirror3d pipeline: smoke (smoke sizes)\n")
    for heading in ("## Stages", "## CASL reconstruction", "## Lifting", "## Re-identification"):
        assert heading in md
    # every link and picture in the report resolves, relative to the report
    links = _links(md)
    assert any(x.endswith(".gif") for x in links) and any("ranked" in x for x in links)
    assert any(x.startswith("lift/") and x.endswith(".png") for x in links)
    for link in links:
        assert (res.report.parent / link).exists(), link
    data = json.loads((res.run_dir / "report.json").read_text())
    rows = {r["input"]: r for r in data["reid"]}
    assert list(rows) == ["flat", "casl-visible", "casl-visible+bg", "image (2D baseline)",
                          "oracle:casl-visible+bg"]
    for r in rows.values():
        assert 0.0 <= r["rank1"] <= r["rank5"] <= 1.0 and 0.0 <= r["map"] <= 1.0
        assert r["params"] > 100_000 and r["epochs"] == cfg.reid.optim.epochs
        # the table shows the same numbers
        assert f"| {100 * r['rank1']:.1f} | {100 * r['rank5']:.1f} | {100 * r['map']:.1f}" in md
    assert rows["image (2D baseline)"]["model"] == "cnn2d-small"
    # the oracle row: true meshes, marked as such in both files, with the computed Table I lines
    oracle = rows["oracle:casl-visible+bg"]
    assert oracle["oracle"] and oracle["mesh"] == "true" and oracle["mode"] == "casl-visible+bg"
    assert not any(r["oracle"] for k, r in rows.items() if k != "oracle:casl-visible+bg")
    assert "upper bound that needs ground truth" in data["oracle_note"]
    assert "| casl-visible+bg, **true mesh (oracle)** † | og-net-small |" in md
    assert f"† {data['oracle_note']}." in md
    t1 = data["table1"]
    assert set(t1["meshes"]) == {"casl", "true"} and set(t1["gaps"]) == {"casl-visible+bg"}
    gap = 100 * (oracle["map"] - rows["casl-visible+bg"]["map"])
    assert t1["gaps"]["casl-visible+bg"]["points"] == pytest.approx(gap)
    assert f"= {gap:+.1f} mAP points" in md and "- with true meshes (oracle): " in md
    lifted = res.stages["lift:oracle:casl-visible+bg"].result
    assert lifted["shards"] == str(res.run_dir / "lifted" / "oracle_casl-visible_bg")
    assert json.loads((pathlib.Path(lifted["shards"]) / "_meta" / "lift_settings.json")
                      .read_text())["reconstructor"] == "synth-truth"
    for mode in ("flat", "casl-visible", "casl-visible+bg", "oracle:casl-visible+bg"):
        lift = data["lift"][mode]
        # every image is a row or a counted skip (a poor smoke CASL may see no body point)
        c = lift["counts"]
        assert lift["images"] == data["synth"]["counts"]["market_images"]
        assert lift["rows"] + c["bad"] + c["no_mask"] + c["rejected"] == lift["images"]
        assert lift["rows"] >= 0.8 * lift["images"]
        assert lift["points_min"] >= cfg.lift.min_points
    assert data["lift"]["flat"]["rows"] == data["lift"]["flat"]["images"]  # flat needs no mask
    assert data["casl_eval"]["synthpeople"]["n_images"] > 0
    assert (res.run_dir / "casl" / "model_final.pt").exists()


def test_rerun_reuses_stages_and_resumes_at_the_failed_one(smoke_run):
    cfg, first = smoke_run
    # the same name again: refused (one line naming the run and both options), nothing touched
    before = sorted(p.name for p in (first.run_dir / "stages").iterdir())
    with pytest.raises(RunExistsError, match=r"smoke exists; pass --resume .* --overwrite"):
        run_pipeline(cfg)
    assert sorted(p.name for p in (first.run_dir / "stages").iterdir()) == before
    cfg = update_config(cfg, {"resume": True})
    again = run_pipeline(cfg)
    assert all(r.reused for r in again.stages.values())
    assert again.stages["reid:flat"].result == first.stages["reid:flat"].result

    # a crash in the middle of one stage: its record is missing, its start marker is left
    stages = first.run_dir / "stages"
    (stages / "reid__casl-visible.json").unlink()
    (stages / "reid__casl-visible.started").write_text(again.stages["reid:casl-visible"].fingerprint)
    third = run_pipeline(cfg)
    ran = [k for k, r in third.stages.items() if not r.reused]
    assert ran == ["reid:casl-visible"]
    resumed = third.stages["reid:casl-visible"].result["resumed_from"]
    assert resumed and pathlib.Path(resumed).is_relative_to(first.run_dir / "reid" / "casl-visible")
    log = (first.run_dir / "reid" / "casl-visible" / "metrics.jsonl").read_text().splitlines()
    assert len(log) == cfg.reid.optim.epochs  # resumed after its last epoch: nothing retrained

    # changed settings of one stage: it and its dependants run again, the rest is reused (the
    # lifting on Ray Data this time, as make run lifts: its actor reads the CASL checkpoint)
    changed = update_config(cfg, {"lift.num_points": 384, "modes": ("casl-visible",),
                                  "oracle_modes": (), "baseline": "", "lift.no_ray": False})
    fourth = run_pipeline(changed)
    assert [k for k, r in fourth.stages.items() if not r.reused] == ["lift:casl-visible",
                                                                      "reid:casl-visible"]
    lifted = fourth.stages["lift:casl-visible"].result
    assert json.loads((pathlib.Path(lifted["shards"]) / "_meta" / "lift_settings.json")
                      .read_text())["num_points"] == 384
    metas = [json.loads(p.read_text())
             for p in (pathlib.Path(lifted["shards"]) / "_meta").glob("*-*.json")]
    assert metas and all(m["node"] != "local" for m in metas)  # lifted by a Ray actor
    report = json.loads((first.run_dir / "report.json").read_text())
    assert [r["input"] for r in report["reid"]] == ["casl-visible"]
