"""Jobs whose storage is an S3 URI (``--storage s3://...``, a local S3 API: tests/s3_fixtures.py):
runs, shards and sweeps are written to the store with their local layout, and resumed from it
on a machine whose stage is empty."""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import yaml

from lifting.lift_fixtures import assert_same_samples, make_lift_tree
from mirror3d.cli import main
from mirror3d.engine.reid_train import ReidTrainConfig
from mirror3d.engine.sweep import SweepConfig
from reid_fixtures import market_and_shards
from mirror3d.lifting.shards import read_shards
from mirror3d.utils import storage
from mirror3d.utils.config import load_config

PNG = b"\x89PNG\r\n\x1a\n"


def _files(uri: str) -> set[str]:
    """Relative paths of the files stored under ``uri``."""
    fs, path = storage.filesystem(uri)
    sel = pafs.FileSelector(path, recursive=True, allow_not_found=True)
    return {i.path[len(path) + 1:] for i in fs.get_file_info(sel) if i.type == pafs.FileType.File}


def _read(uri: str) -> str:
    fs, path = storage.filesystem(uri)
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def _upload(local_dir, uri: str) -> None:
    """Put a local tree into the store (as a user's `aws s3 sync` would)."""
    fs, path = storage.filesystem(uri)
    for p in sorted(local_dir.rglob("*")):
        if p.is_file():
            with fs.open_output_stream(f"{path}/{p.relative_to(local_dir).as_posix()}") as f:
                f.write(p.read_bytes())


def _forget_stage(bucket: str) -> None:
    """This machine's copies of the bucket gone: what a fresh node (or another machine) sees."""
    shutil.rmtree(storage.local_path(bucket), ignore_errors=True)


def test_train_casl_writes_to_and_resumes_from_s3(ray_session, s3_bucket, tmp_path, data_fixtures):
    hq = data_fixtures.make_market_hq(tmp_path / "hq", size=(32, 64))
    _upload(hq, f"{s3_bucket}/datasets/Market-HQ")  # the input is a URI too
    args = ["train-casl", "--smoke", "--storage", f"{s3_bucket}/m3d",
            "--data.root", f"{s3_bucket}/datasets/Market-HQ", "--data.ratio_range", "0.0,1.0",
            "--data.clean_range", "0.0,1.0", "--tracking.mlflow", "false"]
    assert main([*args, "--name", "first"]) == 0
    run = f"{s3_bucket}/m3d/casl/first"
    stored = _files(run)
    assert {"config.yaml", "metrics.jsonl", "model_final.pt", "train_summary.json",
            "template_final.obj", "checkpoints/epoch_0001/checkpoint.pt"} <= stored
    assert any(f.startswith("ray/") for f in stored)  # Ray Train's own storage, in the store
    assert [json.loads(x)["epoch"] for x in _read(f"{run}/metrics.jsonl").splitlines()] == [0, 1]
    assert not (tmp_path / "runs").exists()

    _forget_stage(s3_bucket)
    assert main([*args, "--name", "again", "--resume", run, "--optim.epochs", "3"]) == 0
    again = f"{s3_bucket}/m3d/casl/again"
    assert [json.loads(x)["epoch"] for x in _read(f"{again}/metrics.jsonl").splitlines()] == [2]
    assert json.loads(_read(f"{again}/train_summary.json"))["epochs_run"] == 3


