"""Which trained runs the demo serves by default: the newest ones ``make run`` left.

Layout looked at (``runs_root`` = ``runs``)::

    runs/pipeline/<name>/casl/model_final.pt                 a CASL run
    runs/pipeline/<name>/reid/<input>/model_final.pt         re-id runs, <input> one of
        casl-visible, casl-visible_bg, flat (OG-Net on lifted clouds), baseline (2D CNN),
        oracle_* (clouds lifted from SynthPeople's true meshes: never served)
    runs/casl/<name>/model_final.pt, runs/ognet/<name>/model_final.pt   stand-alone jobs

A re-id run is served only if a photo can be lifted the way its clouds were: its
``config.yaml`` names an image model, or shards whose ``_meta/lift_settings.json`` names no
``synth-truth`` reconstructor (:mod:`mirror3d.engine.demo_search`).
"""

from __future__ import annotations

import json
import os
import pathlib

import yaml

from mirror3d.engine.reid_train import input_kind
from mirror3d.lifting.reconstructors import SYNTH_TRUTH
from mirror3d.lifting.run import SETTINGS_FILE

__all__ = ["REID_PREFERENCE", "newest_demo_runs", "photo_liftable"]

#: Re-id inputs of a pipeline, most wanted first (what a photo can be lifted to).
REID_PREFERENCE = ("casl-visible", "casl-visible_bg", "flat", "baseline")
MODEL_FILE = "model_final.pt"


def _mtime(run: pathlib.Path) -> float:
    try:
        return (run / MODEL_FILE).stat().st_mtime
    except OSError:
        return -1.0


def _trained(run: pathlib.Path) -> bool:
    return (run / MODEL_FILE).is_file()


def photo_liftable(run: str | os.PathLike) -> bool:
    """Whether a re-id run's input can be made from an uploaded photo: not an ``oracle_*`` run,
    and (when its ``config.yaml`` says) an image model or clouds lifted without ground truth."""
    run = pathlib.Path(run)
    if run.name.startswith("oracle"):
        return False
    cfg_file = run / "config.yaml"
    if not cfg_file.is_file():
        return True
    try:
        cfg = yaml.safe_load(cfg_file.read_text()) or {}
        if input_kind(str((cfg.get("model") or {}).get("name", ""))) == "image":
            return True
        shards = pathlib.Path(str((cfg.get("data") or {}).get("shards", "")))
        settings = json.loads((shards / "_meta" / SETTINGS_FILE).read_text())
    except (OSError, ValueError, yaml.YAMLError, AttributeError):
        return False
    return settings.get("reconstructor") != SYNTH_TRUTH


def _pipelines(root: pathlib.Path) -> list[pathlib.Path]:
    """Pipeline run dirs, newest trained model first."""
    found = []
    for p in (root / "pipeline").glob("*"):
        if not p.is_dir():
            continue
        runs = [p / "casl", *(p / "reid").glob("*")]
        newest = max((_mtime(r) for r in runs), default=-1.0)
        if newest >= 0:
            found.append((newest, p.name, p))
    return [p for *_, p in sorted(found, reverse=True)]


def _newest(runs) -> pathlib.Path | None:
    runs = [r for r in runs if _trained(r)]
    return max(runs, key=lambda r: (_mtime(r), r.name), default=None)


def newest_demo_runs(runs_root: str | os.PathLike = "runs"
                     ) -> tuple[pathlib.Path | None, pathlib.Path | None]:
    """(CASL run, re-id run) to serve, each None if there is none.

    The CASL run: ``<pipeline>/casl`` of the newest pipeline run that has one, else the newest
    ``runs/casl/*``. The re-id run: of the newest pipeline run with a servable one, the first
    trained of :data:`REID_PREFERENCE` (never ``oracle_*``, never one :func:`photo_liftable`
    refuses), else the newest servable ``runs/ognet/*``. "Newest" is the time of the run's
    ``model_final.pt``.
    """
    root = pathlib.Path(runs_root)
    pipelines = _pipelines(root)
    casl = next((p / "casl" for p in pipelines if _trained(p / "casl")), None)
    if casl is None:
        casl = _newest((root / "casl").glob("*"))
    reid = None
    for p in pipelines:
        reid = next((p / "reid" / n for n in REID_PREFERENCE
                     if _trained(p / "reid" / n) and photo_liftable(p / "reid" / n)), None)
        if reid is not None:
            break
    if reid is None:
        reid = _newest(r for r in (root / "ognet").glob("*") if photo_liftable(r))
    return casl, reid
