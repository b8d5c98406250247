"""Checks a job runs in the driver before Ray starts or anything is written: input paths and
their kind, output locations, checkpoints (their kind and config), and the image files of a
training set. Each failure is one :mod:`mirror3d.utils.errors` line naming the config key, the
path and what was expected; all of them take seconds (headers and small decodes only).

    check_input(cfg.data.root, "data.root")                       # a folder that exists
    check_output(cfg.out_dir, "out_dir")                          # not a file, not under one, writable
    check_checkpoint(cfg.checkpoint, "casl", "checkpoint")       # a CASL checkpoint with its config
    check_images([(image, mask), ...], "data.root")               # decodable, mask as big as image

Storage URIs (``s3://...``) are not checked here (their jobs pull them first and check the
local stage).
"""

from __future__ import annotations

import os
import pathlib
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from mirror3d.utils import storage
from mirror3d.utils.checkpoint import (CHECKPOINT_FILE, CheckpointError, latest_checkpoint,
                                       run_checkpoints, verify_checkpoint)
from mirror3d.utils.errors import (DataError, InputNotFound, InputPathError, OutputPathError,
                                   one_line)

__all__ = ["KIND_NAMES", "HeaderFn", "check_input", "check_output", "resolve_checkpoint", "check_checkpoint",
           "image_problem", "scan_images", "check_images"]

#: Checkpoint kinds (``format = "mirror3d/<kind>"``) → what users call them.
KIND_NAMES = {"casl": "CASL checkpoint (train-casl)", "reid": "re-id checkpoint (train-reid)"}

#: The final model of a run directory.
MODEL_FILE = "model_final.pt"


def check_input(path: str | os.PathLike, key: str, kind: Literal["dir", "file", "any"] = "dir",
                what: str = "") -> pathlib.Path | None:
    """``path`` (config key ``key``) exists and is a folder (``kind="dir"``), a file or either.

    Returns the local path (None for a storage URI, which is not checked).
    Raises:
        InputNotFound: nothing at ``path``.  InputPathError: a file for a folder or the reverse.
    """
    if storage.is_uri(path):
        return None
    p = pathlib.Path(path)
    label = f"{key}: {what + ' ' if what else ''}{p}"
    if not p.exists():
        raise InputNotFound(f"{label} does not exist")
    if kind == "dir" and not p.is_dir():
        raise InputPathError(f"{label} is a file; expected a folder")
    if kind == "file" and not p.is_file():
        raise InputPathError(f"{label} is a folder; expected a file")
    return p


def check_output(location: str | os.PathLike, key: str) -> pathlib.Path | None:
    """The output folder ``location`` (config key ``key``) can be made and written: it is not a
    file, no parent of it is a file, and its nearest existing folder is writable. Nothing is
    created. Returns the local path (None for a storage URI, which is not checked).

    Raises:
        OutputPathError: naming ``key``, the path and the reason.
    """
    if storage.is_uri(location):
        return None
    p = pathlib.Path(location).expanduser()
    if p.exists() and not p.is_dir():
        raise OutputPathError(f"{key}: {p} is a file; expected a folder (or a path to create)")
    existing = p
    while not existing.exists():
        if existing.is_symlink():  # a dangling link: makedirs would fail on it
            raise OutputPathError(f"{key}: {existing} is a broken symbolic link; expected a "
                                  f"folder (or a path to create)")
        parent = existing.parent
        if parent == existing:
            break
        existing = parent
    if existing.exists() and not existing.is_dir():
        raise OutputPathError(f"{key}: {p} is under {existing}, which is a file; expected a "
                              f"folder (or a path to create)")
    if existing.exists() and not os.access(existing, os.W_OK | os.X_OK):
        raise OutputPathError(f"{key}: cannot write to {existing} (permission denied) to make "
                              f"{p}; expected a writable folder")
    return p