def test_lifting_writes_shards_to_s3_and_resumes_from_it(ray_session, s3_bucket, tmp_path, capsys):
    tree = make_lift_tree(tmp_path / "tree")
    _upload(tmp_path / "tree", f"{s3_bucket}/datasets")
    out = f"{s3_bucket}/m3d/lifted/cv"
    settings = ["--mode", "casl-visible+bg", "--reconstructor", "oracle-template",
                "--image_size", "16,32", "--num_points", "300", "--min_points", "64",
                "--shard_size", "8", "--progress", "false"]
    args = ["lift", "--storage", f"{s3_bucket}/m3d", *settings,
            "--root", f"{s3_bucket}/datasets/{tree['root'].name}",
            "--mask_dir", f"{s3_bucket}/datasets/Market-HQ",
            "--out", out, "--name", "s3", "--actors", "1", "--preview", "1"]
    assert main(args) == 0
    stored = _files(out)
    shards = sorted(f for f in stored if f.endswith(".parquet"))
    assert len(shards) >= 3 and "_meta/lift_settings.json" in stored
    assert all(f"_meta/{s[:-len('.parquet')]}.json" in stored for s in shards)
    run = _files(f"{s3_bucket}/m3d/lift/s3")  # the run directory, under --storage
    assert {"summary.json", "bad_images.txt", "config.yaml"} <= run
    assert any(f.startswith("pictures/") and f.endswith(".png") for f in run)

    # the same rows as a local one-process run of the same settings
    local = tmp_path / "local"
    assert main(["lift", "--no_ray", "--root", str(tree["root"]), "--mask_dir", str(tree["masks"]),
                 *settings, "--out", str(local), "--runs_root", str(tmp_path / "runs"),
                 "--preview", "0"]) == 0
    _forget_stage(s3_bucket)
    storage.pull(out)
    staged_root = storage.local_path(f"{s3_bucket}/datasets/{tree['root'].name}")
    assert_same_samples(_relative(read_shards(storage.local_path(out)), staged_root),
                        _relative(read_shards(local), tree["root"]))

    # resume from the store on an empty stage: only the shard deleted from the store is lifted
    _forget_stage(s3_bucket)
    fs, path = storage.filesystem(out)
    gone = shards[0][:-len(".parquet")]
    fs.delete_file(f"{path}/{gone}.parquet")
    fs.delete_file(f"{path}/_meta/{gone}.json")
    capsys.readouterr()
    assert main(args) == 2  # the run name exists (in the store): refused without --overwrite
    assert "s3 exists" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0  # same settings: the finished shards are kept
    assert f"(1 lifted, {len(shards) - 1} already done;" in capsys.readouterr().out
    assert _files(out) >= stored - {"_meta/summary.json"}
    _forget_stage(s3_bucket)
    storage.pull(out)
    assert_same_samples(_relative(read_shards(storage.local_path(out)), staged_root),
                        _relative(read_shards(local), tree["root"]))


def _relative(samples, root):
    """The samples with image paths relative to the dataset root (the staged copy of a dataset
    in a store has another absolute path than the local tree it was uploaded from)."""
    samples.path = np.array([str(pathlib.Path(p).relative_to(root)) for p in samples.path])
    return samples


