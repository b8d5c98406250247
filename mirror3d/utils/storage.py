"""Storage locations that every node sees: a local folder or a URI (``s3://``, ``gs://``, any
filesystem pyarrow knows), worked on through a local folder.

The code of mirror3d reads and writes plain local files. A location that is a URI is *staged*:
:func:`local_path` maps it to a folder under ``$MIRROR3D_STAGE`` (default
``~/.cache/mirror3d/storage``) that mirrors the bucket's layout
(``s3://bkt/m3d/casl/run1`` → ``<stage>/s3/bkt/m3d/casl/run1``), so nested locations map to
nested folders and a run directory keeps the one layout it has on local disk. :func:`pull`
brings the location's files that differ into the stage, :func:`push` sends the stage's files
that differ to the location; a job pulls what it resumes from and pushes what it has made (a
trainer after every checkpoint, a lifting actor after every shard). A local location is its own
stage: ``pull`` and ``push`` do nothing.

"Differ" is size or modification time: after a transfer the local file's mtime is set to the
stored object's, so an unchanged file is never sent twice and any later local write (which gives
it a new mtime) is sent again. Credentials and endpoints are pyarrow's (the usual AWS / GCP
variables; ``AWS_ENDPOINT_URL`` for an S3-compatible store such as MinIO or a test server).
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs

from mirror3d.utils.config import config_to_dict, update_config

__all__ = ["STAGE_ENV", "is_uri", "join", "split", "relative_to", "local_path", "filesystem", "exists",
           "pull", "push", "stage", "remove", "describe", "RUNS_ROOT", "STORED_ROOTS", "relocate", "relocate_config"]

#: The folder under which URI locations are staged on this machine.
STAGE_ENV = "MIRROR3D_STAGE"

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def is_uri(location: str | os.PathLike) -> bool:
    """Whether ``location`` is a URI of a remote filesystem (``file://`` is a local path)."""
    m = _SCHEME.match(str(location))
    return bool(m) and m.group(1).lower() != "file"


def _plain(location: str | os.PathLike) -> str:
    text = str(location)
    return text[len("file://"):] if text.startswith("file://") else text


def join(location: str | os.PathLike, *parts: str) -> str:
    """``location`` / ``parts``: a URI stays a URI (``s3://b/x`` + ``y`` → ``s3://b/x/y``)."""
    if is_uri(location):
        text = str(location).rstrip("/")
        rest = "/".join(str(p).strip("/") for p in parts if str(p).strip("/"))
        return f"{text}/{rest}" if rest else text
    return str(pathlib.Path(_plain(location), *parts))


def split(location: str | os.PathLike) -> tuple[str, str]:
    """(parent location, last name) of ``location``: ``s3://b/x/y`` → (``s3://b/x``, ``y``)."""
    if is_uri(location):
        parent, _, name = str(location).rstrip("/").rpartition("/")
        return parent, name
    p = pathlib.Path(_plain(location))
    return str(p.parent), p.name


def relative_to(location: str | os.PathLike, base: str | os.PathLike) -> str | None:
    """The part of ``location`` below ``base`` ("" when equal), None when it is not below."""
    loc, b = str(location).rstrip("/"), str(base).rstrip("/")
    if is_uri(loc) or is_uri(b):
        if loc == b:
            return ""
        return loc[len(b) + 1:] if loc.startswith(b + "/") else None
    try:
        rel = pathlib.Path(_plain(loc)).resolve().relative_to(pathlib.Path(_plain(b)).resolve())
    except ValueError:
        return None
    return "" if str(rel) == "." else rel.as_posix()


def stage_root() -> pathlib.Path:
    """Where URI locations are staged on this machine (``$MIRROR3D_STAGE``)."""
    return pathlib.Path(os.environ.get(STAGE_ENV) or
                        pathlib.Path.home() / ".cache" / "mirror3d" / "storage").expanduser()


def local_path(location: str | os.PathLike) -> pathlib.Path:
    """The local folder (or file) through which ``location`` is read and written: the path itself
    (absolute) for a local location, its stage for a URI."""
    if not is_uri(location):
        return pathlib.Path(_plain(location)).expanduser().resolve()
    u = urlparse(str(location))
    parts = [p for p in u.path.split("/") if p]
    if any(p in (".", "..") for p in parts) or not u.netloc:
        raise ValueError(f"storage: {location!r} is not a usable URI (expected scheme://bucket/path)")
    return stage_root().joinpath(u.scheme.lower(), u.netloc, *parts)


def filesystem(location: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem of ``location`` and the path in it."""
    if not is_uri(location):
        return pafs.LocalFileSystem(), str(local_path(location))
    try:
        return pafs.FileSystem.from_uri(str(location).rstrip("/"))
    except (pa.ArrowInvalid, OSError, ValueError) as e:
        raise ValueError(f"storage: cannot open {location!r}: {' '.join(str(e).split())}") from None


def exists(location: str | os.PathLike) -> bool:
    """Whether ``location`` holds a file or a folder (for a URI: in the store, not the stage)."""
    fs, path = filesystem(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def _remote_files(fs: pafs.FileSystem, path: str) -> dict[str, pafs.FileInfo]:
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return {}
    if info.type == pafs.FileType.File:
        return {"": info}
    sel = pafs.FileSelector(path, recursive=True, allow_not_found=True)
    prefix = path.rstrip("/") + "/"
    return {i.path[len(prefix):]: i for i in fs.get_file_info(sel) if i.type == pafs.FileType.File}


def _local_files(root: pathlib.Path) -> dict[str, pathlib.Path]:
    if root.is_file():
        return {"": root}
    if not root.is_dir():
        return {}
    return {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}


def _mtime(info: pafs.FileInfo) -> float:
    return info.mtime.timestamp() if info.mtime is not None else 0.0


def _same(local: pathlib.Path, info: pafs.FileInfo) -> bool:
    st = local.stat()
    return st.st_size == info.size and abs(st.st_mtime - _mtime(info)) < 1e-3


def _copy(src_fs: pafs.FileSystem, src: str, dst_fs: pafs.FileSystem, dst: str) -> None:
    with src_fs.open_input_stream(src) as fin, dst_fs.open_output_stream(dst) as fout:
        while chunk := fin.read(8 << 20):
            fout.write(chunk)


def _sub(location: str | os.PathLike, sub: str) -> str:
    return join(location, sub) if sub else str(location)


def pull(location: str | os.PathLike, sub: str = "") -> int:
    """Download the files of ``location`` (or of its ``sub`` folder/file) that differ from the
    stage. Returns the number of files downloaded (0 for a local location)."""
    loc = _sub(location, sub)
    if not is_uri(loc):
        return 0
    fs, path = filesystem(loc)
    root = local_path(loc)
    n = 0
    for rel, info in _remote_files(fs, path).items():
        dest = root / rel if rel else root
        if dest.is_file() and _same(dest, info):
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.pull-{os.getpid()}")
        _copy(fs, info.path, pafs.LocalFileSystem(), str(tmp))
        os.utime(tmp, (_mtime(info), _mtime(info)))
        os.replace(tmp, dest)
        n += 1
    return n


def push(location: str | os.PathLike, sub: str = "") -> int:
    """Upload the stage's files of ``location`` (or of its ``sub`` folder/file) that differ from
    the store. Returns the number of files uploaded (0 for a local location)."""
    loc = _sub(location, sub)
    if not is_uri(loc):
        return 0
    fs, path = filesystem(loc)
    remote = _remote_files(fs, path)
    n = 0
    for rel, src in sorted(_local_files(local_path(loc)).items()):
        if src.name.startswith(".") and ".pull-" in src.name:
            continue  # another process's download in flight
        info = remote.get(rel)
        if info is not None and _same(src, info):
            continue
        dest = f"{path.rstrip('/')}/{rel}" if rel else path
        _copy(pafs.LocalFileSystem(), str(src), fs, dest)
        stored = fs.get_file_info(dest)
        os.utime(src, (_mtime(stored), _mtime(stored)))
        n += 1
    return n


def stage(location: str | os.PathLike) -> str:
    """An input at ``location`` as a local path: a URI pulled into this node's stage (its local
    path returned), a local location returned as given."""
    if not is_uri(location):
        return str(location)
    pull(location)
    return str(local_path(location))


def remove(location: str | os.PathLike, stage: bool = True) -> None:
    """Delete ``location`` (a file or a folder tree) from the store and (``stage``) from this
    node's stage."""
    if is_uri(location):
        fs, path = filesystem(location)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            fs.delete_dir(path)
        elif info.type == pafs.FileType.File:
            fs.delete_file(path)
    if not stage and is_uri(location):
        return
    local = local_path(location)
    if local.is_dir():
        shutil.rmtree(local)
    elif local.exists():
        local.unlink()


def describe(location: str | os.PathLike) -> str:
    """How to show ``location`` to a user: the URI as given, a local path absolute."""
    return str(location).rstrip("/") if is_uri(location) else str(local_path(location))


#: The folder that ``--storage`` relocates: every path written as ``runs/...``.
RUNS_ROOT = "runs"

#: Local roots of what jobs make, and where ``--storage`` puts them: run directories
#: (``runs/<job>/<name>``) and lifted shards (``data/lifted/<mode>``, inputs of the re-id jobs).
STORED_ROOTS = {RUNS_ROOT: "", "data/lifted": "lifted"}


def relocate(path: str, storage_root: str) -> str:
    """``runs/<rest>`` → ``<storage_root>/<rest>`` and ``data/lifted/<rest>`` →
    ``<storage_root>/lifted/<rest>``; any other value unchanged."""
    p = str(path).rstrip("/") or str(path)
    for local, stored in STORED_ROOTS.items():
        if p == local or p.startswith(local + "/"):
            rest = p[len(local):].lstrip("/")
            return join(storage_root, *(x for x in (stored, rest) if x))
    return str(path)


def relocate_config(cfg, storage_root: str):
    """A copy of the config ``cfg`` (a mirror3d config dataclass) whose path values under
    ``runs/`` and ``data/lifted/`` (outputs, and inputs made by earlier jobs: :data:`STORED_ROOTS`)
    live under ``storage_root`` instead:
    what ``--storage`` does for every job. Returns ``(new_cfg, {dotted key: new value})``."""
    changes: dict[str, object] = {}

    def walk(node, prefix: str) -> None:
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, dotted + ".")
            elif isinstance(value, str):
                moved = relocate(value, storage_root)
                if moved != value:
                    changes[dotted] = moved
            elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                moved_list = [relocate(v, storage_root) for v in value]
                if moved_list != value:
                    changes[dotted] = moved_list

    walk(config_to_dict(cfg), "")
    return (update_config(cfg, changes) if changes else cfg), changes