def resolve_checkpoint(path: str | os.PathLike, key: str = "checkpoint") -> pathlib.Path:
    """The checkpoint file ``path`` names: the file itself, a run directory's ``model_final.pt``
    (else its newest ``checkpoints/epoch_*/checkpoint.pt``), or a Ray checkpoint folder's
    ``checkpoint.pt``.

    Raises:
        InputNotFound: nothing at ``path``, or a folder without any checkpoint.
    """
    p = pathlib.Path(path)
    if not p.exists():
        raise InputNotFound(f"{key}: {p} does not exist")
    if p.is_dir():
        for cand in (p / MODEL_FILE, p / CHECKPOINT_FILE):
            if cand.is_file():
                return cand
        newest = latest_checkpoint(p)
        if newest is None:
            raise InputNotFound(f"{key}: no checkpoint in {p} (expected {MODEL_FILE}, "
                                f"{CHECKPOINT_FILE} or checkpoints/epoch_*/{CHECKPOINT_FILE})")
        return newest
    return p


def _load_state(p: pathlib.Path) -> object:
    import torch  # only here: the CLI's --help and the config checks need no torch

    try:  # memory-mapped: the tensors are not read
        return torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return torch.load(p, map_location="cpu", weights_only=True)


def check_checkpoint(path: str | os.PathLike, kind: str, key: str = "checkpoint",
                     needs: Sequence[str] = ("config", "model")) -> pathlib.Path:
    """``path`` (a file, or a run / checkpoint folder: :func:`resolve_checkpoint`) holds a
    mirror3d checkpoint of ``kind`` with a training config (a mapping) and the entries
    ``needs``: the archive verified (CRC-32, :func:`~mirror3d.utils.checkpoint.verify_checkpoint`;
    a run's corrupt newest checkpoint is passed over for an older one, as the loaders do), then
    loaded memory-mapped with ``weights_only=True`` (no tensor is read).

    Returns the checkpoint file. Storage URIs are returned unchecked.
    Raises:
        InputNotFound: nothing there.
        CheckpointError: unreadable, not a mirror3d checkpoint, another kind (named: "a re-id
            checkpoint (train-reid); expected a CASL checkpoint"), or an entry missing.
    """
    if storage.is_uri(path):
        return pathlib.Path(str(path))
    p = resolve_checkpoint(path, key)
    want = KIND_NAMES.get(kind, f"mirror3d/{kind} checkpoint")
    candidates = [p]
    if pathlib.Path(path).is_dir() and p.parent.parent.name == "checkpoints":
        # a run's corrupt newest checkpoint: the loaders fall back to an older one, and so do we
        candidates += [c for c in reversed(run_checkpoints(path)) if c != p]
    error: CheckpointError | None = None
    for candidate in candidates:
        try:
            verify_checkpoint(candidate)  # whole and uncorrupted (CRC-32), nothing unpickled
        except CheckpointError as exc:
            error = error or exc
            continue
        p, error = candidate, None
        break
    if error is not None:
        reason = one_line(error).removeprefix("checkpoint ")
        raise CheckpointError(f"{key}: {reason}; expected a {want}") from None
    try:
        state = _load_state(p)
    except Exception as exc:
        raise CheckpointError(f"{key}: {p} cannot be read as a mirror3d checkpoint (truncated, "
                              f"corrupt or foreign file: {type(exc).__name__}); expected a "
                              f"{want}") from None
    fmt = state.get("format") if isinstance(state, Mapping) else None
    if fmt != f"mirror3d/{kind}":
        got_kind = str(fmt).split("/", 1)[1] if isinstance(fmt, str) and fmt.startswith(
            "mirror3d/") else None
        got = (f"a {KIND_NAMES.get(got_kind, repr(fmt))}" if got_kind
               else "not a mirror3d checkpoint" if fmt is None else f"of format {fmt!r}")
        raise CheckpointError(f"{key}: {p} is {got}; expected a {want} of format "
                              f"'mirror3d/{kind}'")
    missing = [n for n in needs if n not in state]
    if missing:
        raise CheckpointError(f"{key}: {p} is a {want} without {', '.join(missing)}; expected "
                              f"one written by the trainer (model_final.pt or checkpoint.pt)")
    if "config" in needs and not isinstance(state["config"], Mapping):
        raise CheckpointError(f"{key}: {p} holds no training config (a mapping); expected one "
                              f"written by the trainer")
    return p


