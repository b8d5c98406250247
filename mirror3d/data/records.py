"""Record types shared by the dataset readers, datasets and lifting jobs.

A reader turns an on-disk dataset layout into a flat list of small frozen records plus a
:class:`ReadSummary`. Records hold paths and labels only (no pixels), so they are cheap to
pickle into Ray tasks and DataLoader workers.

- :class:`ReidRecord`: one re-id image (path, pid, camera, split).
- :class:`ReconRecord`: one reconstruction sample (image, mask or an estimated mask,
  foreground ratio, optional crop box).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

REID_SPLITS = ("train", "query", "gallery")
RECON_SPLITS = ("train", "test", "all")
JUNK_PID = -1
DISTRACTOR_PID = 0

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReidRecord:
    """One re-id image.

    Attributes:
        path: absolute or root-relative image path (str).
        pid: the person id as written in the dataset (Market: ``0`` = distractor, ``-1`` = junk).
        camid: 0-based camera index (file name camera minus one).
        split: one of ``train``, ``query``, ``gallery``.
        dataset: dataset name, e.g. ``market1501``.
        label: training class index: train pids relabelled to ``0..n-1`` in sorted order of the
            original pid; for query/gallery it equals ``pid``.
    """

    path: str
    pid: int
    camid: int
    split: str
    dataset: str
    label: int

    def __post_init__(self) -> None:
        if self.split not in REID_SPLITS:
            raise ValueError(f"split must be one of {REID_SPLITS}, got {self.split!r}")
        if self.camid < 0:
            raise ValueError(f"camid must be >= 0 (0-based), got {self.camid} for {self.path}")


@dataclass(frozen=True)
class ReconRecord:
    """One reconstruction sample (an RGB photo and its foreground mask).

    Attributes:
        image_path: RGB image path.
        mask_path: mask path, or ``None`` when the mask must be estimated from the image.
        mask_estimated: True when the mask is (or will be) produced by
            :func:`mirror3d.data.masks.estimate_mask` rather than read from a file.
        split: ``train``, ``test`` or ``all`` (no split information in the layout).
        fg_ratio: foreground fraction of the mask in [0, 1], or ``None`` when unknown.
        dataset: dataset name, e.g. ``market_hq``.
        pid: person id (Market-HQ) or class index (CUB), else ``None``.
        bbox: ``(x, y, w, h)`` box in image pixels to crop before any transform (CUB), or None.
        mask_threshold: a mask pixel is foreground when its value is ``> mask_threshold``
            (0 for Market-HQ and ATR, 160 for CUB's soft masks).
    """

    image_path: str
    mask_path: str | None
    mask_estimated: bool
    split: str
    fg_ratio: float | None
    dataset: str
    pid: int | None = None
    bbox: tuple[float, float, float, float] | None = None
    mask_threshold: int = 0

    def __post_init__(self) -> None:
        if self.split not in RECON_SPLITS:
            raise ValueError(f"split must be one of {RECON_SPLITS}, got {self.split!r}")
        if self.mask_path is None and not self.mask_estimated:
            raise ValueError(
                f"record for {self.image_path} has no mask_path, so mask_estimated must be True"
            )
        if self.fg_ratio is not None and not (0.0 <= self.fg_ratio <= 1.0):
            raise ValueError(f"fg_ratio must be in [0, 1], got {self.fg_ratio} for {self.image_path}")


@dataclass(frozen=True)
class SplitCounts:
    """Counts for one split.

    ``ids`` counts distinct pids other than the distractor (0) and junk (-1) ids, whose images
    are counted separately in ``distractor_images`` and ``junk_images`` (re-id readers only).
    """

    ids: int
    images: int
    cameras: int
    distractor_images: int = 0
    junk_images: int = 0


@dataclass
class ReadSummary:
    """What a reader found: per-split counts and the skipped (bad) entries.

    Attributes:
        dataset: dataset name.
        splits: split name -> :class:`SplitCounts`.
        skipped: number of entries skipped with ``skip_bad=True``.
        skipped_names: the skipped names (all of them).
        estimated_masks: reconstruction readers: number of records with an estimated mask.
        left_out: files the reader found but gave no record, as ``(path, split, reason)``
            (e.g. Market-HQ images without a mask: ``"no mask"``); counted, never silent.
    """

    dataset: str
    splits: dict[str, SplitCounts] = field(default_factory=dict)
    skipped: int = 0
    skipped_names: list[str] = field(default_factory=list)
    estimated_masks: int = 0
    left_out: list[tuple[str, str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        parts = [
            f"{name}: {c.ids} ids / {c.images} images / {c.cameras} cameras"
            for name, c in self.splits.items()
        ]
        text = f"{self.dataset}: " + "; ".join(parts)
        if self.skipped:
            text += f"; skipped {self.skipped}"
        if self.estimated_masks:
            text += f"; {self.estimated_masks} estimated masks"
        reasons: dict[str, int] = {}
        for _, _, reason in self.left_out:
            reasons[reason] = reasons.get(reason, 0) + 1
        for reason, n in reasons.items():
            text += f"; left out {n} ({reason})"
        return text


def summarize_reid(
    dataset: str, records: Sequence[ReidRecord], distractor_pid: int | None = DISTRACTOR_PID
) -> ReadSummary:
    """Per-split counts of ids, images and cameras for re-id records.

    ``ids`` leaves out the junk pid -1 and ``distractor_pid`` (0 for Market-1501; pass None for
    datasets where pid 0 is a real person, e.g. MSMT17).
    """
    summary = ReadSummary(dataset=dataset)
    special = {JUNK_PID} if distractor_pid is None else {JUNK_PID, distractor_pid}
    for split in REID_SPLITS:
        recs = [r for r in records if r.split == split]
        if not recs:
            continue
        summary.splits[split] = SplitCounts(
            ids=len({r.pid for r in recs if r.pid not in special}),
            images=len(recs),
            cameras=len({r.camid for r in recs}),
            distractor_images=0 if distractor_pid is None else sum(r.pid == distractor_pid for r in recs),
            junk_images=sum(r.pid == JUNK_PID for r in recs),
        )
    return summary


def summarize_recon(dataset: str, records: Sequence[ReconRecord]) -> ReadSummary:
    """Per-split counts for reconstruction records (ids = distinct non-None pids; cameras = 0)."""
    summary = ReadSummary(dataset=dataset)
    for split in RECON_SPLITS:
        recs = [r for r in records if r.split == split]
        if not recs:
            continue
        summary.splits[split] = SplitCounts(
            ids=len({r.pid for r in recs if r.pid is not None}), images=len(recs), cameras=0
        )
    summary.estimated_masks = sum(r.mask_estimated for r in records)
    return summary


def note_skipped(summary: ReadSummary, names: Iterable[str], what: str, show: int = 5) -> None:
    """Record skipped names in ``summary`` and log one warning with the count and a few names."""
    names = list(names)
    if not names:
        return
    summary.skipped += len(names)
    summary.skipped_names.extend(names)
    head = ", ".join(names[:show]) + (", ..." if len(names) > show else "")
    logger.warning("%s: skipped %d %s (skip_bad=True): %s", summary.dataset, len(names), what, head)
