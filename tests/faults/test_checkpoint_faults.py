"""Checkpoints under faults (mirror3d/utils/checkpoint.py, mirror3d/utils/files.py): a process
killed between writing a checkpoint file and its rename leaves the previous checkpoint loadable;
a corrupted newest checkpoint of a run is skipped with a warning for the one before it; a full
disk while writing one is a one-line error with the previous checkpoint intact."""

from __future__ import annotations

import errno
import logging
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile

import pytest
import torch

from faults.fault_injection import small_disk
from mirror3d.utils.checkpoint import (CheckpointError, load_checkpoint, resolve_resume,
                                       save_checkpoint, verify_checkpoint)
from mirror3d.utils.files import DiskFullError, stale_temporaries

EPOCH_0 = "checkpoints/epoch_0000/checkpoint.pt"
EPOCH_1 = "checkpoints/epoch_0001/checkpoint.pt"

#: a child process that saves epoch 0 (a checkpoint and the final model), then is SIGKILLed
#: inside the rename of its next save_checkpoint (of argv[2]): after the new file was written
#: in full, before it replaced anything
KILLED_AT_RENAME = textwrap.dedent("""
    import os, signal, sys
    import torch
    from mirror3d.utils.checkpoint import save_checkpoint
    run, target = sys.argv[1], sys.argv[2]
    for rel in ("checkpoints/epoch_0000/checkpoint.pt", "model_final.pt"):
        save_checkpoint(os.path.join(run, rel), "casl", {"epoch": 0, "model": torch.zeros(64)})
    os.replace = lambda src, dst: os.kill(os.getpid(), signal.SIGKILL)
    save_checkpoint(os.path.join(run, target), "casl", {"epoch": 1, "model": torch.ones(64)})
    print("still alive")
""")


@pytest.mark.parametrize("target", [EPOCH_1, "model_final.pt"])
def test_killed_between_writing_and_renaming_the_previous_checkpoint_loads(tmp_path, target):
    run = tmp_path / "run"
    child = subprocess.run([sys.executable, "-c", KILLED_AT_RENAME, str(run), target],
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == -9, child.stderr  # SIGKILL, not a clean exit
    assert "still alive" not in child.stdout

    # the checkpoint of epoch 1 was written in full and never renamed into place ...
    [stale] = stale_temporaries(run / target)
    verify_checkpoint(stale)
    assert torch.load(stale, weights_only=True)["epoch"] == 1
    # ... so the run's newest checkpoint, its resume point and its final model are epoch 0's
    assert load_checkpoint(run, "casl")["epoch"] == 0
    assert resolve_resume(str(run), "casl") == str((run / EPOCH_0).resolve())
    assert load_checkpoint(run / "model_final.pt", "casl")["epoch"] == 0
    assert torch.equal(load_checkpoint(run / "model_final.pt", "casl")["model"], torch.zeros(64))

    # the run goes on: the next save of that file replaces it and removes the leftover
    save_checkpoint(run / target, "casl", {"epoch": 1, "model": torch.ones(64)})
    assert stale_temporaries(run / target) == []
    assert load_checkpoint(run / target, "casl")["epoch"] == 1


def _run_with_epochs(run, n: int) -> None:
    for e in range(n):
        save_checkpoint(run / "checkpoints" / f"epoch_{e:04d}" / "checkpoint.pt", "reid",
                        {"epoch": e, "model": torch.full((4096,), float(e))})


def _flip_a_weight_byte(path) -> None:
    """Flip one byte inside the stored tensor (the archive's structure stays valid: torch.load
    alone would load the changed weights without a word)."""
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith("/data/0"))
    data = bytearray(path.read_bytes())
    # the member's bytes follow its 30-byte local header, name and extra field
    with open(path, "rb") as fh:
        fh.seek(info.header_offset + 26)
        name_len, extra_len = int.from_bytes(fh.read(2), "little"), int.from_bytes(fh.read(2), "little")
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.file_size // 2] ^= 0x40
    path.write_bytes(bytes(data))


