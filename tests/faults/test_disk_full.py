"""A full disk while writing a shard or a training checkpoint (mirror3d/utils/files.py under
mirror3d/lifting/shards.py and mirror3d/utils/checkpoint.py): one line naming the file, exit 1,
what was written before intact and nothing half-written; the re-run (resume) finishes the job.

The full disk is simulated (a real one needs a mounted tmpfs, i.e. root): for shards by pyarrow's
writer storing what fits and then raising the error pyarrow raises on a full file system
(``OSError(28, "Error writing bytes to file. Detail: [errno 28] No space left on device")``,
measured on a 200 kB tmpfs); for checkpoints by the file torch writes into refusing bytes with
``ENOSPC`` (:func:`faults.fault_injection.small_disk`)."""

from __future__ import annotations

import errno
import hashlib
import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from faults.fault_injection import small_disk
from lifting.lift_fixtures import make_lift_tree
from mirror3d.cli import main
from mirror3d.engine.reid_train import train_reid_loop
from mirror3d.jobs import resolve_config
from mirror3d.lifting.lifter import META_DIR
from mirror3d.lifting.shards import read_shards, write_shard
from mirror3d.utils.checkpoint import load_checkpoint, resolve_resume
from mirror3d.utils.config import update_config
from mirror3d.utils.files import DiskFullError
from reid_fixtures import market_and_shards

PYARROW_ENOSPC = "Error writing bytes to file. Detail: [errno 28] No space left on device"


def full_disk_on_write(monkeypatch, failing_call: int = 1, room: int = 1000) -> list[str]:
    """From the ``failing_call``-th parquet write on, the disk is full: the file gets its first
    ``room`` bytes, then the write fails. Returns the list of paths written to (in order)."""
    real = pq.write_table
    calls: list[str] = []

    def write_table(table, where, **kwargs):
        calls.append(str(where))
        if len(calls) < failing_call:
            return real(table, where, **kwargs)
        buf = io.BytesIO()
        real(table, buf, **kwargs)
        with open(where, "wb") as fh:
            fh.write(buf.getvalue()[:room])
        raise OSError(errno.ENOSPC, PYARROW_ENOSPC)

    monkeypatch.setattr(pq, "write_table", write_table)
    return calls


def _cloud(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((500, 6), dtype=np.float32)


def test_disk_full_while_rewriting_a_shard_keeps_the_old_one(tmp_path, monkeypatch):
    shard = tmp_path / "train-00000.parquet"
    write_shard(shard, [_cloud(0)], [1], [0], ["train"], ["a.jpg"], "flat")
    before = shard.read_bytes()
    full_disk_on_write(monkeypatch)
    with pytest.raises(DiskFullError) as err:
        write_shard(shard, [_cloud(1), _cloud(2)], [1, 2], [0, 1], ["train"] * 2,
                    ["a.jpg", "b.jpg"], "flat")
    assert str(err.value) == (f"cannot write {shard}: no space left on the device; "
                              f"its previous version is unchanged")
    monkeypatch.undo()
    assert shard.read_bytes() == before and sorted(tmp_path.iterdir()) == [shard]
    assert list(read_shards(shard).path) == ["a.jpg"]


def _lift(tree, out, runs, name) -> list[str]:
    return ["lift", "--no_ray", "--mode", "flat", "--root", str(tree["root"]), "--out", str(out),
            "--runs_root", str(runs), "--name", name, "--shard_size", "4", "--image_size", "8,16",
            "--num_points", "64", "--min_points", "0", "--preview", "0"]


def _digests(out) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.glob("*.parquet")}


def test_disk_full_mid_lifting_is_one_line_and_the_rerun_completes(tmp_path, monkeypatch,
                                                                   capsys):
    tree = make_lift_tree(tmp_path / "data")
    ref = tmp_path / "ref"
    assert main(_lift(tree, ref, tmp_path / "runs", "ref")) == 0
    capsys.readouterr()

    out = tmp_path / "out"
    written = full_disk_on_write(monkeypatch, failing_call=3)
    assert main(_lift(tree, out, tmp_path / "runs", "full")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    failed = written[2]  # the temporary file of the third shard
    shard = failed.split("/")[-1].split(".")[1] + ".parquet"  # .<stem>.<random>.tmp.parquet
    assert err == [f"mirror3d lift: error: cannot write {out / shard}: no space left on the "
                   f"device; nothing was written"]
    monkeypatch.undo()
    # the two shards finished before are there with their metas; of the third nothing at all
    assert sorted(_digests(out)) == sorted(
        f"{m.stem}.parquet" for m in (out / META_DIR).glob("*-*.json"))
    assert len(_digests(out)) == 2 and shard not in _digests(out)
    assert all(_digests(out)[k] == _digests(ref)[k] for k in _digests(out))
    assert [p.name for p in out.rglob(".*")] == []  # no temporary file left

    done_before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}

    # space again: the re-run lifts only what is missing and ends with the clean run's shards
    assert main(_lift(tree, out, tmp_path / "runs", "again")) == 0
    assert {k: (out / k).stat().st_mtime_ns for k in done_before} == done_before  # kept as they were
    assert _digests(out) == _digests(ref)
    got = read_shards(out)
    assert len(set(got.path)) == len(got.path) == len(read_shards(ref))


def test_disk_full_at_a_training_checkpoint_stops_with_one_line_and_resumes(tmp_path,
                                                                           monkeypatch):
    """OG-Net training (the engine's loop, as in a Ray Train worker) whose disk fills up when
    the checkpoint of epoch 1 is written: the error names that file; the checkpoint of epoch 0
    is intact, nothing of epoch 1's is left; resumed from the run directory once there is room,
    the run ends with every epoch logged once."""
    root, shards = market_and_shards(tmp_path / "data")
    cfg = update_config(resolve_config("train-reid", "smoke"), {
        "data.shards": str(shards), "data.images": str(root), "optim.batch_size": 6,
        "optim.instances": 2, "optim.epochs": 3, "tracking.mlflow": False})
    run = tmp_path / "run"
    full = small_disk(0)

    def open_(path, mode="r", *args, **kwargs):  # only epoch 1's checkpoint finds the disk full
        return (full if "epoch_0001" in str(path) else open)(path, mode, *args, **kwargs)

    monkeypatch.setattr("mirror3d.utils.checkpoint.open", open_, raising=False)
    with pytest.raises(DiskFullError) as err:
        train_reid_loop(cfg, run)
    target = run / "checkpoints" / "epoch_0001" / "checkpoint.pt"
    assert str(err.value) == f"cannot write {target}: no space left on the device; nothing was written"
    monkeypatch.undo()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch_0000"]
    assert load_checkpoint(run, "reid")["epoch"] == 0
    assert [p for p in run.rglob(".*") if p.name.startswith(".checkpoint")] == []
    assert not (run / "model_final.pt").exists()

    train_reid_loop(cfg, run, resume=resolve_resume(str(run), "reid"))
    epochs = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0, 1, 2]
    assert load_checkpoint(run / "model_final.pt", "reid")["epoch"] == 2
