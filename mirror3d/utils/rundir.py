"""Run directories: ``runs/<job>/<name>/`` with the resolved config, metrics and pictures.

A run is written into a hidden ``.<name>.partial`` directory and renamed into place only when the
job finishes, so a failed job leaves no partial output under a real run name. ``root`` may be a
storage URI (``--storage s3://...``): the run is then made in this node's stage and pushed to the
store when it is complete (:mod:`mirror3d.utils.storage`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import pathlib
import shutil
from collections.abc import Iterator
from typing import Any

from mirror3d.utils import storage
from mirror3d.utils.config import save_config
from mirror3d.utils.files import atomic_write

__all__ = ["default_run_name", "run_directory", "final_path", "append_metrics", "trim_metrics"]


def default_run_name() -> str:
    """A sortable timestamp, e.g. ``20261122-031045``."""
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


@contextlib.contextmanager
def run_directory(job: str, name: str | None = None, root: str | os.PathLike = "runs",
                  config: Any | None = None, overwrite: bool = False) -> Iterator[pathlib.Path]:
    """Create ``root/job/name`` atomically.

    Yields the temporary directory to write into; on success it is renamed to the final path,
    which :func:`final_path` gives for the yielded directory. The resolved ``config`` (a dataclass) is saved as ``config.yaml`` first.

    Raises:
        FileExistsError: the run exists and ``overwrite`` is False.
    """
    if not job or "/" in job:
        raise ValueError(f"job: expected a plain name, got {job!r}")
    name = name or default_run_name()
    location = storage.join(root, job, name)
    final = storage.local_path(location)
    if (final.exists() or storage.exists(location)) and not overwrite:
        raise FileExistsError(f"run directory {storage.describe(location)} exists; pass another "
                              f"name or overwrite")
    tmp = final.parent / f".{name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        if config is not None:
            save_config(config, tmp / "config.yaml")
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    if storage.is_uri(location):
        storage.remove(location, stage=False)  # a replaced run: none of its old files stay
        storage.push(location)


def final_path(tmp: pathlib.Path) -> pathlib.Path:
    """The final run directory for a temporary one yielded by :func:`run_directory`."""
    name = tmp.name
    if name.startswith(".") and name.endswith(".partial"):
        name = name[1 : -len(".partial")]
    return tmp.parent / name


def append_metrics(run_dir: str | os.PathLike, record: dict, name: str = "metrics.jsonl") -> None:
    """Append one JSON line to ``run_dir/<name>`` (``metrics.jsonl``: one line per epoch;
    ``curve.jsonl``: CASL's learning-curve points)."""
    with open(pathlib.Path(run_dir) / name, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, default=float) + "\n")


def trim_metrics(run_dir: str | os.PathLike, last: int, name: str = "metrics.jsonl",
                 key: str = "epoch") -> int:
    """Drop the records of ``run_dir/<name>`` whose ``key`` is above ``last``; returns how many
    were dropped.

    Why: a run resumed into its own run directory from the checkpoint of epoch ``last`` (after a
    crash, or when Ray Train restarts its workers) logs the epochs after ``last`` again, so the
    lines the lost attempt wrote for them must go first — each epoch is then logged exactly once.
    Records without ``key`` are kept; a torn last line (no newline: the writer died mid-line) is
    dropped. The file is rewritten atomically, and only when something changes.

    Raises:
        ValueError: a line other than a torn last one is not JSON (not a file we wrote).
    """
    path = pathlib.Path(run_dir) / name
    if not path.exists():
        return 0
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    kept: list[str] = []
    dropped = 0
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1 and not line.endswith("\n"):
                dropped += 1
                continue
            raise ValueError(f"{path}: line {i + 1} is not a JSON record") from None
        value = record.get(key) if isinstance(record, dict) else None
        if isinstance(value, (int, float)) and value > last:
            dropped += 1
            continue
        kept.append(line if line.endswith("\n") else line + "\n")
    if dropped:
        atomic_write(path, "".join(kept))
    return dropped
