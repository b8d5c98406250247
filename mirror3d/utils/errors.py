"""User errors: the one exception hierarchy that the command line turns into one line each.

A :class:`UserError` says that the user's input (a config value, a path, a checkpoint, a data
file) or the environment (a full disk, a read-only folder) is wrong, in one line that names the
thing and what was expected. ``mirror3d <cmd>`` prints it as ``mirror3d <cmd>: error: <line>``
and exits 1 (a :class:`~mirror3d.utils.config.ConfigError`: 2); ``--debug`` shows the traceback.
Any other exception is a bug and keeps its traceback.

The hierarchy (each class also derives from the builtin that callers caught before, so
``except ValueError`` / ``except FileNotFoundError`` still work)::

    UserError
    ├── ConfigError (utils.config; ValueError, exit 2)        a config key, value or file
    │   └── RunExistsError (utils.rundir)                    a run name taken (--resume/--overwrite)
    ├── CheckpointError (utils.checkpoint; ValueError)       not ours, wrong kind, no config
    ├── InputNotFound (FileNotFoundError)                    an input path that does not exist
    ├── InputPathError (ValueError)                          an input of the wrong kind/layout
    ├── OutputPathError (ValueError)                         an output location that is a file,
    │                                                         under a file, or not writable
    ├── DataError (ValueError)                               unusable data files, found early
    │   └── ImageError (data.images) └── MaskSizeError (data.decode)
    ├── DiskFullError (utils.files; OSError)                 no space left while writing
    ├── InputError (engine.demo_inputs), MaskError (models.casl.inference), MissingMask,
    │   TooFewPoints (lifting.modes), ShardError (lifting.shards), IngestError (platform.ingest)
    └── JobFailed (RuntimeError)                             a job stopped for a reason already
        ├── SweepInterrupted (platform.tune)                 written as one readable line
        └── RemoteFailed                                     a Ray task / actor failed with a
            └── TrainingFailed (platform.train)               bug (its traceback in
                                                              ``remote_traceback``)

For compatibility the CLI also prints ``ValueError``, ``FileNotFoundError`` and
``FloatingPointError`` as one line (argument checks throughout the library raise them), and an
``OSError`` of the environment (:data:`ENVIRONMENT_ERRNOS`: no space left, permission denied,
read-only file system, ...).

Errors raised inside Ray (a task, an actor, a Ray Train worker) reach the driver wrapped in
Ray's exceptions, whose message is the whole remote traceback; :func:`unwrap_error` finds the
original exception in them so that the CLI prints its one line.
"""

from __future__ import annotations

import errno

__all__ = ["UserError", "InputNotFound", "InputPathError", "OutputPathError", "DataError",
           "JobFailed", "RemoteFailed", "ENVIRONMENT_ERRNOS", "is_user_error", "unwrap_error",
           "one_line"]


class UserError(Exception):
    """Bad input or environment, described in one line naming the thing and what was expected.
    The CLI prints it without a traceback (``--debug`` shows it)."""


class InputNotFound(UserError, FileNotFoundError):
    """An input path (dataset root, mask tree, checkpoint, run directory) does not exist."""


class InputPathError(UserError, ValueError):
    """An input path exists but is of the wrong kind: a file where a folder is expected (or the
    reverse), a run directory of another job, a folder without the expected layout."""


class OutputPathError(UserError, ValueError):
    """An output location that cannot be used: it is a file (or lies under a file), or its
    nearest existing folder is not writable."""


class DataError(UserError, ValueError):
    """Data files that cannot be used (an unreadable image, a mask of another size than its
    image), found before any work starts."""


class JobFailed(UserError, RuntimeError):
    """A job failed for a reason already written as one readable line (e.g. a Ray Train worker's
    error out of Ray's wrappers). The CLI prints it without a traceback and exits 1."""


class RemoteFailed(JobFailed):
    """A Ray task or actor raised an error that is not a user error. The message is one line
    (the task and the error's type and message); ``remote_traceback`` holds the remote
    traceback, which ``--debug`` prints."""

    def __init__(self, message: str, remote_traceback: str = "") -> None:
        super().__init__(message)
        self.remote_traceback = remote_traceback


#: ``OSError.errno`` values that describe the environment, not a bug: printed as one line.
ENVIRONMENT_ERRNOS = frozenset(
    getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EACCES", "EPERM", "EROFS", "ENOTDIR",
                                      "EISDIR", "EEXIST", "ENAMETOOLONG", "EMFILE")
    if hasattr(errno, name))

#: Builtins the CLI also prints as one line (the library's argument checks raise them).
_LEGACY = (ValueError, FileNotFoundError, FloatingPointError)


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is shown as one line: a :class:`UserError`, one of the builtins the
    library raises on bad arguments (``ValueError``, ``FileNotFoundError``,
    ``FloatingPointError``), or an ``OSError`` of the environment (:data:`ENVIRONMENT_ERRNOS`).
    A Ray wrapper never is (its message is a whole remote traceback): :func:`unwrap_error`."""
    if _is_wrapper(exc):
        return False
    if isinstance(exc, (UserError, *_LEGACY)):
        return True
    return isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS


def _is_wrapper(exc: BaseException) -> bool:
    """Ray's wrappers: a ``RayTaskError`` (``cause``), Ray Train's ``WorkerGroupError``
    (``worker_failures``) or any exception class of the ``ray`` package."""
    return (getattr(exc, "cause", None) is not None or bool(getattr(exc, "worker_failures", None))
            or type(exc).__module__.split(".")[0] == "ray")


def _causes(exc: BaseException):
    """``exc`` and what Ray's wrappers around it hold: ``cause`` (RayTaskError), Ray Train's
    per-rank ``worker_failures`` (lowest rank first) and, of a wrapper only, ``__cause__`` (a
    bug that chains a user error stays a bug)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        if not _is_wrapper(e):
            continue
        failures = getattr(e, "worker_failures", None)
        if isinstance(failures, dict):
            todo.extend(failures[k] for k in sorted(failures))
        cause = getattr(e, "cause", None)
        if isinstance(cause, BaseException):
            todo.append(cause)
        if e.__cause__ is not None:
            todo.append(e.__cause__)


def unwrap_error(exc: BaseException) -> BaseException:
    """The error to report for ``exc``: ``exc`` itself when it is a user error, else the first
    user error Ray's wrappers (or an exception chain) hold — the original exception of a task,
    actor or Ray Train worker, as its own type, with the remote traceback (when Ray gave one)
    in ``remote_traceback``. Returns ``exc`` when it holds no user error (a bug: keep its
    traceback)."""
    if is_user_error(exc):
        return exc
    remote = ""
    for e in _causes(exc):
        if not remote and getattr(e, "cause", None) is not None:  # a RayTaskError
            remote = str(getattr(e, "traceback_str", "") or "") or str(e)
        if is_user_error(e):
            if remote and not getattr(e, "remote_traceback", ""):
                try:
                    e.remote_traceback = remote  # type: ignore[attr-defined]
                except AttributeError:
                    pass
            return e
    return exc


def one_line(exc: BaseException, limit: int = 2000) -> str:
    """``str(exc)`` on one line (whitespace runs collapsed), at most ``limit`` characters; the
    type's name when the message is empty."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
