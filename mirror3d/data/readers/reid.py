"""Readers for the re-id datasets in their published on-disk layouts.

Every reader returns ``(records, summary)``: a list of :class:`~mirror3d.data.records.ReidRecord`
(sorted by split, then path) and a :class:`~mirror3d.data.records.ReadSummary` with the number
of ids / images / cameras per split and the skipped names.

Supported layouts (``root`` is the dataset folder):

- Market-1501: ``bounding_box_train/``, ``query/``, ``bounding_box_test/`` with names
  ``PPPP_cCsS_FFFFFF_NN.jpg`` (pid, camera, sequence, frame, box). pid ``0000`` is a
  distractor and ``-1`` junk; both are kept, and only allowed in the gallery.
- DukeMTMC-reID: the same three folders, names ``PPPP_cC_fFFFFFFF.jpg``.
- CUHK03-NP (new protocol): ``detected/`` (or ``labeled/``) holding the same three folders,
  names ``PPPP_cC_N.png`` (Market-style ``PPPP_cCsS_FFFFFF_NN`` is accepted too).
- MSMT17 (V1 and V2): ``list_train.txt``, ``list_val.txt``, ``list_query.txt``,
  ``list_gallery.txt`` with lines ``<pid>/<file>.jpg <pid>``, images under ``train/`` and
  ``test/`` (V1) or ``mask_train_v2/`` and ``mask_test_v2/`` (V2). Both versions name files
  ``PPPP_NNN_CC_DDDD<time>_FFFF_K.jpg``: pid, index of the image within the pid, camera
  ``01..15``, date and time of day (``0303morning``), frame, and a last counter, e.g.
  ``0000_000_01_0303morning_0015_0.jpg``. The camera is the third ``_`` field.

Conventions: ``camid`` is 0-based (file camera minus one). Train pids are relabelled to
``0..n-1`` in sorted order of the original pid (``ReidRecord.label``; the original stays in
``pid``); query / gallery labels equal the pid. pid ``-1`` (junk) is kept in the gallery;
the metric ignores it.

File handling: folders are scanned non-recursively in sorted order. Files whose suffix is
not an image suffix (``.jpg .jpeg .png .bmp .tif .tiff .webp .ppm``), e.g. ``Thumbs.db`` or
``readme.txt``, are ignored. A file WITH an image suffix whose name does not match the
dataset's pattern raises ``ValueError`` naming the file and the pattern, unless
``skip_bad=True``: then it is skipped, counted in ``summary.skipped`` and reported in one
``logging.warning`` with the count and the first few names. A missing folder or list file
raises one ``FileNotFoundError`` naming every missing path and the expected layout.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mirror3d.data.masks import is_image_file
from mirror3d.data.records import (
    DISTRACTOR_PID,
    JUNK_PID,
    ReadSummary,
    ReidRecord,
    note_skipped,
    summarize_reid,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReidNamePattern:
    """A file-name pattern: the regex on the file stem and a human description for errors."""

    regex: re.Pattern[str]
    description: str


MARKET_PATTERN = ReidNamePattern(
    re.compile(r"^(?P<pid>-1|\d{4})_c(?P<cam>\d)s\d_\d{6}_\d{2}$"),
    "PPPP_cCsS_FFFFFF_NN.jpg (e.g. 0002_c1s1_000451_03.jpg; pid -1 for junk)",
)
DUKE_PATTERN = ReidNamePattern(
    re.compile(r"^(?P<pid>-1|\d{4})_c(?P<cam>\d)_f\d{7}$"),
    "PPPP_cC_fFFFFFFF.jpg (e.g. 0005_c2_f0046985.jpg)",
)
CUHK03_PATTERN = ReidNamePattern(
    re.compile(r"^(?P<pid>-1|\d{4})_c(?P<cam>\d)(?:_\d+|s\d_\d{6}_\d{2})$"),
    "PPPP_cC_N.png (e.g. 0001_c1_1.png) or PPPP_cCsS_FFFFFF_NN.png",
)
MSMT17_PATTERN = ReidNamePattern(
    re.compile(r"^(?P<pid>\d{4})_\d{3}_(?P<cam>\d{2})_\d{4}[a-z]+_\d{4}_\d+$"),
    "PPPP_NNN_CC_DDDD<time>_FFFF_K.jpg (e.g. 0000_000_01_0303morning_0015_0.jpg)",
)

MARKET_LAYOUT = "<root>/{bounding_box_train,query,bounding_box_test}/<images>"
MSMT17_LAYOUT = (
    "<root>/{train,test}/<pid>/<images> (V2: mask_train_v2, mask_test_v2) and "
    "<root>/list_{train,val,query,gallery}.txt with lines '<pid>/<file>.jpg <pid>'"
)

_FOLDER_SPLITS = (("bounding_box_train", "train"), ("query", "query"), ("bounding_box_test", "gallery"))


def parse_reid_name(name: str, pattern: ReidNamePattern) -> tuple[int, int]:
    """Parse ``(pid, camid)`` from a file name; camid is 0-based.

    Raises:
        ValueError: the stem does not match ``pattern`` or the camera number is 0.
    """
    stem = Path(name).stem
    match = pattern.regex.match(stem)
    if match is None:
        raise ValueError(f"file name {name!r} does not match the expected pattern {pattern.description}")
    cam = int(match.group("cam"))
    if cam < 1:
        raise ValueError(f"file name {name!r}: camera numbers start at 1, got {cam} "
                         f"(pattern {pattern.description})")
    return int(match.group("pid")), cam - 1


def _require(paths: Sequence[Path], dataset: str, layout: str) -> None:
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"{dataset}: missing {', '.join(missing)}; expected layout {layout}"
        )


def _relabel(records: list[tuple[str, int, int, str]]) -> dict[int, int]:
    train_pids = sorted({pid for _, pid, _, split in records if split == "train"})
    return {pid: i for i, pid in enumerate(train_pids)}


def _build(
    dataset: str,
    items: list[tuple[str, int, int, str]],
    bad: list[str],
    distractor_pid: int | None,
) -> tuple[list[ReidRecord], ReadSummary]:
    labels = _relabel(items)
    records = [
        ReidRecord(
            path=path,
            pid=pid,
            camid=camid,
            split=split,
            dataset=dataset,
            label=labels[pid] if split == "train" else pid,
        )
        for path, pid, camid, split in items
    ]
    summary = summarize_reid(dataset, records, distractor_pid=distractor_pid)
    note_skipped(summary, bad, "bad names")
    return records, summary


def _scan_folders(
    root: Path,
    folders: Sequence[tuple[str, str]],
    pattern: ReidNamePattern,
    dataset: str,
    skip_bad: bool,
    gallery_only_pids: frozenset[int],
) -> tuple[list[tuple[str, int, int, str]], list[str]]:
    items: list[tuple[str, int, int, str]] = []
    bad: list[str] = []
    for folder, split in folders:
        directory = root / folder
        for path in sorted(directory.iterdir()):
            if not path.is_file():
                continue
            if not is_image_file(path):
                logger.debug("%s: ignoring non-image file %s", dataset, path)
                continue
            try:
                pid, camid = parse_reid_name(path.name, pattern)
                if split != "gallery" and pid in gallery_only_pids:
                    raise ValueError(
                        f"file {path.name!r}: pid {pid} (distractor/junk) is only allowed in the gallery"
                    )
            except ValueError as err:
                if not skip_bad:
                    raise ValueError(f"{dataset}: {err} (in {directory})") from None
                bad.append(str(path))
                continue
            items.append((str(path), pid, camid, split))
    return items, bad


def _read_market_style(
    root: str | Path,
    dataset: str,
    pattern: ReidNamePattern,
    skip_bad: bool,
    gallery_only_pids: frozenset[int],
    distractor_pid: int | None,
    layout: str = MARKET_LAYOUT,
) -> tuple[list[ReidRecord], ReadSummary]:
    root = Path(root)
    _require([root / f for f, _ in _FOLDER_SPLITS], dataset, layout)
    items, bad = _scan_folders(root, _FOLDER_SPLITS, pattern, dataset, skip_bad, gallery_only_pids)
    return _build(dataset, items, bad, distractor_pid)


def read_market1501(root: str | Path, skip_bad: bool = False) -> tuple[list[ReidRecord], ReadSummary]:
    """Market-1501 (``bounding_box_train/``, ``query/``, ``bounding_box_test/``).

    pid 0 (distractor) and -1 (junk) are kept in the gallery; in train or query they are
    bad entries. See the module docstring for errors and ``skip_bad``.
    """
    return _read_market_style(
        root, "market1501", MARKET_PATTERN, skip_bad,
        gallery_only_pids=frozenset({DISTRACTOR_PID, JUNK_PID}), distractor_pid=DISTRACTOR_PID,
    )


def read_dukemtmc(root: str | Path, skip_bad: bool = False) -> tuple[list[ReidRecord], ReadSummary]:
    """DukeMTMC-reID (Market layout, names ``PPPP_cC_fFFFFFFF.jpg``; pid -1 only in the gallery)."""
    return _read_market_style(
        root, "dukemtmc", DUKE_PATTERN, skip_bad,
        gallery_only_pids=frozenset({JUNK_PID}), distractor_pid=None,
    )


def read_cuhk03_np(
    root: str | Path, subset: str = "detected", skip_bad: bool = False
) -> tuple[list[ReidRecord], ReadSummary]:
    """CUHK03-NP new protocol: ``<root>/<subset>/{bounding_box_train,query,bounding_box_test}``.

    Args:
        root: the ``cuhk03-np`` folder.
        subset: ``detected`` (the boxes mirror3d uses) or ``labeled``.
    """
    if subset not in ("detected", "labeled"):
        raise ValueError(f"subset must be 'detected' or 'labeled', got {subset!r}")
    layout = f"<root>/{subset}/{{bounding_box_train,query,bounding_box_test}}/<images>"
    return _read_market_style(
        Path(root) / subset, f"cuhk03_np_{subset}", CUHK03_PATTERN, skip_bad,
        gallery_only_pids=frozenset({JUNK_PID}), distractor_pid=None, layout=layout,
    )


def read_msmt17(
    root: str | Path,
    include_val: bool = False,
    check_files: bool = True,
    skip_bad: bool = False,
) -> tuple[list[ReidRecord], ReadSummary]:
    """MSMT17 V1 or V2 from its list files.

    Args:
        root: the ``MSMT17_V1`` / ``MSMT17_V2`` folder.
        include_val: also train on ``list_val.txt`` (32,621 training images instead of 30,248;
            torchreid and fast-reid leave it out by default, and so do we).
        check_files: check that every listed image exists (a missing one is a bad entry).
        skip_bad: skip malformed lines, bad names and missing files (counted and logged).

    In MSMT17, pid 0 is a real person (train and test pids both start at 0), so no pid is a
    distractor; -1 never occurs.
    """
    root = Path(root)
    dataset = "msmt17"
    if (root / "train").exists() or not (root / "mask_train_v2").exists():
        train_dir, test_dir = root / "train", root / "test"
    else:
        train_dir, test_dir = root / "mask_train_v2", root / "mask_test_v2"
    lists = [("list_train.txt", train_dir, "train")]
    if include_val:
        lists.append(("list_val.txt", train_dir, "train"))
    lists += [("list_query.txt", test_dir, "query"), ("list_gallery.txt", test_dir, "gallery")]
    _require([train_dir, test_dir] + [root / name for name, _, _ in lists], dataset, MSMT17_LAYOUT)

    items: list[tuple[str, int, int, str]] = []
    bad: list[str] = []
    for list_name, image_dir, split in lists:
        list_path = root / list_name
        for lineno, line in enumerate(list_path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                fields = line.split()
                if len(fields) != 2 or not re.fullmatch(r"-?\d+", fields[1]):
                    raise ValueError(
                        f"{list_path}:{lineno}: expected '<pid>/<file>.jpg <pid>', got {line.strip()!r}"
                    )
                rel, pid = fields[0], int(fields[1])
                _, camid = parse_reid_name(Path(rel).name, MSMT17_PATTERN)
                path = image_dir / rel
                if check_files and not path.is_file():
                    raise FileNotFoundError(f"{list_path}:{lineno}: listed image {path} does not exist")
            except ValueError as err:
                if not skip_bad:
                    raise ValueError(f"{dataset}: {err} (in {list_path}:{lineno})") from None
                bad.append(f"{list_name}:{lineno}:{line.strip()}")
                continue
            except FileNotFoundError as err:
                if not skip_bad:
                    raise FileNotFoundError(f"{dataset}: {err}") from None
                bad.append(f"{list_name}:{lineno}:{line.strip()}")
                continue
            items.append((str(path), pid, camid, split))
    return _build(dataset, items, bad, distractor_pid=None)


REID_READERS: dict[str, Callable[..., tuple[list[ReidRecord], ReadSummary]]] = {
    "market1501": read_market1501,
    "dukemtmc": read_dukemtmc,
    "cuhk03_np": read_cuhk03_np,
    "msmt17": read_msmt17,
}


def read_reid(name: str, root: str | Path, **kwargs) -> tuple[list[ReidRecord], ReadSummary]:
    """Dispatch to a reader by name: one of :data:`REID_READERS`."""
    if name not in REID_READERS:
        raise ValueError(f"unknown re-id dataset {name!r}; expected one of {sorted(REID_READERS)}")
    return REID_READERS[name](root, **kwargs)
