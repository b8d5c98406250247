"""utils: atomic writes, settings fingerprints, checkpoints."""

import os

import pytest
import torch

from mirror3d.utils.checkpoint import (CheckpointError, latest_checkpoint, load_checkpoint,
                                       resolve_resume, save_checkpoint)
from mirror3d.utils.files import atomic_path, atomic_write
from mirror3d.utils.fingerprint import (check_settings, fingerprint, read_settings, settings_diff,
                                        write_settings)


def test_atomic_write_text_bytes_and_failure_keeps_old(tmp_path):
    p = tmp_path / "sub" / "a.json"
    atomic_write(p, "one")
    assert p.read_text() == "one"
    atomic_write(p, b"two")
    assert p.read_bytes() == b"two"
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            assert tmp.parent == p.parent and tmp.suffix == ".json"  # writers pick format by suffix
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert p.read_bytes() == b"two"
    assert sorted(os.listdir(p.parent)) == ["a.json"]  # no temporary file left


def test_fingerprint_is_order_free_and_type_stable():
    assert fingerprint({"a": 1, "b": (1, 2)}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
    assert len(fingerprint("x")) == 16


def test_settings_check_and_diff(tmp_path):
    path = tmp_path / "settings.json"
    assert check_settings(path, {"seed": 1}) == []  # nothing recorded yet
    write_settings(path, {"seed": 1, "size": (64, 128)})
    assert read_settings(path) == {"seed": 1, "size": [64, 128]}
    assert check_settings(path, {"size": [64, 128], "seed": 1}) == []
    assert check_settings(path, {"seed": 2, "size": (64, 128)}) == ["seed 1 (now 2)"]
    assert settings_diff({"a": 1}, {"b": 2}) == ["a 1 (now None)", "b None (now 2)"]
    path.write_text("{not json")
    assert check_settings(path, {"seed": 1}) == ["unreadable settings"]


def test_checkpoint_round_trip_kind_and_corruption(tmp_path):
    run = tmp_path / "run"
    for e in (0, 3):
        save_checkpoint(run / "checkpoints" / f"epoch_{e:04d}" / "checkpoint.pt", "casl",
                        {"epoch": e, "model": {"w": torch.ones(2) * e}})
    assert latest_checkpoint(run).parent.name == "epoch_0003"
    state = load_checkpoint(run, "casl")  # a run dir means its newest checkpoint
    assert state["epoch"] == 3 and state["format"] == "mirror3d/casl"
    assert resolve_resume(str(run), "casl").endswith("epoch_0003/checkpoint.pt")
    assert resolve_resume("", "casl") == ""
    weightless = save_checkpoint(tmp_path / "weightless.pt", "casl", {"epoch": 1})
    with pytest.raises(CheckpointError, match="weightless.pt holds no model"):
        resolve_resume(str(weightless), "casl")  # found before any worker starts, not a KeyError
    with pytest.raises(CheckpointError, match="expected format 'mirror3d/reid'"):
        load_checkpoint(run, "reid")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(latest_checkpoint(run).read_bytes()[:50])
    with pytest.raises(CheckpointError, match="truncated, corrupt or foreign"):
        load_checkpoint(cut, "casl")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nope.pt", "casl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no checkpoint under"):
        resolve_resume(str(tmp_path / "empty"), "casl")
