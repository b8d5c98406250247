"""Storage locations: local paths and URIs (against a local S3 API), staging, pull/push."""

from __future__ import annotations

import pathlib
import time

import pytest

from mirror3d.utils import storage


def test_is_uri_and_join():
    assert storage.is_uri("s3://b/x") and storage.is_uri("gs://b") and storage.is_uri("hdfs://h/p")
    assert not storage.is_uri("runs/casl") and not storage.is_uri("/abs/p")
    assert not storage.is_uri("file:///tmp/x")
    assert storage.join("s3://b/m3d/", "casl", "/run1/") == "s3://b/m3d/casl/run1"
    assert storage.join("s3://b", "") == "s3://b"
    assert storage.join("runs", "casl") == str(pathlib.Path("runs/casl"))
    assert storage.relative_to("s3://b/m3d/casl/r", "s3://b/m3d") == "casl/r"
    assert storage.relative_to("s3://b/m3dx", "s3://b/m3d") is None
    assert storage.relative_to("s3://b/m3d", "s3://b/m3d/") == ""


def test_relocate_moves_runs_and_lifted_shards_only():
    assert storage.relocate("runs/casl/r1", "s3://b/m3d") == "s3://b/m3d/casl/r1"
    assert storage.relocate("runs", "s3://b/m3d") == "s3://b/m3d"
    assert storage.relocate("data/lifted/flat", "s3://b/m3d") == "s3://b/m3d/lifted/flat"
    assert storage.relocate("data/lifted/flat", "/shared") == str(pathlib.Path("/shared/lifted/flat"))
    for kept in ("runsx/a", "data/synthpeople/Market-1501", "data/liftedx", "/abs/runs/a", ""):
        assert storage.relocate(kept, "s3://b/m3d") == kept


def test_storage_option_moves_every_job_output(tmp_path):
    """``--storage`` on the CLI: the lifting job's default shard folder and the re-id job's default
    shards (both ``data/lifted/<mode>``) and every run root move under the location."""
    import argparse

    from mirror3d.cli import JobCommand

    def cfg_of(job, *argv):
        cmd, parser = JobCommand(job), argparse.ArgumentParser()
        cmd.add_arguments(parser)
        return cmd.config(parser.parse_args(list(argv)))

    lift = cfg_of("lift", "--mode", "flat", "--storage", "s3://b/m3d")
    assert lift.out == "s3://b/m3d/lifted/flat" and lift.runs_root == "s3://b/m3d"
    assert cfg_of("lift", "--mode", "flat", "--storage", "s3://b/m3d", "--out",
                  str(tmp_path)).out == str(tmp_path)  # an explicit --out is kept
    assert cfg_of("lift", "--mode", "flat").out == ""  # without --storage: data/lifted/<mode>
    reid = cfg_of("train-reid", "--storage", "s3://b/m3d")
    assert reid.data.shards == "s3://b/m3d/lifted/flat"


def test_local_path_of_a_uri_mirrors_the_bucket(tmp_path, monkeypatch):
    monkeypatch.setenv(storage.STAGE_ENV, str(tmp_path))
    run = storage.local_path("s3://bkt/m3d/casl/run1")
    assert run == tmp_path / "s3" / "bkt" / "m3d" / "casl" / "run1"
    # nested locations map to nested folders: a run keeps its layout
    assert storage.local_path(storage.join("s3://bkt/m3d", "casl", "run1")) == run
    assert storage.local_path("s3://bkt/m3d") in run.parents
    with pytest.raises(ValueError, match="storage: .*scheme://bucket/path"):
        storage.local_path("s3://bkt/../etc")


def test_local_location_is_its_own_stage(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    assert storage.local_path(tmp_path) == tmp_path.resolve()
    assert storage.local_path(f"file://{tmp_path}") == tmp_path.resolve()
    assert storage.pull(tmp_path) == 0 and storage.push(tmp_path) == 0
    assert storage.exists(tmp_path / "a.txt") and not storage.exists(tmp_path / "b.txt")


def _read(uri: str) -> bytes:
    fs, path = storage.filesystem(uri)
    with fs.open_input_stream(path) as f:
        return f.read()


def test_push_pull_round_trip_through_s3(s3_bucket, tmp_path, monkeypatch):
    loc = storage.join(s3_bucket, "m3d", "casl", "run1")
    stage = storage.local_path(loc)
    (stage / "checkpoints" / "epoch_0000").mkdir(parents=True)
    (stage / "metrics.jsonl").write_text('{"epoch": 0}\n')
    (stage / "checkpoints" / "epoch_0000" / "checkpoint.pt").write_bytes(b"\x00" * 1000)
    assert not storage.exists(loc)
    assert storage.push(loc) == 2
    assert storage.exists(loc)
    assert _read(storage.join(loc, "metrics.jsonl")) == b'{"epoch": 0}\n'
    assert storage.push(loc) == 0  # nothing changed: nothing sent again
    # a local change of the same size is still sent (mtime differs from the stored object's)
    time.sleep(0.01)
    (stage / "metrics.jsonl").write_text('{"epoch": 1}\n')
    assert storage.push(loc) == 1
    assert _read(storage.join(loc, "metrics.jsonl")) == b'{"epoch": 1}\n'

    # another machine: an empty stage pulls the run with its layout
    monkeypatch.setenv(storage.STAGE_ENV, str(tmp_path / "other-node"))
    other = storage.local_path(loc)
    assert not other.exists()
    assert storage.pull(loc) == 2
    assert (other / "metrics.jsonl").read_text() == '{"epoch": 1}\n'
    assert (other / "checkpoints" / "epoch_0000" / "checkpoint.pt").stat().st_size == 1000
    assert storage.pull(loc) == 0
    # a sub folder only
    monkeypatch.setenv(storage.STAGE_ENV, str(tmp_path / "third-node"))
    assert storage.pull(loc, "checkpoints") == 1
    assert not (storage.local_path(loc) / "metrics.jsonl").exists()

    storage.remove(loc)
    assert not storage.exists(loc) and not storage.local_path(loc).exists()


def test_pull_of_a_missing_location_is_empty(s3_bucket):
    assert storage.pull(storage.join(s3_bucket, "nothing", "here")) == 0


def test_unknown_scheme_is_one_line_error():
    with pytest.raises(ValueError, match=r"storage: cannot open 'nosuchfs://b/x'"):
        storage.filesystem("nosuchfs://b/x")
