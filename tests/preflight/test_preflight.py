"""Driver-side checks before Ray starts (mirror3d.utils.preflight) and the jobs that run them:
each bad input is one line naming the key, exit 1, nothing written and Ray never started
(``ray.init`` is made to fail for the whole module)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import ray
from PIL import Image

import dataset_fixtures
from mirror3d.cli import main
from mirror3d.engine.reid_train import load_reid_model
from mirror3d.models.casl import load_casl
from mirror3d.utils.checkpoint import CheckpointError, save_checkpoint
from mirror3d.utils.errors import DataError, InputNotFound, InputPathError, OutputPathError
from mirror3d.utils.preflight import (check_checkpoint, check_images, check_input, check_output,
                                      scan_images)


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    """Every check here must come before Ray: starting it fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started before the bad input was found")
    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)


def one_error_line(capsys, cmd: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"mirror3d {cmd}: error: "), err
    return err.strip()


def files_under(path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def write_image(path, size=(16, 32), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": 3, "L": 1}[mode]
    arr = np.full((size[1], size[0], channels), 128, np.uint8).squeeze()
    Image.fromarray(arr).save(path)
    return path


def truncated_copy(src, dst):
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


# ------------------------------------------------------------------------------ the checks
def test_check_output_refuses_files_files_above_and_read_only_folders(tmp_path):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(OutputPathError, match=r"^out: .*taken is a file; expected a folder"):
        check_output(tmp_path / "taken", "out")
    with pytest.raises(OutputPathError, match=r"^out_dir: .*taken/a/b is under .*taken, which is a file"):
        check_output(tmp_path / "taken" / "a" / "b", "out_dir")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):  # root ignores the mode bits: nothing to refuse
            assert check_output(ro / "x", "out") == ro / "x"
        else:
            with pytest.raises(OutputPathError, match="permission denied"):
                check_output(ro / "x", "out")
    finally:
        ro.chmod(0o700)
    assert check_output(tmp_path / "new" / "deeper", "out") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # nothing created
    assert check_output("s3://bucket/runs", "out") is None  # URIs: the store's business


def test_check_input_names_missing_and_wrong_kind(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(InputNotFound, match=r"^data.root: dataset .*nope does not exist$"):
        check_input(tmp_path / "nope", "data.root", what="dataset")
    with pytest.raises(InputPathError, match=r"^root: .*f.txt is a file; expected a folder$"):
        check_input(tmp_path / "f.txt", "root")
    with pytest.raises(InputPathError, match="is a folder; expected a file"):
        check_input(tmp_path, "fid_model", kind="file")
    assert check_input(tmp_path, "root") == tmp_path


def test_check_checkpoint_names_the_kind_it_got(tmp_path):
    reid = save_checkpoint(tmp_path / "reid" / "model_final.pt", "reid",
                           {"config": {}, "model": {}, "num_classes": 2})
    with pytest.raises(CheckpointError, match=r"^checkpoint: .*model_final.pt is a re-id checkpoint "
                                              r"\(train-reid\); expected a CASL checkpoint"):
        check_checkpoint(tmp_path / "reid", "casl")  # the run directory resolves to its model
    assert check_checkpoint(tmp_path / "reid", "reid", needs=("config", "model", "num_classes")) == reid
    no_config = save_checkpoint(tmp_path / "c.pt", "casl", {"model": {}})
    with pytest.raises(CheckpointError, match="CASL checkpoint .* without config"):
        check_checkpoint(no_config, "casl")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read as a mirror3d checkpoint"):
        check_checkpoint(tmp_path / "junk.pt", "casl")
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(InputNotFound, match="no checkpoint in"):
        check_checkpoint(tmp_path / "empty_run", "casl", "run_dir")


def test_scan_images_finds_corrupt_truncated_missing_and_mismatched_masks(tmp_path):
    good = write_image(tmp_path / "good.png")
    jpg = write_image(tmp_path / "good.jpg")
    mask = write_image(tmp_path / "mask.png", mode="L")
    small_mask = write_image(tmp_path / "small.png", size=(8, 16), mode="L")
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    cut_png = truncated_copy(good, tmp_path / "cut.png")
    cut_jpg = truncated_copy(jpg, tmp_path / "cut.jpg")
    pairs = [(good, mask), (jpg, None), (good, small_mask), (garbage, None), (cut_png, None),
             (cut_jpg, None), (tmp_path / "gone.png", None), (good, tmp_path / "gone_mask.png")]
    bad = dict(scan_images(pairs))
    assert str(good) in bad and "mask " in bad[str(good)]
    reasons = [r for _, r in scan_images(pairs)]
    assert len(reasons) == 6
    assert "small.png is 8x16 but its image is 16x32" in reasons[0]
    assert all("cannot be decoded" in r for r in reasons[1:4])
    assert reasons[4].endswith("gone.png does not exist")
    assert reasons[5].startswith("mask ") and "gone_mask.png does not exist" in reasons[5]
    with pytest.raises(DataError, match=r"^data.root: 6 of 8 training images cannot be used: .*"
                                        r"\(and 3 more\); fix or remove them$"):
        check_images(pairs, "data.root")
    assert check_images(pairs[:2], "data.root") == 2


# ------------------------------------------------------------------------------ checkpoint loaders
def test_loaders_raise_checkpoint_errors_not_key_errors(tmp_path):
    save_checkpoint(tmp_path / "c1.pt", "casl", {"model": {}})
    with pytest.raises(CheckpointError, match="holds no training config"):
        load_casl(tmp_path / "c1.pt")
    save_checkpoint(tmp_path / "c2.pt", "casl", {"config": {"net": {}}})
    with pytest.raises(CheckpointError, match="holds no model weights"):
        load_casl(tmp_path / "c2.pt")
    save_checkpoint(tmp_path / "r1.pt", "reid", {"model": {}, "num_classes": 3})
    with pytest.raises(CheckpointError, match="holds no training config"):
        load_reid_model(tmp_path / "r1.pt")
    save_checkpoint(tmp_path / "r2.pt", "reid", {"config": {"model": {"name": "no-such-net"}},
                                                 "model": {}, "num_classes": 3})
    with pytest.raises(CheckpointError, match="does not describe a re-id model"):
        load_reid_model(tmp_path / "r2.pt")
    save_checkpoint(tmp_path / "r3.pt", "reid", {"config": {}, "model": {}})
    with pytest.raises(CheckpointError, match="holds no num_classes"):
        load_reid_model(tmp_path / "r3.pt")


# ------------------------------------------------------------------------------ jobs, through the CLI
@pytest.fixture
def reid_run(tmp_path):
    run = tmp_path / "runs" / "ognet" / "r"
    save_checkpoint(run / "model_final.pt", "reid", {"config": {}, "model": {}, "num_classes": 2})
    return run


def test_lift_refuses_a_re_id_checkpoint_before_ray(tmp_path, reid_run, capsys):
    root = dataset_fixtures.make_market1501(tmp_path / "m")
    out, runs = tmp_path / "lifted", tmp_path / "lift_runs"
    code = main(["lift", "--mode", "casl-visible", "--root", str(root), "--missing_mask", "estimate",
                 "--checkpoint", str(reid_run), "--out", str(out), "--runs_root", str(runs)])
    assert code == 1
    line = one_error_line(capsys, "lift")
    assert "checkpoint: " in line and "is a re-id checkpoint (train-reid); expected a CASL" in line
    assert not out.exists() and not runs.exists()


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_lift_refuses_an_out_that_is_or_lies_under_a_file(tmp_path, capsys, where):
    root = dataset_fixtures.make_market1501(tmp_path / "m")
    taken = tmp_path / "taken"
    taken.write_text("x")
    out = taken if where == "file" else taken / "shards"
    code = main(["lift", "--mode", "flat", "--root", str(root), "--out", str(out),
                 "--runs_root", str(tmp_path / "runs")])
    assert code == 1
    line = one_error_line(capsys, "lift")
    assert line.startswith("mirror3d lift: error: out: ") and "is a file" in line
    assert taken.read_text() == "x" and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("problem", ["corrupt_image", "mask_size"])
def test_train_casl_finds_bad_training_files_before_ray(tmp_path, capsys, problem):
    hq = dataset_fixtures.make_market_hq(tmp_path / "d", size=(16, 32))
    images = sorted((hq / "pytorch" / "train_all").rglob("*.png"))
    masks = sorted((hq / "seg_hmr" / "train_all").rglob("*.png"))
    if problem == "corrupt_image":
        bad = images[1]
        bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    else:
        bad = masks[1]
        write_image(bad, size=(8, 16), mode="L")
    out = tmp_path / "runs"
    code = main(["train-casl", "--smoke", "--data.root", str(hq), "--data.ratio_range", "0.0,1.0",
                 "--out_dir", str(out), "--name", "t"])
    assert code == 1
    line = one_error_line(capsys, "train-casl")
    assert "data.root: 1 of " in line and bad.name in line
    assert ("cannot decode" if problem == "corrupt_image" else "8x16 but its image is 16x32") in line
    assert not out.exists()


def test_train_casl_refuses_an_out_dir_that_is_a_file(tmp_path, capsys):
    hq = dataset_fixtures.make_market_hq(tmp_path / "d")
    (tmp_path / "runs").write_text("x")
    assert main(["train-casl", "--smoke", "--data.root", str(hq),
                 "--out_dir", str(tmp_path / "runs")]) == 1
    assert "out_dir: " in one_error_line(capsys, "train-casl")


def test_eval_casl_given_a_checkpoint_file_says_so(tmp_path, capsys):
    ckpt = save_checkpoint(tmp_path / "runs" / "casl" / "r" / "model_final.pt", "casl",
                           {"config": {}, "model": {}})
    assert main(["eval-casl", str(ckpt)]) == 1
    line = one_error_line(capsys, "eval-casl")
    assert f"run_dir: {ckpt} is a file (a checkpoint?); expected a train-casl run directory" in line
    assert "does not exist" not in line


def test_eval_casl_given_a_re_id_run_names_it(reid_run, capsys):
    assert main(["eval-casl", str(reid_run)]) == 1
    assert "is a re-id checkpoint (train-reid); expected a CASL" in one_error_line(capsys, "eval-casl")
    assert not (reid_run / "eval").exists()


def test_eval_reid_checks_its_output_before_evaluating(tmp_path, reid_run, capsys, monkeypatch):
    import mirror3d.jobs.eval_reid as job

    def never(*args, **kwargs):
        raise AssertionError("evaluated before the output was checked")
    monkeypatch.setattr(job, "load_reid_model", never)
    monkeypatch.setattr(job, "evaluate_model", never)
    (tmp_path / "out_file").write_text("x")
    assert main(["eval-reid", str(reid_run), "--out", str(tmp_path / "out_file" / "ev")]) == 1
    assert "out: " in one_error_line(capsys, "eval-reid")


@pytest.mark.parametrize("argv", [
    ["synth", "--smoke", "--out", "{file}"],
    ["turntable", "--frames", "1", "--out_dir", "{file}/sub"],
    ["ablate-casl", "--smoke", "--base.data.root", "{tmp}", "--out_dir", "{file}"],
])
def test_jobs_refuse_an_output_that_is_a_file(tmp_path, capsys, argv):
    taken = tmp_path / "taken"
    taken.write_text("x")
    before = files_under(tmp_path)
    argv = [a.format(file=taken, tmp=tmp_path) for a in argv]
    assert main(argv) == 1
    line = one_error_line(capsys, argv[0])
    assert str(taken) in line and "is a file" in line
    assert files_under(tmp_path) == before  # nothing written


def test_train_reid_2d_finds_a_corrupt_image_before_ray(tmp_path, capsys):
    root = dataset_fixtures.make_market1501(tmp_path / "m")
    bad = sorted((root / "query").glob("*.jpg"))[0]
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "runs"
    assert main(["train-reid", "--smoke", "--model.name", "cnn2d-small", "--data.images", str(root),
                 "--out_dir", str(out)]) == 1
    line = one_error_line(capsys, "train-reid")
    assert line.startswith("mirror3d train-reid: error: data.images: 1 of ") and bad.name in line
    assert not out.exists()
