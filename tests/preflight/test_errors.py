"""The user-error hierarchy (mirror3d.utils.errors): what the CLI prints as one line, and the
original error found inside Ray's wrappers (a task's RayTaskError, Ray Train's per-rank
failures). No Ray instance is started: Ray's exception classes are built directly."""

from __future__ import annotations

import errno

import pytest
from ray.exceptions import RayTaskError

import mirror3d.jobs.turntable as turntable_job
from mirror3d.cli import main
from mirror3d.platform import train as rt
from mirror3d.utils.checkpoint import CheckpointError
from mirror3d.utils.config import ConfigError
from mirror3d.utils.errors import (DataError, InputNotFound, JobFailed, OutputPathError,
                                   RemoteFailed, UserError, is_user_error, unwrap_error)

REMOTE_TB = ("Traceback (most recent call last):\n  File \"worker.py\", line 3, in f\n"
             "    raise ValueError(...)\n")


def ray_task_error(cause: BaseException) -> BaseException:
    """What ``ray.get`` raises for a task that raised ``cause``: a RayTaskError that is also an
    instance of the cause's class, whose message is the remote traceback."""
    return RayTaskError("task", REMOTE_TB + f"{type(cause).__name__}: {cause}", cause,
                        proctitle="ray::task", pid=1, ip="127.0.0.1").as_instanceof_cause()


class WorkerGroupError(Exception):  # the shape of Ray Train V2's error: per-rank failures
    def __init__(self, failures):
        super().__init__("Training failed due to worker errors")
        self.worker_failures = failures


def test_every_user_error_is_one_class_tree_and_keeps_its_builtin():
    for cls, builtin in ((ConfigError, ValueError), (CheckpointError, ValueError),
                         (InputNotFound, FileNotFoundError), (OutputPathError, ValueError),
                         (DataError, ValueError), (JobFailed, RuntimeError),
                         (rt.TrainingFailed, RuntimeError)):
        assert issubclass(cls, UserError) and issubclass(cls, builtin), cls
        assert is_user_error(cls("x"))


def test_environment_errors_are_user_errors_bugs_are_not():
    assert is_user_error(OSError(errno.ENOSPC, "No space left on device", "/tmp/x"))
    assert is_user_error(PermissionError(errno.EACCES, "Permission denied", "/root/x"))
    assert not is_user_error(OSError("socket closed"))  # no errno: not the user's
    for bug in (KeyError("k"), TypeError("t"), AttributeError("a"), IndexError("i")):
        assert not is_user_error(bug)


def test_unwrap_finds_the_tasks_error_as_its_own_type_with_the_remote_traceback():
    wrapped = ray_task_error(OutputPathError("out: /x is a file; expected a folder"))
    assert isinstance(wrapped, ValueError) and not is_user_error(wrapped)  # its str is a traceback
    found = unwrap_error(wrapped)
    assert type(found) is OutputPathError and str(found) == "out: /x is a file; expected a folder"
    assert "worker.py" in found.remote_traceback


def test_unwrap_leaves_bugs_alone_even_when_they_chain_a_user_error():
    bug = ray_task_error(KeyError("model"))
    assert unwrap_error(bug) is bug
    try:
        try:
            raise ValueError("inner")
        except ValueError as e:
            raise TypeError("a bug while handling it") from e
    except TypeError as e:
        assert unwrap_error(e) is e


def test_worker_error_prefers_the_lowest_rank_with_a_user_error():
    e = rt.worker_error(WorkerGroupError({0: ray_task_error(RuntimeError("collective timed out")),
                                          1: ray_task_error(DataError("data.root: 1 of 5 ..."))}))
    assert type(e) is DataError and str(e) == "data.root: 1 of 5 ..."
    e = rt.worker_error(WorkerGroupError({0: ray_task_error(KeyError("model"))}))
    assert isinstance(e, rt.TrainingFailed) and isinstance(e, RemoteFailed)
    assert "worker 0: KeyError: 'model'" in str(e) and "worker.py" in e.remote_traceback


def _fail_with(monkeypatch, exc: BaseException) -> None:
    def run(cfg):
        raise exc
    monkeypatch.setattr(turntable_job, "run", run)


def test_cli_prints_a_wrapped_user_error_as_its_own_one_line(monkeypatch, capsys):
    _fail_with(monkeypatch, ray_task_error(DataError("data.root: image a.png cannot be decoded")))
    assert main(["turntable"]) == 1
    err = capsys.readouterr().err
    assert err == "mirror3d turntable: error: data.root: image a.png cannot be decoded\n"


def test_cli_debug_shows_the_remote_traceback(monkeypatch, capsys):
    _fail_with(monkeypatch, ray_task_error(DataError("data.root: bad")))
    assert main(["--debug", "turntable"]) == 1
    err = capsys.readouterr().err
    assert "the remote traceback" in err and "worker.py" in err


def test_cli_config_errors_exit_2_environment_errors_exit_1(monkeypatch, capsys):
    _fail_with(monkeypatch, ray_task_error(ConfigError("name: run runs/x exists")))
    assert main(["turntable"]) == 2
    assert capsys.readouterr().err.strip() == "mirror3d turntable: error: name: run runs/x exists"
    _fail_with(monkeypatch, OSError(errno.ENOSPC, "No space left on device", "/full/a.pt"))
    assert main(["turntable"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err and "/full/a.pt" in err


def test_cli_bugs_keep_their_traceback(monkeypatch):
    _fail_with(monkeypatch, KeyError("model"))
    with pytest.raises(KeyError):
        main(["turntable"])
    wrapped = ray_task_error(KeyError("model"))
    _fail_with(monkeypatch, wrapped)
    with pytest.raises(KeyError) as info:
        main(["turntable"])
    assert info.value is wrapped


def test_lifting_actor_errors_come_back_to_the_driver_as_they_were_raised():
    from mirror3d.platform.lifting import _error_row, _raise_actor_error

    try:
        raise CheckpointError("checkpoint: m.pt is a re-id checkpoint (train-reid)")
    except CheckpointError as e:
        row = _error_row(e, "starting a lifting actor")
    with pytest.raises(CheckpointError, match=r"^checkpoint: m.pt is a re-id checkpoint") as info:
        _raise_actor_error(row)
    assert "Traceback" in info.value.remote_traceback and "test_errors.py" in info.value.remote_traceback

    class Unpicklable(Exception):  # a local class: the driver cannot unpickle it
        pass

    for exc, name in ((KeyError("points"), "KeyError: 'points'"),
                      (Unpicklable("odd"), "Unpicklable: odd")):
        with pytest.raises(RemoteFailed, match=f"^lift: lifting shard train-00001 failed: {name}$"):
            _raise_actor_error(_error_row(exc, "lifting shard train-00001"))
