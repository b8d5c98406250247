"""Run directories: ``runs/<job>/<name>/`` with the resolved config, metrics and pictures.

A run is written into a hidden ``.<name>.partial`` directory and renamed into place only when the
job finishes, so a failed job leaves no partial output under a real run name.
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

from mirror3d.utils.config import save_config

__all__ = ["default_run_name", "run_directory", "final_path", "append_metrics"]


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
    final = pathlib.Path(root) / job / name
    if final.exists() and not overwrite:
        raise FileExistsError(f"run directory {final} exists; pass another name or overwrite")
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