def test_a_corrupted_newest_checkpoint_falls_back_to_the_one_before_with_a_warning(tmp_path,
                                                                                   caplog):
    run = tmp_path / "run"
    _run_with_epochs(run, 3)
    newest = run / "checkpoints" / "epoch_0002" / "checkpoint.pt"
    _flip_a_weight_byte(newest)
    assert torch.load(newest, weights_only=True)["epoch"] == 2  # torch alone does not notice

    with caplog.at_level(logging.WARNING, logger="mirror3d.utils.checkpoint"):
        state = load_checkpoint(run, "reid")
    assert state["epoch"] == 1 and torch.equal(state["model"], torch.full((4096,), 1.0))
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert str(newest) in warning and "corrupt" in warning
    assert str(run / "checkpoints" / "epoch_0001" / "checkpoint.pt") in warning

    # a run directory to resume from: the same fallback, before any worker starts
    assert resolve_resume(str(run), "reid").endswith("epoch_0001/checkpoint.pt")
    # the corrupt file named explicitly is an error naming it, never silently other weights
    with pytest.raises(CheckpointError, match="corrupt") as err:
        load_checkpoint(newest, "reid")
    assert str(newest) in str(err.value) and "\n" not in str(err.value)


def test_a_truncated_newest_checkpoint_falls_back_and_all_corrupt_is_an_error(tmp_path, caplog):
    run = tmp_path / "run"
    _run_with_epochs(run, 2)
    newest = run / EPOCH_1
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a copy cut short
    with caplog.at_level(logging.WARNING, logger="mirror3d.utils.checkpoint"):
        assert load_checkpoint(run, "reid")["epoch"] == 0
    assert any(str(newest) in r.getMessage() for r in caplog.records)

    _flip_a_weight_byte(run / EPOCH_0)  # now none of the run's checkpoints is whole
    with pytest.raises(CheckpointError, match="older one") as err:
        resolve_resume(str(run), "reid")
    assert str(newest) in str(err.value) and "\n" not in str(err.value)


def test_disk_full_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    run = tmp_path / "run"
    save_checkpoint(run / "model_final.pt", "casl", {"epoch": 0, "model": torch.zeros(64)})
    _run_with_epochs(run, 1)
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    # the disk has 4 kB left: torch writes into the temporary file until the OS refuses
    monkeypatch.setattr("mirror3d.utils.checkpoint.open", small_disk(4096), raising=False)
    for target, kept in (("model_final.pt", "its previous version is unchanged"),
                         (EPOCH_1, "nothing was written")):
        with pytest.raises(DiskFullError) as err:
            save_checkpoint(run / target, "casl", {"epoch": 1, "model": torch.ones(100_000)})
        message = str(err.value)
        assert message == f"cannot write {run / target}: no space left on the device; {kept}"
        assert err.value.errno == errno.ENOSPC  # an OSError(ENOSPC) for callers catching those
        # the same error after a trip through pickle (from a Ray worker to the driver)
        back = pickle.loads(pickle.dumps(err.value))
        assert type(back) is DiskFullError and (str(back), back.errno) == (message, errno.ENOSPC)
    monkeypatch.undo()
    # nothing changed: no temporary file, no empty epoch_0001 folder, epoch 0 as it was
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
    assert load_checkpoint(run / "model_final.pt", "casl")["epoch"] == 0
    assert load_checkpoint(run, "reid")["epoch"] == 0


def test_atomic_writes_reach_the_disk_before_the_rename(tmp_path, monkeypatch):
    """The temporary file is fsync'ed before it replaces the target (else a power loss can leave
    a renamed but empty file), and the folder after (the rename itself)."""
    from mirror3d.utils.files import atomic_write

    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    atomic_write(tmp_path / "a.json", "{}")
    assert events == ["fsync", "replace", "fsync"]
    assert (tmp_path / "a.json").read_text() == "{}"


def test_over_quota_is_named_as_such_and_leaves_no_new_folder(tmp_path):
    from mirror3d.utils.files import atomic_path

    target = tmp_path / "new" / "deeper" / "out.json"
    with pytest.raises(DiskFullError) as err:
        with atomic_path(target) as tmp:
            tmp.write_text("{")
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
    assert str(err.value) == f"cannot write {target}: disk quota exceeded; nothing was written"
    assert err.value.errno == errno.EDQUOT
    assert list(tmp_path.iterdir()) == []  # the folders made for it are gone again