#: ``header(path, what, is_mask) -> (W, H)``: a file's displayed size from its header, raising
#: ``ValueError`` / ``FileNotFoundError`` with one line naming it when the decoder would refuse it
#: (e.g. :func:`mirror3d.data.images.read_header`: format, mode, pixel cap, smallest side).
HeaderFn = Callable[[str, str, bool], tuple[int, int]]


def image_problem(image: str | os.PathLike, mask: str | os.PathLike | None = None,
                  header: HeaderFn | None = None) -> str | None:
    """Why ``image`` (and its ``mask`` file) cannot be used, or None: missing, refused by
    ``header`` (the decoder's own header checks; default: Pillow's size only), truncated or
    corrupt (PNG chunks and checksums verified; JPEG decoded at 1/8 scale; other formats decoded
    when up to 4 M pixels), empty, or a mask of another size than its image. Reads headers and a
    small decode only."""
    from PIL import Image

    def probe(path: str | os.PathLike, what: str) -> tuple[tuple[int, int] | None, str | None]:
        if not os.path.isfile(path):
            return None, f"{what} {path} does not exist"
        size = None
        if header is not None:
            try:
                size = tuple(header(str(path), what, what == "mask"))
            except (ValueError, OSError) as exc:
                return None, one_line(exc, 300)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    raw, fmt = im.size, im.format
                    if fmt == "PNG":
                        im.verify()
                    elif fmt == "JPEG":
                        im.draft(im.mode, (max(1, raw[0] // 8), max(1, raw[1] // 8)))
                        im.load()
                    elif raw[0] * raw[1] <= 4_000_000:
                        im.load()
        except Image.DecompressionBombError:
            return None, None  # the decoder's pixel cap speaks for huge images
        except Exception as exc:
            return None, f"{what} {path} cannot be decoded ({type(exc).__name__}: {one_line(exc, 200)})"
        size = size or raw
        if size[0] < 1 or size[1] < 1:
            return None, f"{what} {path} is empty ({size[0]}x{size[1]})"
        return size, None

    size, problem = probe(image, "image")
    if problem or not mask:
        return problem
    msize, problem = probe(mask, "mask")
    if problem:
        return problem
    if size is not None and msize is not None and msize != size:
        return (f"mask {mask} is {msize[0]}x{msize[1]} but its image is {size[0]}x{size[1]} "
                f"(W x H)")
    return None


def scan_images(pairs: Iterable[tuple[str | os.PathLike, str | os.PathLike | None]],
                threads: int = 4, header: HeaderFn | None = None) -> list[tuple[str, str]]:
    """``(image, reason)`` for every ``(image, mask or None)`` pair with a problem
    (:func:`image_problem` with ``header``), in the pairs' order; checked on ``threads`` threads
    (Pillow decodes without the GIL)."""
    pairs = [(str(i), str(m) if m else None) for i, m in pairs]
    with ThreadPoolExecutor(max(1, threads)) as pool:
        reasons = list(pool.map(lambda im: image_problem(im[0], im[1], header), pairs))
    return [(i, r) for (i, _), r in zip(pairs, reasons) if r]


def check_images(pairs: Iterable[tuple[str | os.PathLike, str | os.PathLike | None]], key: str,
                 what: str = "training images", header: HeaderFn | None = None) -> int:
    """Every pair of :func:`scan_images` (with ``header``) is usable; returns how many were
    checked.

    Raises:
        DataError: one line naming ``key``, how many of how many are unusable and the first
            three with their reasons.
    """
    pairs = list(pairs)
    bad = scan_images(pairs, header=header)
    if bad:
        shown = "; ".join(reason for _, reason in bad[:3])
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        raise DataError(f"{key}: {len(bad)} of {len(pairs)} {what} cannot be used: {shown}{more}; "
                        f"fix or remove them")
    return len(pairs)
