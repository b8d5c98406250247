"""Settings fingerprints: the one resume scheme of mirror3d.

A job that writes into a directory it may resume (SynthPeople generation, lifting shards, the
pipeline's stages) records the settings its output depends on as JSON. A later run compares its
own settings with the recorded ones: equal settings resume (finished work is kept), different
settings are refused with the keys that differ, or, when the caller allows it, replace the old
output. :func:`fingerprint` is a short stable hash of such settings (key order does not matter).

Settings include the identity of the input data, not only its location: :func:`files_digest`
hashes a dataset's file list (paths relative to its root, sizes and modification times), so a
dataset regenerated or replaced at the same path is "other settings" too, never resumed into.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from collections.abc import Iterable, Mapping
from typing import Any

from mirror3d.utils.files import atomic_write

__all__ = ["fingerprint", "files_digest", "settings_diff", "read_settings", "write_settings",
           "check_settings"]


def _canonical(obj: Any) -> Any:
    """JSON-ready form: tuples as lists, paths as text (so YAML- and Python-made settings agree)."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def fingerprint(*parts: Any) -> str:
    """A 16-hex-digit SHA-256 of ``parts`` as canonical JSON."""
    blob = json.dumps(_canonical(list(parts)), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def files_digest(paths: Iterable[str | os.PathLike], root: str | os.PathLike | None = None
                 ) -> dict[str, Any]:
    """The identity of a set of files: ``{"files": n, "bytes": total size, "digest": 16 hex}``,
    the digest over each file's path (relative to ``root`` when under it), size and modification
    time in whole seconds (what survives a copy to and from a store, :mod:`mirror3d.utils.storage`).
    An empty string in ``paths`` (e.g. "no mask") counts as an absent file.

    Raises:
        FileNotFoundError: a listed file does not exist (named).
    """
    base = pathlib.Path(root).resolve() if root is not None else None
    h = hashlib.sha256()
    n = total = 0
    for raw in paths:
        if not str(raw):
            h.update(b"-\n")
            continue
        p = pathlib.Path(raw)
        try:
            st = p.stat()
        except FileNotFoundError:
            raise FileNotFoundError(f"{p}: listed input file does not exist") from None
        name = p.as_posix()
        if base is not None:
            try:
                name = p.resolve().relative_to(base).as_posix()
            except ValueError:
                pass
        h.update(f"{name}\t{st.st_size}\t{int(st.st_mtime)}\n".encode())
        n += 1
        total += st.st_size
    return {"files": n, "bytes": total, "digest": h.hexdigest()[:16]}


def settings_diff(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[str]:
    """``"key old (now new)"`` for every key whose value differs (all keys when ``old`` is not
    a mapping)."""
    new = _canonical(dict(new))
    old = _canonical(dict(old)) if isinstance(old, Mapping) else {}
    keys = sorted(set(old) | set(new))
    return [f"{k} {old.get(k)!r} (now {new.get(k)!r})" for k in keys if old.get(k) != new.get(k)]


def read_settings(path: str | os.PathLike) -> dict | None:
    """The settings recorded at ``path``; None when missing or unreadable."""
    p = pathlib.Path(path)
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text())
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def write_settings(path: str | os.PathLike, settings: Mapping[str, Any]) -> None:
    """Record ``settings`` at ``path`` (atomically, as sorted JSON)."""
    atomic_write(path, json.dumps(_canonical(dict(settings)), indent=1, sort_keys=True))


def check_settings(path: str | os.PathLike, settings: Mapping[str, Any]) -> list[str]:
    """Compare ``settings`` with those recorded at ``path``: ``[]`` when equal or when none are
    recorded, else the differences (see :func:`settings_diff`). Writes nothing."""
    old = read_settings(path)
    if old is None:
        return ["unreadable settings"] if pathlib.Path(path).exists() else []
    return settings_diff(old, settings)