def test_smoke_sweep_writes_to_and_resumes_from_s3(ray_session, s3_bucket, tmp_path, capsys):
    """The k sweep's smoke variant (k = 1, 8; two trials at a time) with its storage in S3:
    every output of the sweep, stored with its local layout, then the same command resumed from
    the store on an empty stage. (Also the end-to-end test of ``sweep ognet_k --smoke``'s outputs:
    tests/jobs/test_sweep.py runs its presets and bad specs, and a local CASL sweep.)"""
    root, shards = market_and_shards(tmp_path)
    _upload(root, f"{s3_bucket}/datasets/market")
    _upload(shards, f"{s3_bucket}/datasets/shards")
    args = ["sweep", "ognet_k", "--smoke", "--storage", f"{s3_bucket}/m3d", "--overrides",
            f"data.shards={s3_bucket}/datasets/shards data.images={s3_bucket}/datasets/market "
            f"optim.batch_size=6 optim.instances=2 optim.epochs=1 tracking.mlflow=false"]
    assert main(args) == 0
    sweep = f"{s3_bucket}/m3d/sweep/ognet_k-smoke"
    staged = storage.local_path(sweep)  # the sweep's folder on this node (what it prints)
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].endswith(f"-> {staged / 'summary.md'}")
    assert out.count("started (model.k=") == 2 and out.count("finished in") == 2
    stored = _files(sweep)
    assert {"trials.parquet", "summary.md", "best.yaml", "events.jsonl", "settings.json",
            "metric_vs_model.k.png", "config.yaml", "spec.yaml"} <= stored
    trials = {f.split("/")[1] for f in stored if f.startswith("trials/")}
    assert len(trials) == 2
    for t in trials:
        assert {f"trials/{t}/trial.json", f"trials/{t}/model_final.pt",
                f"trials/{t}/eval.json", f"trials/{t}/config.yaml"} <= stored
        assert json.loads(_read(f"{sweep}/trials/{t}/trial.json"))["status"] == "finished"
    assert any(f.startswith("tune/") for f in stored)  # Tune's experiment state, in the store
    events = [json.loads(x)["event"] for x in _read(f"{sweep}/events.jsonl").splitlines()]
    assert sorted(events) == ["finished", "finished", "start", "start"]
    # the table, each trial's record and config, best.yaml, the curve and summary.md (read
    # from the store)
    fs, path = storage.filesystem(sweep)
    rows = pq.read_table(f"{path}/trials.parquet", filesystem=fs).to_pylist()
    assert sorted(r["model.k"] for r in rows) == [1, 8]
    assert {r["trial_id"] for r in rows} == trials
    for r in rows:
        assert r["status"] == "finished" and r["error"] is None and r["epochs"] == 1
        assert 0.0 <= r["map_trapezoid"] <= 1.0 and r["wall_s"] > 0
        assert r["checkpoint"].endswith("model_final.pt")
        trial = json.loads(_read(f"{sweep}/trials/{r['trial_id']}/trial.json"))
        assert trial["final"]["map_trapezoid"] == r["map_trapezoid"]
        # the trial's Ray Train worker had the sweep's CPU (not the automatic share)
        ran = _load_stored(ReidTrainConfig, f"{sweep}/trials/{r['trial_id']}/config.yaml", tmp_path)
        assert (ran.ray.cpus_per_worker, ran.model.k) == (1.0, r["model.k"])
    best = _load_stored(ReidTrainConfig, f"{sweep}/best.yaml", tmp_path)
    assert best.model.k in (1, 8) and best.out_dir == "runs/ognet" and best.ray.cpus_per_worker == 0
    capsys.readouterr()
    assert main(["config", "show", "train-reid", "--config", str(staged / "best.yaml")]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["model"]["k"] == best.model.k  # --config takes it
    with fs.open_input_stream(f"{path}/metric_vs_model.k.png") as f:
        assert f.read(8) == PNG
    md = _read(f"{sweep}/summary.md")
    assert "## The paper's direction" in md and "69.33 vs 65.50" in md
    assert f"train-reid --config {staged / 'best.yaml'}" in md
    assert _load_stored(SweepConfig, f"{sweep}/config.yaml", tmp_path).variant == "smoke"
    assert yaml.safe_load(_read(f"{sweep}/spec.yaml"))["space"] == {"model.k": {"grid": [1, 8]}}

    # the same command on a machine that has none of it: resumed from the store, nothing retrained
    _forget_stage(s3_bucket)
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "resuming" in out and "started (model.k=" not in out
    events = [json.loads(x)["event"] for x in _read(f"{sweep}/events.jsonl").splitlines()]
    assert sorted(events) == ["finished", "finished", "start", "start"]
    assert _files(sweep) >= stored


def _load_stored(config_type, uri: str, tmp_path: pathlib.Path):
    """The config dataclass of a YAML file in the store (written to a local copy first)."""
    local = tmp_path / "from_store" / uri.rsplit("/", 1)[1]
    local.parent.mkdir(exist_ok=True)
    local.write_text(_read(uri))
    return load_config(config_type, local)
