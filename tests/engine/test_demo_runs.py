"""Which runs the demo serves by default (mirror3d/engine/demo_runs.py): the newest pipeline's
CASL run and its photo-liftable re-id run, never an oracle, with the stand-alone job folders as
fallback."""

from __future__ import annotations

import json
import os
import pathlib

import yaml

from demo_fixtures import demo_runs  # noqa: F401  (session fixture)
from mirror3d.engine.demo_runs import newest_demo_runs, photo_liftable


def _run(path: pathlib.Path, t: float, model: str = "og-net-small",
         reconstructor: str | None = None) -> pathlib.Path:
    """A fake trained run: model_final.pt with mtime ``t``; with ``reconstructor`` also a
    config.yaml whose shards' lift_settings.json names it."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "model_final.pt").write_bytes(b"x")
    os.utime(path / "model_final.pt", (t, t))
    if reconstructor is not None:
        shards = path.parent / f"_shards_{path.name}"
        (shards / "_meta").mkdir(parents=True, exist_ok=True)
        (shards / "_meta" / "lift_settings.json").write_text(
            json.dumps({"mode": "casl-visible", "reconstructor": reconstructor}))
        (path / "config.yaml").write_text(yaml.safe_dump(
            {"model": {"name": model}, "data": {"shards": str(shards)}}))
    return path


def test_nothing_trained(tmp_path):
    assert newest_demo_runs(tmp_path) == (None, None)
    (tmp_path / "pipeline" / "p" / "casl").mkdir(parents=True)  # started, never finished
    assert newest_demo_runs(tmp_path) == (None, None)


def test_newest_pipeline_and_preferences(tmp_path):
    old, new = tmp_path / "pipeline" / "old", tmp_path / "pipeline" / "new"
    _run(old / "casl", 100)
    _run(old / "reid" / "casl-visible", 110)
    _run(new / "casl", 200)
    _run(new / "reid" / "baseline", 230)
    _run(new / "reid" / "flat", 220)
    _run(new / "reid" / "oracle_casl-visible", 240)   # newest, but an oracle: never
    assert newest_demo_runs(tmp_path) == (new / "casl", new / "reid" / "flat")
    _run(new / "reid" / "casl-visible", 210)            # preferred over flat even if older
    assert newest_demo_runs(tmp_path)[1] == new / "reid" / "casl-visible"
    # a casl-visible run whose clouds came from the ground truth is not servable
    _run(new / "reid" / "casl-visible", 210, reconstructor="synth-truth")
    assert newest_demo_runs(tmp_path)[1] == new / "reid" / "flat"
    _run(new / "reid" / "casl-visible", 210, reconstructor="casl")
    assert newest_demo_runs(tmp_path)[1] == new / "reid" / "casl-visible"


def test_pipeline_without_a_servable_reid_run_falls_back(tmp_path):
    p = tmp_path / "pipeline" / "p"
    _run(p / "casl", 300)
    _run(p / "reid" / "oracle_casl-visible_bg", 310)
    older = _run(tmp_path / "pipeline" / "older" / "reid" / "baseline", 50)
    assert newest_demo_runs(tmp_path) == (p / "casl", older)


def test_standalone_job_folders(tmp_path):
    _run(tmp_path / "casl" / "a", 10)
    b = _run(tmp_path / "casl" / "b", 20)
    o = _run(tmp_path / "ognet" / "x", 30)
    _run(tmp_path / "ognet" / "oracle_y", 40)
    _run(tmp_path / "ognet" / "z", 50, reconstructor="synth-truth")
    assert newest_demo_runs(tmp_path) == (b, o)
    img = _run(tmp_path / "ognet" / "cnn", 60, model="cnn2d-small", reconstructor="synth-truth")
    assert photo_liftable(img)  # an image model lifts nothing
    assert newest_demo_runs(tmp_path)[1] == img


def test_the_demo_fixture_runs_are_found(demo_runs):  # noqa: F811
    assert newest_demo_runs(demo_runs.runs_root) == (demo_runs.casl, demo_runs.reid_points)
    assert photo_liftable(demo_runs.reid_points) and photo_liftable(demo_runs.reid_image)
