"""Tiny trained-looking runs for the demo's tests: a CASL run (a small untrained model saved the
way train-casl saves one) and a 2D-baseline re-id run on the tiny Market-1501 tree of
tests/dataset_fixtures.py. Untrained weights are enough: the tests check the plumbing (shapes,
formats, errors, the ranking against GalleryIndex), not the quality."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

import pytest
import torch
import yaml

import dataset_fixtures
from mirror3d.engine.reid_train import build_model
from mirror3d.jobs import resolve_config
from mirror3d.models.casl.step import build_casl_model
from mirror3d.utils.checkpoint import save_checkpoint
from mirror3d.utils.config import config_to_dict, update_config

#: A CASL model small enough to run in a test (16 x 32 input, few channels).
TINY_CASL = {"data": {"image_size": [16, 32], "bg": False},
             "net": {"camera_channels": 4, "shape_channels": 4, "texture_channels": 4,
                     "light_channels": [4, 4, 4, 4, 4], "background_channels": 4}}


@dataclass(frozen=True)
class DemoRunDirs:
    casl: pathlib.Path
    reid: pathlib.Path
    market: pathlib.Path


def make_demo_runs(root: pathlib.Path) -> DemoRunDirs:
    """``root/casl`` (CASL) and ``root/reid`` (cnn2d-small on ``root/market``), each with its
    ``model_final.pt`` (and the re-id run's ``config.yaml``)."""
    torch.manual_seed(0)
    casl = root / "casl"
    save_checkpoint(casl / "model_final.pt", "casl",
                    {"model": build_casl_model(TINY_CASL).state_dict(), "config": TINY_CASL})
    market = dataset_fixtures.make_market1501(root / "data")
    cfg = update_config(resolve_config("train-reid", "smoke"),
                        {"model.name": "cnn2d-small", "data.images": str(market),
                         "data.image_size": (16, 32)})
    num_classes = len(dataset_fixtures.REID_TRAIN_PIDS)
    reid = root / "reid"
    save_checkpoint(reid / "model_final.pt", "reid",
                    {"model": build_model(cfg, num_classes).state_dict(), "epoch": 1,
                     "num_classes": num_classes, "config": config_to_dict(cfg)})
    (reid / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg)))
    return DemoRunDirs(casl, reid, market)


@pytest.fixture(scope="session")
def demo_runs(tmp_path_factory) -> DemoRunDirs:
    return make_demo_runs(tmp_path_factory.mktemp("demo_runs"))
