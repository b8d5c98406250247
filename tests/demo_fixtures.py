"""Tiny trained runs for the demo tests (engine services, Ray Serve REST, browser): a SynthPeople
tree, a CASL run, its casl-visible lifting and the re-id runs on it, all made in this process
(no Ray) in about half a minute, once per test session.

Layout under the session's temporary folder (``DemoRuns`` holds the paths)::

    sp/                                 SynthPeople tree 32x64: Market-1501/ + Market-HQ/
    runs/pipeline/tiny/casl/            CASL smoke run (2 epochs, 32x64)
    lifted/casl-visible/                shards lifted with that CASL run (casl reconstructor,
                                        num_points 256, missing masks estimated by GrabCut),
                                        with _meta/lift_settings.json
    runs/pipeline/tiny/reid/casl-visible/   OG-Net (og-net-small) smoke run on those shards
    runs/pipeline/tiny/reid/baseline/       2D baseline (cnn2d-small, 16x32) on the images

So ``newest_demo_runs(runs_root)`` finds ``(casl, reid_points)``. Use it in a test module with::

    from demo_fixtures import demo_runs  # noqa: F401  (the session fixture)

    def test_x(demo_runs):
        svc = ReconstructService(demo_runs.casl)

or, outside pytest fixtures (e.g. inside a Serve test's own fixture),
``demo_fixtures.get_demo_runs(tmp_path_factory)``. The runs are built once per process and
shared; tests must not write into them (copy first).
"""

from __future__ import annotations

import os
import pathlib
import threading
from dataclasses import dataclass

import pytest
import yaml

import dataset_fixtures
from mirror3d.engine.casl_train import train_casl_loop
from mirror3d.engine.reid_train import train_reid_loop
from mirror3d.jobs import resolve_config
from mirror3d.lifting.config import LiftConfig
from mirror3d.lifting.run import lift_dataset
from mirror3d.utils.config import config_to_dict, update_config


@dataclass(frozen=True)
class DemoRuns:
    """Paths of the tiny runs (see the module docstring)."""

    root: pathlib.Path          # the session folder
    runs_root: pathlib.Path     # <root>/runs (for newest_demo_runs)
    synth: pathlib.Path         # SynthPeople tree
    market: pathlib.Path        # <synth>/Market-1501
    casl: pathlib.Path          # CASL run dir
    shards: pathlib.Path        # casl-visible shards
    reid_points: pathlib.Path   # OG-Net run on the shards
    reid_image: pathlib.Path    # 2D baseline run

    def images(self, split: str = "query") -> list[pathlib.Path]:
        """The Market-1501 images of ``split`` (query / gallery / train), sorted."""
        folder = {"query": "query", "gallery": "bounding_box_test",
                  "train": "bounding_box_train"}[split]
        return sorted((self.market / folder).glob("*.jpg"))


_LOCK = threading.Lock()
_BUILT: dict[str, DemoRuns] = {}


def build_demo_runs(root: pathlib.Path) -> DemoRuns:
    """Make the tiny runs under ``root`` (about 30 s on 2 cores)."""
    root = pathlib.Path(root)
    synth = dataset_fixtures.make_synth(root / "sp", ids=4, images_per_id=6, image_size=(32, 64))
    pipe = root / "runs" / "pipeline" / "tiny"
    casl_cfg = resolve_config("train-casl", "smoke", overrides=[
        "--data.root", str(synth / "Market-HQ"), "--data.ratio_range", "0.0,1.0",
        "--data.clean_range", "0.0,1.0", "--optim.average_last", "0", "--data.max_test", "2"])
    train_casl_loop(casl_cfg, pipe / "casl")
    shards = root / "lifted" / "casl-visible"
    lift_dataset(LiftConfig(root=str(synth / "Market-1501"), mask_dir=str(synth / "Market-HQ"),
                            mode="casl-visible", reconstructor="casl",
                            checkpoint=str(pipe / "casl" / "model_final.pt"), image_size=(32, 64),
                            num_points=256, min_points=64, missing_mask="estimate",
                            out=str(shards), preview=0, progress=False), run_dir=False)
    reid_cfg = update_config(resolve_config("train-reid", "smoke"), {
        "data.shards": str(shards), "data.images": str(synth / "Market-1501"),
        "optim.batch_size": 4, "optim.instances": 2, "ranked_queries": 0,
        "out_dir": str(pipe / "reid")})
    train_reid_loop(reid_cfg, pipe / "reid" / "casl-visible")
    train_reid_loop(update_config(reid_cfg, {"model.name": "cnn2d-small",
                                             "data.image_size": (16, 32)}),
                    pipe / "reid" / "baseline")
    # the reid runs' config.yaml, as the job writes it (demo_runs reads it)
    for name, cfg in (("casl-visible", reid_cfg), ("baseline", update_config(
            reid_cfg, {"model.name": "cnn2d-small", "data.image_size": (16, 32)}))):
        (pipe / "reid" / name / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg)))
    # the OG-Net run newest, as make run leaves it
    now = os.path.getmtime(pipe / "reid" / "baseline" / "model_final.pt")
    os.utime(pipe / "reid" / "casl-visible" / "model_final.pt", (now + 1, now + 1))
    return DemoRuns(root, root / "runs", synth, synth / "Market-1501", pipe / "casl", shards,
                    pipe / "reid" / "casl-visible", pipe / "reid" / "baseline")


def get_demo_runs(tmp_path_factory: pytest.TempPathFactory) -> DemoRuns:
    """The tiny runs, built on first use in this process (under the session's tmp folder)."""
    with _LOCK:
        if "runs" not in _BUILT:
            _BUILT["runs"] = build_demo_runs(tmp_path_factory.mktemp("demo_runs"))
        return _BUILT["runs"]


@pytest.fixture(scope="session")
def demo_runs(tmp_path_factory) -> DemoRuns:
    """:class:`DemoRuns`, built once per test session."""
    return get_demo_runs(tmp_path_factory)
