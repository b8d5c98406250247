"""mirror3d checkpoints: one ``.pt`` file per checkpoint, tagged with its kind, written atomically
and loaded with ``torch.load(..., weights_only=True)`` (no pickle ever runs).

A run directory keeps them as ``checkpoints/epoch_XXXX/checkpoint.pt`` (one directory per
checkpoint, which is also what a Ray Train checkpoint points at) and the final model as
``model_final.pt``; see docs/architecture.md for the run-directory layout.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import torch

from mirror3d.utils.files import atomic_path

__all__ = ["CHECKPOINT_FILE", "CheckpointError", "save_checkpoint", "load_checkpoint",
           "latest_checkpoint", "resolve_resume"]

CHECKPOINT_FILE = "checkpoint.pt"


class CheckpointError(ValueError):
    """A checkpoint that is not ours, of the wrong kind, or unreadable."""


def save_checkpoint(path: str | os.PathLike, kind: str, state: dict[str, Any]) -> pathlib.Path:
    """Write ``state`` (tensors, state dicts and plain Python values only) to ``path`` atomically,
    tagged ``format = "mirror3d/<kind>"``."""
    path = pathlib.Path(path)
    payload = {"format": f"mirror3d/{kind}", "version": 1, **state}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | os.PathLike, kind: str, map_location="cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``.

    ``path`` may be the file, or a directory holding ``checkpoint.pt`` (a Ray checkpoint dir), or a
    run directory (its newest ``checkpoints/epoch_*/checkpoint.pt``).

    Raises:
        FileNotFoundError: nothing at ``path``.
        CheckpointError: not a mirror3d checkpoint of this kind, or truncated/corrupt.
    """
    p = pathlib.Path(path)
    if p.is_dir():
        direct = p / CHECKPOINT_FILE
        p = direct if direct.exists() else latest_checkpoint(p)
        if p is None:
            raise FileNotFoundError(f"no {CHECKPOINT_FILE} under {path}")
    if not p.exists():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
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


def latest_checkpoint(run_dir: str | os.PathLike) -> pathlib.Path | None:
    """The newest ``checkpoints/epoch_XXXX/checkpoint.pt`` under a run directory, or None."""
    cands = sorted(pathlib.Path(run_dir).glob(f"checkpoints/epoch_*/{CHECKPOINT_FILE}"))
    return cands[-1] if cands else None


def resolve_resume(resume: str, kind: str) -> str:
    """The checkpoint file to resume from (a file, a Ray checkpoint dir, or a run dir's newest
    ``checkpoints/epoch_*``), validated before any worker starts. "" stays ""."""
    if not resume:
        return ""
    p = pathlib.Path(resume)
    if p.is_dir() and not (p / CHECKPOINT_FILE).exists():
        ck = latest_checkpoint(p)
        if ck is None:
            raise FileNotFoundError(f"resume: no checkpoint under {p}")
        p = ck
    load_checkpoint(p, kind)
    return str(p.resolve())
