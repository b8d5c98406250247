"""Settings fingerprints: the one resume scheme of mirror3d.

A job that writes into a directory it may resume (SynthPeople generation, lifting shards, the
pipeline's stages) records the settings its output depends on as JSON. A later run compares its
own settings with the recorded ones: equal settings resume (finished work is kept), different
settings are refused with the keys that differ, or, when the caller allows it, replace the old
output. :func:`fingerprint` is a short stable hash of such settings (key order does not matter).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from collections.abc import Mapping
from typing import Any

from mirror3d.utils.files import atomic_write

__all__ = ["fingerprint", "settings_diff", "read_settings", "write_settings", "check_settings"]


def _canonical(obj: Any) -> Any:
    """JSON-ready form: tuples as lists, paths as text (so YAML- and Python-made settings agree)."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def fingerprint(*parts: Any) -> str:
    """A 16-hex-digit SHA-256 of ``parts`` as canonical JSON."""
    blob = json.dumps(_canonical(list(parts)), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


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
