"""The bad-input matrix, part 2 (issue 16): re-runs and resumes that must not lie, and bad items
inside a dataset that must be counted, never dropped or lifted silently.

All lifting here runs in this process (``--no_ray``) on the tiny Market-1501 tree of
tests/dataset_fixtures.py (27 images of 8×16), a few seconds in all.
"""

from __future__ import annotations

import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image

import dataset_fixtures as fx
from bad_input.bad_fixtures import (changes, corrupt_file, gray16_png, one_error_line,
                                    snapshot)
from mirror3d.cli import main
from mirror3d.lifting.shards import read_shards


def lift_argv(root: pathlib.Path, work: pathlib.Path, *extra: str) -> list[str]:
    return ["lift", "--no_ray", "--mode", "flat", "--root", str(root),
            "--out", str(work / "finished-shards"), "--runs_root", str(work / "runs"),
            "--progress", "false", "--preview", "0", "--image_size", "8,16",
            "--num_points", "64", "--min_points", "0", "--shard_size", "8", *extra]


@pytest.fixture
def market(inputs, work) -> pathlib.Path:
    """A copy of the Market-1501 tree that the case may change."""
    return pathlib.Path(shutil.copytree(inputs.market, work / "Market-1501"))


def finished(argv: list[str], capsys) -> None:
    """Run a lift that must succeed."""
    assert main(argv) == 0, capsys.readouterr().err
    capsys.readouterr()


def refused(argv: list[str], work: pathlib.Path, capsys, *words: str) -> str:
    """Run a command that must be refused: exit 1, one line naming ``words``, nothing changed
    under ``work``."""
    before = snapshot(work)
    code = main(argv)
    line = one_error_line(capsys.readouterr().err, argv[0])
    assert code == 1, line
    for w in words:
        assert w.lower() in line.lower(), f"{w!r} not named in: {line}"
    assert changes(before, snapshot(work)) == []
    return line


# ---------------------------------------------------------------------------- re-runs
def test_rerun_with_a_changed_dataset_is_refused(market, work, capsys):
    """Issue: lift-flat into a finished directory with another dataset exited 0 claiming the
    old shards. Same root path, one image more: the dataset is not the one lifted."""
    finished(lift_argv(market, work, "--name", "first"), capsys)
    fx.write_rgb(market / "bounding_box_train" / "0009_c1s1_009100_02.jpg", seed=5)
    refused(lift_argv(market, work, "--name", "second"), work, capsys, "finished-shards")


def test_rerun_with_an_image_replaced_is_refused(market, work, capsys):
    finished(lift_argv(market, work, "--name", "first"), capsys)
    victim = sorted((market / "query").glob("*.jpg"))[0]
    fx.write_rgb(victim, size=(8, 16), seed=99)  # same name, other content (size/mtime)
    refused(lift_argv(market, work, "--name", "second"), work, capsys, "finished-shards")


def test_rerun_with_another_root_is_refused(market, inputs, work, capsys):
    finished(lift_argv(market, work, "--name", "first"), capsys)
    refused(lift_argv(inputs.market, work, "--name", "second"), work, capsys,
            "finished-shards", "root")


def test_rerun_with_another_shard_size_is_refused(market, work, capsys):
    """Issue: another shard size exited 0 claiming the old shards."""
    finished(lift_argv(market, work, "--name", "first"), capsys)
    argv = lift_argv(market, work, "--name", "second")
    argv[argv.index("--shard_size") + 1] = "5"
    refused(argv, work, capsys, "finished-shards", "shard_size")


def test_rerun_with_the_same_settings_resumes(market, work, capsys):
    """The control: the same command again is a resume (nothing lifted again, exit 0)."""
    finished(lift_argv(market, work, "--name", "first"), capsys)
    shards = sorted((work / "finished-shards").glob("*.parquet"))
    before = {p: p.read_bytes() for p in shards}
    assert main(lift_argv(market, work, "--name", "second")) == 0
    assert "already done" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in shards} == before


def test_a_failed_start_does_not_block_the_corrected_run(market, work, capsys):
    """Issue: a failed jobs/lift.py left a settings file that blocked the corrected re-run
    although no shard was written."""
    masks = work / "masks"
    for img in sorted(market.rglob("*.jpg")):
        _, m = fx.person_pair(8, 16, (0.5, 0.8))
        fx.write_mask(masks / f"{img.stem}.png", m.astype(np.uint8) * 255)
    argv = lift_argv(market, work, "--name", "first", "--mask_dir", str(masks),
                     "--reconstructor", "bad_input.bad_fixtures:failing_factory")
    argv[argv.index("--mode") + 1] = "casl-visible"
    try:
        code = main(argv)
    except Exception:  # noqa: BLE001 - a bug's traceback is fine here; the re-run is the test
        code = -1
    assert code != 0
    capsys.readouterr()
    assert not list((work / "finished-shards").glob("*.parquet"))
    assert not (work / "finished-shards" / "_meta" / "lift_settings.json").exists()
    assert not (work / "runs" / "lift" / "first").exists()
    fixed = [a if a != "bad_input.bad_fixtures:failing_factory" else "oracle-template"
             for a in argv]
    fixed[fixed.index("--name") + 1] = "second"
    assert main(fixed) == 0, capsys.readouterr().err
    assert len(read_shards(work / "finished-shards")) > 0


