"""``python -m mirror3d lift`` (mirror3d/jobs/lift.py): presets, the one flat-lifting entry
(``lift --mode flat``, which replaced ``lift-flat``), errors, the top-level script."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from lifting.lift_fixtures import make_lift_tree
from mirror3d.cli import main
from mirror3d.data.readers import read_market1501
from mirror3d.jobs import JOBS, PRESETS_DIR, job_module, resolve_config
from mirror3d.lifting.config import LiftConfig
from mirror3d.lifting.flat import lift_flat
from mirror3d.lifting.shards import read_shards
from mirror3d.utils.config import config_to_dict, load_config

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_lift_tree(tmp_path_factory.mktemp("lift"))


def test_job_and_presets():
    assert "lift" in JOBS and "lift-flat" not in JOBS
    assert job_module("lift").CONFIG is LiftConfig
    assert resolve_config("lift") == LiftConfig()
    assert config_to_dict(load_config(LiftConfig, PRESETS_DIR / "lift" / "default.yaml")) == \
        config_to_dict(LiftConfig())
    smoke = resolve_config("lift", "smoke")
    assert (smoke.num_points, smoke.min_points, smoke.shard_size, smoke.actors, smoke.preview,
            smoke.progress) == (512, 256, 32, 1, 1, False)
    assert smoke.mode == LiftConfig().mode and smoke.image_size == LiftConfig().image_size


def test_flat_lifting_through_the_cli(tree, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["lift", "--no_ray", "--root", str(tree["root"]), "--mode", "flat",
                 "--splits", "query", "--out", str(out), "--runs_root", str(tmp_path / "runs"),
                 "--preview", "1", "--num_points", "64", "--min_points", "0",
                 "--image_size", "8,16"])
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("lift flat: 4 samples in 1 shards -> ") and "bad 0" in printed
    got = read_shards(out)
    assert len(got) == 4 and all(p.shape == (64, 6) for p in got.points)
    assert len(list((tmp_path / "runs" / "lift").glob("*/pictures/*.png"))) == 1
    assert len(list((tmp_path / "runs" / "lift").glob("*/bad_images.txt"))) == 1


def test_flat_keeps_every_pixel_at_native_size(tree, tmp_path):
    """What ``lift-flat ROOT OUT`` did: every pixel of every image as (x, y, 0), at the image's
    own size, into shards a re-id trainer reads."""
    out = tmp_path / "flat"
    assert main(["lift", "--no_ray", "--mode", "flat", "--root", str(tree["root"]),
                 "--out", str(out), "--image_size", "none", "--min_points", "0",
                 "--runs_root", str(tmp_path / "runs"), "--preview", "0"]) == 0
    got = read_shards(out)
    records = {r.path: r for r in read_market1501(tree["root"])[0]}
    assert len(got) == len(records) - 1  # all but the corrupt image
    for path, points in zip(got.path, got.points):
        image = np.asarray(Image.open(path).convert("RGB"))
        np.testing.assert_allclose(points, lift_flat(image), atol=1e-6)
        assert records[path].pid in got.pid


def test_errors_are_one_line(tree, tmp_path, capsys):
    assert main(["lift", "--no_ray", "--mode", "casl-visible", "--root", str(tree["root"]),
                 "--out", str(tmp_path / "x")]) == 1  # no mask_dir: one-line error
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mask_dir" in err[0]
    assert main(["lift", "--num_points", "10", "--min_points", "20"]) == 2


def test_job_script_help():
    res = subprocess.run([sys.executable, str(REPO / "jobs" / "lift.py"), "--help"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "--mode" in res.stdout and "--num_points" in res.stdout
    assert "--no_ray" in res.stdout
