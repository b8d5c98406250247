"""Run directories: ``runs/<job>/<name>/`` with the resolved config, metrics and pictures.

A run is written into a hidden ``.<name>.partial`` directory and renamed into place only when the
job finishes, so a failed job leaves no partial output under a real run name. ``root`` may be a
storage URI (``--storage s3://...``): the run is then made in this node's stage and pushed to the
store when it is complete (:mod:`mirror3d.utils.storage`).

Counts: every job ends with one line of counts (:func:`counts_line`: read, used, skipped by
reason) and writes the skipped items with their reasons into its run directory
(:data:`SKIPPED_FILE`, ``path<TAB>reason`` lines: :func:`write_skipped`); a job whose usable
input is empty, or below its ``min_usable_fraction``, fails (:func:`check_usable`).

Existing runs (every job that makes a run directory): a run name that exists already is
continued only when the job is told to resume it (``--resume``), replaced only with an explicit
``--overwrite`` (its old files all go, e.g. an ``eval/`` of the replaced model), and refused
otherwise with one line naming the run and both options (:func:`claim_run`,
:class:`RunExistsError`). Never is a new run written over an old one's files.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import pathlib
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import field
from typing import Any

from mirror3d.utils import storage
from mirror3d.utils.config import ConfigError, save_config
from mirror3d.utils.errors import DataError
from mirror3d.utils.files import atomic_write

__all__ = ["default_run_name", "run_directory", "final_path", "append_metrics", "trim_metrics",
           "RunExistsError", "run_exists", "existing_run_message", "claim_run", "SKIPPED_FILE",
           "write_skipped", "read_skipped", "counts_line", "check_usable", "run_name_field",
           "resume_field", "overwrite_field"]

#: The skipped-items list of a run directory: one ``path<TAB>reason`` line per skipped item.
SKIPPED_FILE = "skipped.tsv"


def _one_line(text: str) -> str:
    return " ".join(str(text).replace("\t", " ").split())


def write_skipped(run_dir: str | os.PathLike, rows: Iterable[tuple[str, str]]) -> pathlib.Path:
    """Write ``(item, reason)`` pairs as ``run_dir/skipped.tsv`` (atomically; an empty file when
    nothing was skipped, so its absence never means "none")."""
    text = "".join(f"{_one_line(item)}\t{_one_line(reason)}\n" for item, reason in rows)
    return atomic_write(pathlib.Path(run_dir) / SKIPPED_FILE, text)


def read_skipped(run_dir: str | os.PathLike) -> list[tuple[str, str]]:
    """The ``(item, reason)`` pairs of ``run_dir/skipped.tsv``."""
    rows = []
    for line in (pathlib.Path(run_dir) / SKIPPED_FILE).read_text(encoding="utf-8").splitlines():
        if line:
            item, _, reason = line.partition("\t")
            rows.append((item, reason))
    return rows


def counts_line(job: str, read: int, used: int, skipped: dict[str, int], what: str = "images"
                ) -> str:
    """The one line of counts a job ends with: ``"<job>: read 30 images, used 27, skipped 3
    (unreadable 1, no mask 2)"``; reasons with a zero count are left out."""
    reasons = ", ".join(f"{k} {v}" for k, v in skipped.items() if v)
    total = sum(skipped.values())
    return (f"{job}: read {read} {what}, used {used}, skipped {total}"
            + (f" ({reasons})" if reasons else ""))


def check_usable(job: str, read: int, used: int, min_fraction: float, skipped: dict[str, int],
                 where: str = "", what: str = "images") -> None:
    """Fail when nothing is usable or less than ``min_fraction`` of what was read.

    Raises:
        DataError: one line with the counts, the threshold and where the skipped list is.
    """
    see = f"; skipped items with reasons: {where}" if where else ""
    counts = counts_line(job, read, used, skipped, what)
    if used <= 0:
        raise DataError(f"{counts}: no usable {what}{see}")
    if read and used / read < min_fraction:
        raise DataError(f"{counts}: only {used / read:.0%} usable, below min_usable_fraction "
                        f"{min_fraction:g}{see}")


class RunExistsError(ConfigError):
    """A run of that name exists and the job was told neither to resume nor to overwrite it."""


def run_exists(location: str | os.PathLike) -> bool:
    """True when the run at ``location`` (a folder or a storage URI) exists: in this node's stage
    or in the store."""
    return storage.local_path(location).exists() or storage.exists(location)


def existing_run_message(location: str | os.PathLike, resume_hint: str | None = "--resume") -> str:
    """The one line that refuses an existing run: names it and the ways on (``resume_hint``:
    how to continue it; None for jobs whose runs cannot be continued)."""
    how = f"pass {resume_hint} to continue it or --overwrite" if resume_hint else "pass --overwrite"
    return (f"name: run {storage.describe(location)} exists; {how} to replace it (or choose "
            f"another --name)")


def claim_run(location: str | os.PathLike, *, resume: bool = False, overwrite: bool = False,
              resume_hint: str = "--resume") -> bool:
    """Apply the existing-run policy to the run at ``location`` before anything is written.

    Returns True when the run exists and is to be continued (``resume``), False when the job
    starts afresh (no such run, or it was removed because of ``overwrite``: every old file, in
    the stage and in the store).

    Raises:
        RunExistsError: the run exists and neither ``resume`` nor ``overwrite`` is set; or both
            are set (contradictory).
    """
    if resume and overwrite:
        raise RunExistsError(f"overwrite: --resume and --overwrite contradict each other (run "
                             f"{storage.describe(location)}); pass one of them")
    if not run_exists(location):
        return False
    if overwrite:
        local = storage.local_path(location)
        if local.exists() and not local.is_dir():
            raise RunExistsError(f"name: {local} is a file, not a run directory; choose another "
                                 f"--name or --out_dir")
        storage.remove(location)
        return False
    if resume:
        return True
    raise RunExistsError(existing_run_message(location, resume_hint))


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
        RunExistsError: the run exists and ``overwrite`` is False (checked before anything is
            written; such a run is only replaced when the job finishes).
    """
    if not job or "/" in job:
        raise ValueError(f"job: expected a plain name, got {job!r}")
    name = name or default_run_name()
    location = storage.join(root, job, name)
    final = storage.local_path(location)
    if run_exists(location) and not overwrite:
        raise RunExistsError(existing_run_message(location, None))
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


# ------------------------------------------------------------------ the trainers' run fields
def run_name_field() -> Any:
    """The ``name`` field of a trainer's config (its run directory's name)."""
    return field(default="", metadata={
        "help": "run name (default: a timestamp); an existing run of that name is continued only "
                "with --resume <that run>, replaced only with --overwrite, else refused"})


def resume_field() -> Any:
    """The ``resume`` field of a trainer's config (:func:`claim_run`)."""
    return field(default="", metadata={
        "help": "checkpoint or run dir to resume from: the run itself (continued in place) or "
                "another run (a new run starts from its checkpoint)"})


def overwrite_field() -> Any:
    """The ``overwrite`` field of a trainer's config (:func:`claim_run`)."""
    return field(default=False, metadata={
        "help": "replace an existing run of this name (all its files go first)"})
