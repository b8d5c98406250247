"""Atomic, durable file writes: the one write-to-temp-then-rename helper of mirror3d.

A reader never sees a half-written file: data goes to a hidden temporary file in the same
directory, which is flushed to the disk (``fsync``) and only then renamed over the target
(``os.replace`` is atomic on one file system; the directory is synced after it, so the rename
itself survives a power loss). A failure removes the temporary file and leaves the target as it
was; a process killed before the rename leaves the target as it was too, plus a hidden
temporary file (:func:`stale_temporaries` finds them for a later writer to remove).

A full disk (``ENOSPC``, or a quota: ``EDQUOT``) while writing is :class:`DiskFullError`: one
line naming the file, the previous file untouched, no temporary left behind.

    atomic_write("out/summary.json", json.dumps(obj))       # text or bytes
    with atomic_path("out/model.pt") as tmp:                 # any writer that takes a path
        torch.save(state, tmp)
"""

from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import tempfile
from collections.abc import Iterator

from mirror3d.utils.errors import UserError

__all__ = ["atomic_path", "atomic_write", "DiskFullError", "disk_full", "out_of_space",
           "stale_temporaries", "remove_stale_temporaries"]

#: errno values that mean "no room left" (a full file system, or the user's quota)
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


class DiskFullError(UserError, OSError):
    """No space left on the device (or over quota) while writing a file; the file's previous
    version, if any, is unchanged and no temporary file is left. An ``OSError`` whose ``errno``
    is the original one (``ENOSPC`` / ``EDQUOT``); its message is one line naming the file."""

    def __init__(self, message: str, errno_: int = errno.ENOSPC) -> None:
        super().__init__(message)
        self.errno = errno_

    def __reduce__(self):  # the same error on the other side of a Ray task (errno included)
        return type(self), (str(self), self.errno)


def _temp_prefix(path: pathlib.Path) -> str:
    return f".{path.stem}."


def _temp_suffix(path: pathlib.Path) -> str:
    return f".tmp{path.suffix}"


def stale_temporaries(path: str | os.PathLike) -> list[pathlib.Path]:
    """The temporary files :func:`atomic_path` left beside ``path`` when its process was killed
    before the rename (hidden ``.<stem>.<random>.tmp<suffix>`` files), oldest name first."""
    path = pathlib.Path(path)
    if not path.parent.is_dir():
        return []
    prefix, suffix = _temp_prefix(path), _temp_suffix(path)
    return sorted(p for p in path.parent.iterdir()
                  if p.name.startswith(prefix) and p.name.endswith(suffix)
                  and len(p.name) > len(prefix) + len(suffix))


def remove_stale_temporaries(path: str | os.PathLike) -> int:
    """Remove what :func:`stale_temporaries` finds; returns how many. Only for a target that
    one process writes at a time (e.g. a run's checkpoint, written by rank 0)."""
    removed = 0
    for p in stale_temporaries(path):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed += 1
    return removed


def _fsync_file(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: pathlib.Path) -> None:
    """Make a rename in ``path`` durable. Some file systems cannot sync a directory (EINVAL,
    EBADF): the rename is then as durable as they make it (it has happened either way)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[pathlib.Path]:
    """Yield a temporary path beside ``path`` (parents created); on success it is synced to the
    disk and replaces ``path``, on any error it is removed. The temporary name keeps ``path``'s
    suffix so that writers choosing a format by extension (pillow, pyarrow, trimesh) still do.

    Raises:
        DiskFullError: no space left (or over quota) while writing, syncing or renaming.
    """
    path = pathlib.Path(path)
    tmp_path = None
    created = _missing_parents(path)
    ok = False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path),
                                   suffix=_temp_suffix(path))
        os.close(fd)
        tmp_path = pathlib.Path(tmp)
        yield tmp_path
        _fsync_file(tmp_path)
        os.replace(tmp_path, path)
        ok = True
        _fsync_dir(path.parent)
    except Exception as exc:
        if out_of_space(exc) and not isinstance(exc, DiskFullError):
            raise disk_full(path, exc) from exc
        raise
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()
        if not ok:  # no empty folder left behind by a failed write (e.g. checkpoints/epoch_0005)
            for d in created:
                try:
                    d.rmdir()
                except OSError:
                    break


def _missing_parents(path: pathlib.Path) -> list[pathlib.Path]:
    """The folders above ``path`` that do not exist yet, deepest first."""
    missing = []
    parent = path.parent
    while parent != parent.parent and not parent.exists():
        missing.append(parent)
        parent = parent.parent
    return missing


def disk_full(path: pathlib.Path, exc: BaseException) -> DiskFullError:
    """The one-line error of a write to ``path`` that ran out of space (``exc``)."""
    quota = getattr(exc, "errno", None) == errno.EDQUOT
    reason = "disk quota exceeded" if quota else "no space left on the device"
    kept = "its previous version is unchanged" if path.exists() else "nothing was written"
    return DiskFullError(f"cannot write {path}: {reason}; {kept}",
                         errno.EDQUOT if quota else errno.ENOSPC)


def out_of_space(exc: BaseException) -> bool:
    """Whether ``exc`` is, or was raised from, an out-of-space ``OSError`` (a writer such as
    torch or pyarrow may wrap the OS error in its own)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno in _NO_SPACE:
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def atomic_write(path: str | os.PathLike, data: str | bytes, encoding: str = "utf-8") -> pathlib.Path:
    """Write ``data`` (text or bytes) to ``path`` atomically; returns the path.

    Raises:
        DiskFullError: no space left; ``path`` is unchanged.
    """
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding=encoding)
    return pathlib.Path(path)
