"""mirror3d checkpoints: one ``.pt`` file per checkpoint, tagged with its kind, written atomically
and durably, verified and loaded with ``torch.load(..., weights_only=True)`` (no pickle ever runs).

A run directory keeps them as ``checkpoints/epoch_XXXX/checkpoint.pt`` (one directory per
checkpoint, which is also what a Ray Train checkpoint points at) and the final model as
``model_final.pt``; see docs/architecture.md for the run-directory layout.

Faults:

- a process killed while writing (before the rename of :func:`mirror3d.utils.files.atomic_path`)
  leaves the previous checkpoint as it was, and a hidden temporary file that the next
  :func:`save_checkpoint` of the same file removes;
- a corrupt checkpoint (a flipped bit, a truncated file: the CRC-32 of every member of the
  checkpoint's zip archive is checked before ``torch.load``) is a :class:`CheckpointError`; given
  a run directory, :func:`load_checkpoint` and :func:`resolve_resume` then fall back to the
  newest readable checkpoint before it, with a warning naming both;
- a full disk is :class:`mirror3d.utils.files.DiskFullError`, the previous file intact.
"""

from __future__ import annotations

import logging
import os
import pathlib
import zipfile
from collections.abc import Callable, Mapping
from typing import Any

import torch

from mirror3d.utils.errors import InputNotFound, UserError
from mirror3d.utils.files import atomic_path, remove_stale_temporaries

log = logging.getLogger(__name__)

__all__ = ["CHECKPOINT_FILE", "CheckpointError", "save_checkpoint", "load_checkpoint",
           "verify_checkpoint", "latest_checkpoint", "run_checkpoints", "newest_readable_checkpoint",
           "resolve_resume", "load_model_checkpoint"]

CHECKPOINT_FILE = "checkpoint.pt"


class CheckpointError(UserError, ValueError):
    """A checkpoint that is not ours, of the wrong kind, or unreadable (truncated, corrupt)."""


def save_checkpoint(path: str | os.PathLike, kind: str, state: dict[str, Any]) -> pathlib.Path:
    """Write ``state`` (tensors, state dicts and plain Python values only) to ``path`` atomically
    and durably (synced before the rename), tagged ``format = "mirror3d/<kind>"``. Temporary
    files an earlier, killed writer of ``path`` left are removed first.

    Raises:
        mirror3d.utils.files.DiskFullError: no space left; ``path`` is unchanged.
    """
    path = pathlib.Path(path)
    payload = {"format": f"mirror3d/{kind}", "version": 1, **state}
    remove_stale_temporaries(path)
    with atomic_path(path) as tmp:
        # through a Python file, so that a full disk is an OSError(ENOSPC), not torch's
        # "unexpected pos" RuntimeError
        with open(tmp, "wb") as fh:
            torch.save(payload, fh)
    return path


def verify_checkpoint(path: str | os.PathLike) -> None:
    """Check that ``path`` is a whole, uncorrupted ``torch.save`` archive (a zip file whose
    members all match their CRC-32), without unpickling anything.

    Raises:
        CheckpointError: not a zip archive (truncated, foreign) or a member's bytes changed.
    """
    p = pathlib.Path(path)
    try:
        with zipfile.ZipFile(p) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, OSError) and not isinstance(exc, zipfile.BadZipFile) \
                and not p.exists():
            raise InputNotFound(f"checkpoint {p} does not exist") from None
        raise CheckpointError(f"checkpoint {p}: cannot be read as a mirror3d checkpoint "
                              f"(truncated, corrupt or foreign file: {type(exc).__name__})") from None
    if bad is not None:
        raise CheckpointError(f"checkpoint {p}: corrupt (the bytes of {bad!r} do not match "
                              f"their checksum)")


def _load_file(p: pathlib.Path, kind: str, map_location) -> dict[str, Any]:
    verify_checkpoint(p)
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {p}: cannot be read as a mirror3d checkpoint "
                              f"(truncated, corrupt or foreign file: {type(exc).__name__})") from None
    want = f"mirror3d/{kind}"
    got = state.get("format") if isinstance(state, dict) else None
    if got != want:
        raise CheckpointError(f"checkpoint {p}: expected format {want!r}, got {got!r}")
    return state


