"""Atomic file writes: the one write-to-temp-then-rename helper of mirror3d.

A reader never sees a half-written file: data goes to a hidden temporary file in the same
directory, which is renamed over the target only when complete (``os.replace`` is atomic on one
file system). A failure removes the temporary file and leaves the target as it was.

    atomic_write("out/summary.json", json.dumps(obj))       # text or bytes
    with atomic_path("out/model.pt") as tmp:                 # any writer that takes a path
        torch.save(state, tmp)
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import tempfile
from collections.abc import Iterator

__all__ = ["atomic_path", "atomic_write"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[pathlib.Path]:
    """Yield a temporary path beside ``path`` (parents created); on success it replaces
    ``path``, on any error it is removed. The temporary name keeps ``path``'s suffix so that
    writers choosing a format by extension (pillow, pyarrow, trimesh) still do."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp_path = pathlib.Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write(path: str | os.PathLike, data: str | bytes, encoding: str = "utf-8") -> pathlib.Path:
    """Write ``data`` (text or bytes) to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding=encoding)
    return pathlib.Path(path)
