"""Runs are never overwritten (mirror3d/utils/rundir.py, the trainers' train_run), inputs are
fingerprinted by identity (files_digest), and jobs count what they skip (counts_line,
check_usable, skipped.tsv). No Ray: train_run's fit is replaced by a recorder."""

from __future__ import annotations

import os

import pytest

from mirror3d.engine.casl_train import CaslTrainConfig
from mirror3d.platform import train as rt
from mirror3d.utils.checkpoint import save_checkpoint
from mirror3d.utils.config import ConfigError, config_to_dict, update_config
from mirror3d.utils.errors import DataError
from mirror3d.utils.fingerprint import files_digest
from mirror3d.utils.rundir import (
    RunExistsError,
    check_usable,
    claim_run,
    counts_line,
    read_skipped,
    run_directory,
    write_skipped,
)


# ------------------------------------------------------------------------------ claim_run
def test_claim_run_refuses_resumes_or_replaces(tmp_path):
    run = tmp_path / "casl" / "r1"
    assert claim_run(str(run)) is False  # no such run: a fresh start
    run.mkdir(parents=True)
    (run / "model_final.pt").write_bytes(b"old")
    with pytest.raises(RunExistsError) as err:
        claim_run(str(run), resume_hint=f"--resume {run}")
    line = str(err.value)
    assert "\n" not in line and isinstance(err.value, ConfigError)
    assert line == (f"name: run {run} exists; pass --resume {run} to continue it or --overwrite "
                    f"to replace it (or choose another --name)")
    assert (run / "model_final.pt").read_bytes() == b"old"  # refused: untouched
    assert claim_run(str(run), resume=True) is True
    assert (run / "model_final.pt").exists()
    with pytest.raises(RunExistsError, match="contradict"):
        claim_run(str(run), resume=True, overwrite=True)
    assert claim_run(str(run), overwrite=True) is False
    assert not run.exists()  # every old file gone


def test_run_directory_refuses_an_existing_run_before_writing(tmp_path):
    with run_directory("job", "x", tmp_path) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(RunExistsError, match=r"job/x exists; pass --overwrite to replace it"):
        with run_directory("job", "x", tmp_path):
            pytest.fail("the body must not run")
    assert (tmp_path / "job" / "x" / "a.txt").read_text() == "first"
    assert not (tmp_path / "job" / ".x.partial").exists()
    with run_directory("job", "x", tmp_path, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in (tmp_path / "job" / "x").iterdir()) == ["b.txt"]