def load_checkpoint(path: str | os.PathLike, kind: str, map_location="cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`: verified (:func:`verify_checkpoint`),
    then ``torch.load(..., weights_only=True)``.

    ``path`` may be the file, or a directory holding ``checkpoint.pt`` (a Ray checkpoint dir), or a
    run directory: its newest readable ``checkpoints/epoch_*/checkpoint.pt``
    (:func:`newest_readable_checkpoint`: a corrupt newer one is skipped with a warning).

    Raises:
        FileNotFoundError: nothing at ``path`` (:class:`mirror3d.utils.errors.InputNotFound`).
        CheckpointError: not a mirror3d checkpoint of this kind, or truncated/corrupt (in a run
            directory: every checkpoint of it).
    """
    p = pathlib.Path(path)
    if p.is_dir() and not (p / CHECKPOINT_FILE).exists():
        return newest_readable_checkpoint(p, kind, map_location)[1]
    if p.is_dir():
        p = p / CHECKPOINT_FILE
    if not p.exists():
        raise InputNotFound(f"checkpoint {p} does not exist")
    return _load_file(p, kind, map_location)


def run_checkpoints(run_dir: str | os.PathLike) -> list[pathlib.Path]:
    """A run directory's ``checkpoints/epoch_XXXX/checkpoint.pt`` files, oldest first (an epoch
    directory whose checkpoint was never renamed into place, e.g. after a kill, holds none)."""
    return sorted(pathlib.Path(run_dir).glob(f"checkpoints/epoch_*/{CHECKPOINT_FILE}"))


def latest_checkpoint(run_dir: str | os.PathLike) -> pathlib.Path | None:
    """The newest ``checkpoints/epoch_XXXX/checkpoint.pt`` under a run directory, or None
    (not checked: :func:`newest_readable_checkpoint` skips corrupt ones)."""
    cands = run_checkpoints(run_dir)
    return cands[-1] if cands else None


def newest_readable_checkpoint(run_dir: str | os.PathLike, kind: str,
                               map_location="cpu") -> tuple[pathlib.Path, dict[str, Any]]:
    """The newest checkpoint of a run directory that loads (:func:`load_checkpoint` of the
    file), and its state. Each newer one that does not (corrupt, truncated) is skipped with a
    warning naming it and the one used instead.

    Raises:
        FileNotFoundError: the run directory has no checkpoint.
        CheckpointError: none of them loads (the newest one's error, with the count).
    """
    cands = run_checkpoints(run_dir)
    if not cands:
        raise InputNotFound(f"no {CHECKPOINT_FILE} under {run_dir} (expected "
                            f"checkpoints/epoch_XXXX/{CHECKPOINT_FILE})")
    errors: list[CheckpointError] = []
    for p in reversed(cands):
        try:
            state = _load_file(p, kind, map_location)
        except CheckpointError as exc:
            errors.append(exc)
            continue
        for exc in errors:
            log.warning("%s; using the newest readable checkpoint before it: %s", exc, p)
        return p, state
    more = f" (and the {len(cands) - 1} older one(s) of the run too)" if len(cands) > 1 else ""
    raise CheckpointError(f"{errors[0]}{more}")


def resolve_resume(resume: str, kind: str, needs: tuple[str, ...] = ("model",)) -> str:
    """The checkpoint file to resume from (a file, a Ray checkpoint dir, or a run dir's newest
    readable ``checkpoints/epoch_*``, falling back past corrupt ones with a warning), validated
    before any worker starts: of ``kind`` and holding the entries ``needs``. "" stays ""."""
    if not resume:
        return ""
    p = pathlib.Path(resume)
    if p.is_dir() and not (p / CHECKPOINT_FILE).exists():
        if not run_checkpoints(p):
            raise InputNotFound(f"resume: no checkpoint under {p} (expected "
                                f"checkpoints/epoch_XXXX/{CHECKPOINT_FILE})")
        p, state = newest_readable_checkpoint(p, kind)
    else:
        if p.is_dir():
            p = p / CHECKPOINT_FILE
        state = load_checkpoint(p, kind)
    missing = [k for k in needs if k not in state]
    if missing:
        raise CheckpointError(f"resume: checkpoint {p} holds no {', '.join(missing)}; expected "
                              f"a {kind} training checkpoint")
    return str(p.resolve())


def load_model_checkpoint(path: str | os.PathLike, kind: str,
                          build: Callable[[dict[str, Any]], torch.nn.Module], what: str,
                          needs: tuple[str, ...] = ()) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A trained model rebuilt from its checkpoint: ``path`` is a run directory (its
    ``model_final.pt``, else its newest checkpoint) or a checkpoint file / directory of ``kind``;
    ``build(state)`` makes the model from the checkpoint's ``config`` (and any entry of ``needs``),
    then the ``model`` weights are loaded into it. ``what`` names the model in errors ("CASL").

    Returns ``(model, state)`` (the model on CPU, in its default mode).
    Raises:
        FileNotFoundError: nothing there.
        CheckpointError: foreign, corrupt or of another kind; no training config, no weights or
            no entry of ``needs``; a config that does not describe a ``what`` model; weights that
            do not fit the model of its own config.
    """
    p = pathlib.Path(path)
    if p.is_dir() and (p / "model_final.pt").exists():
        p = p / "model_final.pt"
    state = load_checkpoint(p, kind)
    if not isinstance(state.get("config"), Mapping):
        raise CheckpointError(f"checkpoint {p}: holds no training config")
    if not isinstance(state.get("model"), Mapping):
        raise CheckpointError(f"checkpoint {p}: holds no model weights (a 'model' state dict)")
    missing = [k for k in needs if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {p}: holds no {', '.join(missing)}")
    try:
        model = build(state)
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {p}: its training config does not describe a {what} "
                              f"model ({type(exc).__name__}: {' '.join(str(exc).split())})") from None
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {p}: weights do not fit the model of its own config "
                              f"({str(exc).splitlines()[0]})") from None
    return model, state