# ---------------------------------------------------------------------------- counted items
def skipped_items(run_dir: pathlib.Path) -> dict[str, str]:
    """``{file name: reason}`` of the run's list of skipped items (``skipped.tsv`` or
    ``bad_images.txt``, ``path<TAB>reason`` lines)."""
    found = {}
    for name in ("skipped.tsv", "bad_images.txt"):
        p = run_dir / name
        if p.exists():
            for line in p.read_text().splitlines():
                if "\t" in line:
                    path, _, reason = line.partition("\t")
                    found[pathlib.Path(path).name] = reason
    return found


def test_bad_images_are_counted_and_listed_never_lifted(market, work, capsys):
    """A corrupt image, a 1×1 image, a 6000×6000 image (issue: one 36 M-point cloud) and a
    16-bit image (issue: lifted all white) in one dataset: the first three are skipped, counted
    and listed with their reason; the 16-bit one is lifted with its grey."""
    train, gallery = market / "bounding_box_train", market / "bounding_box_test"
    corrupt = corrupt_file(train / "0002_c1s1_009000_07.jpg")
    tiny = gallery / "0003_c1s1_009001_08.jpg"
    Image.new("RGB", (1, 1), (10, 20, 30)).save(tiny, format="JPEG")
    huge = gallery / "0005_c2s1_009002_09.jpg"
    Image.new("L", (6000, 6000), 100).save(huge, format="JPEG")
    grey16 = gray16_png(work / "g16.png", 32768)
    (train / "0007_c2s1_009003_04.jpg").write_bytes(grey16.read_bytes())  # a PNG named .jpg
    code = main(lift_argv(market, work, "--name", "counted", "--image_size", "none"))
    out = capsys.readouterr().out
    assert code == 0
    assert any("3" in line and ("bad" in line or "skipped" in line)
               for line in out.splitlines()), out  # the counts line
    listed = skipped_items(work / "runs" / "lift" / "counted")
    assert set(listed) == {corrupt.name, tiny.name, huge.name}
    assert "1x1" in listed[tiny.name] and "6000x6000" in listed[huge.name]
    got = read_shards(work / "finished-shards")
    names = [pathlib.Path(p).name for p in got.path]
    assert not {corrupt.name, tiny.name, huge.name} & set(names)
    g = got.points[names.index("0007_c2s1_009003_04.jpg")]
    assert np.abs(g[:, 3:6] - 128 / 255).max() < 0.01  # its grey, not white


def test_masks_of_another_size_are_counted_not_resized(market, work, capsys):
    """Issue: the lifting job resized masks of another size than their image without a word."""
    masks = work / "masks"
    images = sorted(market.rglob("*.jpg"))
    for k, img in enumerate(images):
        _, m = fx.person_pair(8, 16, (0.5, 0.8))
        if k == 0:
            m = np.pad(m, ((0, 4), (0, 2)))  # 10x20 for an 8x16 image
        fx.write_mask(masks / f"{img.stem}.png", m.astype(np.uint8) * 255)
    argv = lift_argv(market, work, "--name", "masks", "--mask_dir", str(masks),
                     "--reconstructor", "oracle-template")
    argv[argv.index("--mode") + 1] = "casl-visible"
    assert main(argv) == 0, capsys.readouterr().err
    capsys.readouterr()
    got = read_shards(work / "finished-shards")
    assert images[0].name not in [pathlib.Path(p).name for p in got.path]
    assert len(got) == len(images) - 1
    listed = skipped_items(work / "runs" / "lift" / "masks")
    assert images[0].name in listed and "10x20" in listed[images[0].name]


def test_no_usable_image_fails_with_one_line(market, work, capsys):
    """Issue: a dataset whose images are all unusable "succeeded" with empty shards."""
    for img in market.rglob("*.jpg"):
        corrupt_file(img)
    code = main(lift_argv(market, work, "--name", "nothing"))
    line = one_error_line(capsys.readouterr().err, "lift")
    assert code == 1
    assert "usable" in line.lower() or "no image" in line.lower(), line
    assert not list(work.rglob("*.parquet"))


def test_synth_rerun_with_other_settings_is_refused(work, capsys):
    """SynthPeople generation resumes only into an output made with the same settings."""
    argv = ["synth", "--smoke", "--no_ray", "--out", str(work / "sp"), "--ids", "2",
            "--images_per_id", "2", "--distractor_ids", "0", "--junk_ids", "0",
            "--image_size", "16,32"]
    finished(argv, capsys)
    other = list(argv)
    other[other.index("--ids") + 1] = "3"
    refused(other, work, capsys, "sp", "ids")