# ------------------------------------------------------------------------------ files_digest
def test_files_digest_tells_datasets_apart(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    paths = []
    for k in range(3):
        p = root / f"{k}.jpg"
        p.write_bytes(bytes([k]) * (10 + k))
        paths.append(p)
    first = files_digest(paths, root)
    assert first["files"] == 3 and first["bytes"] == 33
    assert files_digest(list(paths), root) == first  # the same files
    # the same dataset at another place (paths are relative to the root): the same identity
    moved = tmp_path / "moved"
    root.rename(moved)
    moved_paths = [moved / p.name for p in paths]
    assert files_digest(moved_paths, moved) == first
    # one file rewritten with the same size but a later time, one removed, one listed twice
    t = moved_paths[0].stat().st_mtime
    os.utime(moved_paths[0], (t + 5, t + 5))
    assert files_digest(moved_paths, moved)["digest"] != first["digest"]
    assert files_digest(moved_paths[:2], moved)["digest"] != first["digest"]
    assert files_digest(moved_paths + moved_paths[:1], moved)["digest"] != first["digest"]
    # "" stands for an absent file (no mask): counted as such
    assert files_digest(["", str(moved_paths[1])], moved)["files"] == 1
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        files_digest([moved / "nope.jpg"], moved)


# ------------------------------------------------------------------------------ counts
def test_counts_line_skipped_list_and_usable_fraction(tmp_path):
    skipped = {"unreadable": 1, "no mask": 2, "too few points": 0}
    assert counts_line("lift", 30, 27, skipped) == \
        "lift: read 30 images, used 27, skipped 3 (unreadable 1, no mask 2)"
    assert counts_line("lift", 4, 4, {}) == "lift: read 4 images, used 4, skipped 0"
    write_skipped(tmp_path, [("a\tb.jpg", "no\nmask"), ("c.jpg", "unreadable: truncated")])
    assert read_skipped(tmp_path) == [("a b.jpg", "no mask"), ("c.jpg", "unreadable: truncated")]
    write_skipped(tmp_path, [])
    assert (tmp_path / "skipped.tsv").read_text() == ""  # written even when nothing was skipped
    check_usable("lift", 30, 15, 0.5, skipped)  # exactly the fraction: fine
    with pytest.raises(DataError, match=r"used 14, .*only 47% usable, below "
                                        r"min_usable_fraction 0.5; skipped items with reasons: "
                                        r"x/skipped.tsv"):
        check_usable("lift", 30, 14, 0.5, skipped, where="x/skipped.tsv")
    with pytest.raises(DataError, match="no usable images"):
        check_usable("lift", 30, 0, 0.0, skipped)
    with pytest.raises(DataError, match="read 0 images, used 0.*no usable images"):
        check_usable("lift", 0, 0, 0.0, {})


# ------------------------------------------------------------------------------ train_run
@pytest.fixture
def fits(monkeypatch):
    """train_run's fit replaced by a recorder of its loop configs (no Ray)."""
    calls: list[dict] = []

    def fake_fit(worker, loop_config, **kw):
        calls.append(loop_config)

    monkeypatch.setattr(rt, "fit", fake_fit)
    return calls


def _finished_run(tmp_path, cfg):
    """A run of ``cfg``'s name as a finished train-casl leaves it (checkpoint, metrics, eval)."""
    run = tmp_path / "runs" / cfg.name
    ck = run / "checkpoints" / "epoch_0001" / "checkpoint.pt"
    save_checkpoint(ck, "casl", {"epoch": 1, "step": 4, "config": config_to_dict(cfg),
                                 "model": {}})
    (run / "metrics.jsonl").write_text('{"epoch": 0}\n{"epoch": 1}\n')
    (run / "model_final.pt").write_bytes(b"the old model")
    (run / "eval").mkdir()
    (run / "eval" / "metrics.json").write_text("{}")
    return run, ck


def test_train_run_never_retrains_into_an_existing_run(tmp_path, fits):
    cfg = update_config(CaslTrainConfig(), {"out_dir": str(tmp_path / "runs"), "name": "r"})
    run, ck = _finished_run(tmp_path, cfg)
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    # the same --name again: refused, one line naming the run and both options, Ray never called
    with pytest.raises(RunExistsError) as err:
        rt.train_run(None, cfg, "casl")
    assert str(err.value) == (f"name: run {run} exists; pass --resume {run} to continue it or "
                              f"--overwrite to replace it (or choose another --name)")
    assert fits == [] and sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before
    # resuming from another run into this name: refused too (it would mix two runs)
    other = update_config(cfg, {"name": "other"})
    _, other_ck = _finished_run(tmp_path, other)
    with pytest.raises(RunExistsError):
        rt.train_run(None, update_config(cfg, {"resume": str(other_ck)}), "casl")
    # --resume <the run>: continued in place from its newest checkpoint; the eval of the older
    # model is removed, the rest (metrics to be trimmed by the loop, checkpoints) kept
    assert rt.train_run(None, update_config(cfg, {"resume": str(run)}), "casl") == run
    assert fits[-1]["resume"] == str(ck.resolve()) and fits[-1]["run_dir"] == str(run)
    assert not (run / "eval").exists() and ck.exists() and (run / "metrics.jsonl").exists()
    # --resume and --overwrite together: contradictory
    with pytest.raises(RunExistsError, match="contradict"):
        rt.train_run(None, update_config(cfg, {"resume": str(run), "overwrite": True}), "casl")
    # --overwrite: every old file removed before the new run starts
    assert rt.train_run(None, update_config(cfg, {"overwrite": True}), "casl") == run
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]
    assert fits[-1]["resume"] == ""
    # a new name resumed from another run's checkpoint: a new run, the other one untouched
    new = rt.train_run(None, update_config(cfg, {"name": "fork", "resume": str(other_ck)}), "casl")
    assert new == tmp_path / "runs" / "fork" and fits[-1]["resume"] == str(other_ck.resolve())
    assert (tmp_path / "runs" / "other" / "model_final.pt").read_bytes() == b"the old model"
