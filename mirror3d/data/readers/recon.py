"""Readers for the reconstruction datasets (image + foreground mask) that CASL trains on.

CASL: Zheng et al. 2022, "3D Magic Mirror" (arXiv:2204.13096); the layouts below are those its public
code prepares and reads.

Every reader returns ``(records, summary)``: a list of
:class:`~mirror3d.data.records.ReconRecord` and a :class:`~mirror3d.data.records.ReadSummary`.
Readers return every sample they find; foreground-ratio filters are applied afterwards
(:func:`mirror3d.data.masks.keep_by_ratio` or ``ReconstructionDataset(ratio_range=...)``).

Layouts:

- Market-HQ (``root`` = the ``hq`` folder): masks
  ``seg_hmr/{train_all,query}/<pid>/<img>.jpg_<r.rr>.png``, RGB
  ``pytorch/<split>/<pid>/<img>.jpg.png``. The RGB path is the mask path with the
  ``seg_hmr`` folder replaced by ``pytorch`` and the last 9 characters (``_<r.rr>.png``)
  replaced by ``.png`` (:func:`market_hq_image_path`). The ratio comes from the mask name.
  ``train_all`` -> split ``train``, ``query`` -> split ``test``. Masks: value > 0. An RGB
  image without a mask gives no record; it is counted in ``summary.left_out`` ("no mask").
- ATR (``root`` = ``humanparsing``): ``JPEGImages/<name>.jpg`` and
  ``SegmentationClassAug/<name>.png`` (any label > 0 is foreground); when
  ``Seg/<name>_<ratio>.png`` (the reference's prepared masks) exists it is used instead and
  the ratio read from its name; otherwise the ratio is computed from the mask. Optional
  split lists (the reference's ``ATR_train.txt`` / ``ATR_test.txt``) hold one entry per line,
  ``<name>_<ratio>.png``, ``<name>.jpg`` / ``.png`` or ``<name>``; without lists every
  image is read with split ``all``.
- CUB-200-2011 (``root`` = ``CUB_200_2011``): ``images/<class>/<name>.jpg``,
  ``segmentations/<class>/<name>.png``, ``images.txt`` (``<id> <class>/<name>.jpg``),
  ``train_test_split.txt`` (``<id> <1=train|0=test>``), ``bounding_boxes.txt``
  (``<id> <x> <y> <w> <h>``). The record carries the bbox; datasets crop it enlarged by 10 %
  per side (clamped). ``pid`` is the 0-based class index. Masks are soft: foreground is
  value > 160 when loaded; the ratio (as the reference's prepare script) counts pixels > 0
  inside the enlarged box.
- Generic folder: images under ``image_dir`` (recursive), masks in ``mask_dir`` at the same
  relative path with the same stem and suffix ``.png`` (or ``<stem>_<ratio>.png``). Without a
  mask folder every record gets ``mask_estimated=True`` and the dataset estimates the mask
  with :func:`mirror3d.data.masks.estimate_mask` (GrabCut from a centred box).

Errors: a missing folder or list file raises one ``FileNotFoundError`` naming the missing
paths and the expected layout. A bad name or a missing partner file raises (``ValueError`` /
``FileNotFoundError`` naming the file) unless ``skip_bad=True``, in which case it is skipped,
counted in ``summary.skipped`` and logged once. Files whose suffix is not an image suffix are
ignored.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from mirror3d.data.masks import (
    foreground_ratio,
    is_image_file,
    load_binary_mask,
    open_image,
    ratio_from_filename,
    strip_ratio_suffix,
)
from mirror3d.data.records import ReadSummary, ReconRecord, note_skipped, summarize_recon
from mirror3d.data.transforms import enlarged_bbox

logger = logging.getLogger(__name__)

MARKET_HQ_LAYOUT = (
    "<root>/seg_hmr/<split>/<pid>/<img>.jpg_<r.rr>.png and <root>/pytorch/<split>/<pid>/<img>.jpg.png"
)
ATR_LAYOUT = (
    "<root>/JPEGImages/<name>.jpg, <root>/SegmentationClassAug/<name>.png, optional <root>/Seg/<name>_<ratio>.png"
)
CUB_LAYOUT = (
    "<root>/images/<class>/<name>.jpg, <root>/segmentations/<class>/<name>.png, <root>/images.txt, "
    "<root>/train_test_split.txt, <root>/bounding_boxes.txt"
)
FOLDER_LAYOUT = "<image_dir>/**/<stem>.<ext> and optional <mask_dir>/**/<stem>.png"

_MARKET_HQ_MASK = re.compile(r"^.+_\d\.\d\d\.png$")
_MARKET_HQ_SPLITS = {"train_all": "train", "train": "train", "query": "test", "gallery": "test", "val": "test"}


def _require(paths: Sequence[Path], dataset: str, layout: str) -> None:
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{dataset}: missing {', '.join(missing)}; expected layout {layout}")


class _Collector:
    """Collects records and bad entries; raises at once unless ``skip_bad``."""

    def __init__(self, dataset: str, skip_bad: bool):
        self.dataset, self.skip_bad = dataset, skip_bad
        self.records: list[ReconRecord] = []
        self.bad: list[str] = []

    def fail(self, err: Exception, name: str) -> None:
        if not self.skip_bad:
            raise type(err)(f"{self.dataset}: {err}") from None
        self.bad.append(name)

    def result(self) -> tuple[list[ReconRecord], ReadSummary]:
        summary = summarize_recon(self.dataset, self.records)
        note_skipped(summary, self.bad, "bad entries")
        return self.records, summary


# ----------------------------------------------------------------------------------------
# Market-HQ


def market_hq_image_path(mask_path: str | Path) -> Path:
    """RGB path of a Market-HQ mask: the ``seg_hmr`` folder -> ``pytorch`` and the last 9
    characters of the name (``_<r.rr>.png``) -> ``.png``.

    ``.../seg_hmr/train_all/0002/0002_c1s1_000451_03.jpg_0.45.png`` ->
    ``.../pytorch/train_all/0002/0002_c1s1_000451_03.jpg.png``.
    """
    mask_path = Path(mask_path)
    if not _MARKET_HQ_MASK.match(mask_path.name):
        raise ValueError(f"mask name {mask_path.name!r} does not match the Market-HQ pattern "
                         "'<img>.jpg_<r.rr>.png' (two-decimal ratio)")
    parts = list(mask_path.parent.parts)
    if "seg_hmr" not in parts:
        raise ValueError(f"mask path {mask_path} has no 'seg_hmr' folder (layout {MARKET_HQ_LAYOUT})")
    i = len(parts) - 1 - parts[::-1].index("seg_hmr")
    parts[i] = "pytorch"
    return Path(*parts) / (mask_path.name[:-9] + ".png")


def read_market_hq(
    root: str | Path,
    splits: Sequence[str] = ("train_all", "query"),
    check_images: bool = True,
    skip_bad: bool = False,
) -> tuple[list[ReconRecord], ReadSummary]:
    """Market-HQ image/mask pairs (see the module docstring).

    Args:
        root: the folder holding ``seg_hmr/`` and ``pytorch/``.
        splits: mask sub-folders to read; ``train_all``/``train`` -> split ``train``,
            ``query``/``gallery``/``val`` -> ``test``.
        check_images: check that each derived RGB file exists.
    """
    root = Path(root)
    unknown = [s for s in splits if s not in _MARKET_HQ_SPLITS]
    if unknown:
        raise ValueError(f"unknown Market-HQ split(s) {unknown}; expected some of {sorted(_MARKET_HQ_SPLITS)}")
    _require([root / "seg_hmr" / s for s in splits] + [root / "pytorch"], "market_hq", MARKET_HQ_LAYOUT)
    col = _Collector("market_hq", skip_bad)
    for split_dir in splits:
        for pid_dir in sorted(p for p in (root / "seg_hmr" / split_dir).iterdir() if p.is_dir()):
            for mask_path in sorted(pid_dir.iterdir()):
                if not mask_path.is_file() or not is_image_file(mask_path):
                    continue
                try:
                    if not re.fullmatch(r"-?\d+", pid_dir.name):
                        raise ValueError(f"pid folder {pid_dir} is not an integer id")
                    image_path = market_hq_image_path(mask_path)
                    ratio = ratio_from_filename(mask_path.name)
                    if check_images and not image_path.is_file():
                        raise FileNotFoundError(f"RGB image {image_path} for mask {mask_path} does not exist")
                except (ValueError, FileNotFoundError) as err:
                    col.fail(err, str(mask_path))
                    continue
                col.records.append(ReconRecord(
                    image_path=str(image_path), mask_path=str(mask_path), mask_estimated=False,
                    split=_MARKET_HQ_SPLITS[split_dir], fg_ratio=ratio, dataset="market_hq",
                    pid=int(pid_dir.name), mask_threshold=0,
                ))
    records, summary = col.result()
    # images of the same splits without a mask: no record, but counted (and logged once)
    paired = {str(Path(r.image_path)) for r in records}
    paired.update(str(market_hq_image_path(m)) for m in col.bad if _MARKET_HQ_MASK.match(Path(m).name)
                  and "seg_hmr" in Path(m).parts)
    for split_dir in splits:
        folder = root / "pytorch" / split_dir
        if not folder.is_dir():
            continue
        for image in sorted(folder.rglob("*")):
            if image.is_file() and is_image_file(image) and str(image) not in paired:
                summary.left_out.append((str(image), _MARKET_HQ_SPLITS[split_dir], "no mask"))
    if summary.left_out:
        logger.warning("market_hq: %d image(s) without a mask left out, e.g. %s",
                       len(summary.left_out), summary.left_out[0][0])
    return records, summary


# ----------------------------------------------------------------------------------------
# ATR


def _parse_list_entry(entry: str) -> tuple[str, float | None]:
    """``'<name>_<ratio>.png'`` -> (name, ratio); ``'<name>.jpg'`` / ``'<name>'`` -> (name, None)."""
    try:
        return strip_ratio_suffix(entry), ratio_from_filename(entry)
    except ValueError:
        pass
    path = Path(entry)
    return (path.stem if path.suffix.lower() in (".jpg", ".jpeg", ".png") else entry), None


def read_atr(
    root: str | Path,
    split_lists: Mapping[str, str | Path] | None = None,
    compute_ratio: bool = True,
    skip_bad: bool = False,
) -> tuple[list[ReconRecord], ReadSummary]:
    """ATR human parsing images with binary masks (label > 0).

    Args:
        root: the ``humanparsing`` folder.
        split_lists: e.g. ``{"train": ".../ATR_train.txt", "test": ".../ATR_test.txt"}``;
            None reads every ``JPEGImages/*.jpg`` with split ``all``.
        compute_ratio: compute the foreground ratio from ``SegmentationClassAug`` masks when
            neither a ``Seg/`` file nor the list entry gives it (else ``fg_ratio=None``).
    """
    root = Path(root)
    required = [root / "JPEGImages", root / "SegmentationClassAug"]
    required += [Path(p) for p in (split_lists or {}).values()]
    _require(required, "atr", ATR_LAYOUT)
    for split in split_lists or {}:
        if split not in ("train", "test", "all"):
            raise ValueError(f"ATR split names must be 'train', 'test' or 'all', got {split!r}")

    prepared: dict[str, tuple[Path, float]] = {}
    if (root / "Seg").is_dir():
        for path in sorted((root / "Seg").iterdir()):
            if path.is_file() and path.suffix.lower() == ".png":
                try:
                    prepared[strip_ratio_suffix(path.name)] = (path, ratio_from_filename(path.name))
                except ValueError:
                    logger.debug("atr: ignoring %s (no _<ratio>.png suffix)", path)

    entries: list[tuple[str, str, float | None]] = []
    if split_lists:
        for split, list_path in split_lists.items():
            for line in Path(list_path).read_text().splitlines():
                if line.strip():
                    name, ratio = _parse_list_entry(line.strip())
                    entries.append((split, name, ratio))
    else:
        for path in sorted((root / "JPEGImages").iterdir()):
            if path.is_file() and path.suffix.lower() in (".jpg", ".jpeg"):
                entries.append(("all", path.stem, None))

    col = _Collector("atr", skip_bad)
    for split, name, ratio in entries:
        image_path = root / "JPEGImages" / f"{name}.jpg"
        try:
            if not image_path.is_file():
                raise FileNotFoundError(f"image {image_path} does not exist")
            if name in prepared:
                mask_path, ratio = prepared[name]
            else:
                mask_path = root / "SegmentationClassAug" / f"{name}.png"
                if not mask_path.is_file():
                    raise FileNotFoundError(f"mask {mask_path} for image {image_path} does not exist")
                if ratio is None and compute_ratio:
                    ratio = foreground_ratio(load_binary_mask(mask_path, 0))
        except (ValueError, FileNotFoundError) as err:
            col.fail(err, str(image_path))
            continue
        col.records.append(ReconRecord(
            image_path=str(image_path), mask_path=str(mask_path), mask_estimated=False,
            split=split, fg_ratio=ratio, dataset="atr", mask_threshold=0,
        ))
    return col.result()


# ----------------------------------------------------------------------------------------
# CUB-200-2011


def _read_id_table(path: Path, ncols: int, what: str) -> dict[int, list[str]]:
    table: dict[int, list[str]] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != ncols or not fields[0].isdigit():
            raise ValueError(f"{path}:{lineno}: expected {what}, got {line.strip()!r}")
        table[int(fields[0])] = fields[1:]
    return table


def read_cub(
    root: str | Path, compute_ratio: bool = True, skip_bad: bool = False
) -> tuple[list[ReconRecord], ReadSummary]:
    """CUB-200-2011 birds with the official split and boxes (see the module docstring).

    Args:
        root: the ``CUB_200_2011`` folder.
        compute_ratio: compute each ratio (pixels > 0 of the mask inside the enlarged box).
    """
    root = Path(root)
    files = {n: root / n for n in ("images.txt", "train_test_split.txt", "bounding_boxes.txt")}
    _require([root / "images", root / "segmentations", *files.values()], "cub", CUB_LAYOUT)
    images = _read_id_table(files["images.txt"], 2, "'<id> <class>/<name>.jpg'")
    split = _read_id_table(files["train_test_split.txt"], 2, "'<id> <0|1>'")
    boxes = _read_id_table(files["bounding_boxes.txt"], 5, "'<id> <x> <y> <w> <h>'")
    col = _Collector("cub", skip_bad)
    for image_id in sorted(images):
        rel = images[image_id][0]
        image_path = root / "images" / rel
        mask_path = (root / "segmentations" / rel).with_suffix(".png")
        try:
            if image_id not in split or image_id not in boxes:
                raise ValueError(f"image id {image_id} ({rel}) is missing from "
                                 f"{'train_test_split.txt' if image_id not in split else 'bounding_boxes.txt'}")
            if split[image_id][0] not in ("0", "1"):
                raise ValueError(f"train_test_split.txt: id {image_id} has flag {split[image_id][0]!r}, expected 0 or 1")
            match = re.match(r"^(\d+)\.", rel)
            if match is None:
                raise ValueError(f"images.txt: {rel!r} does not match '<NNN>.<class>/<name>.jpg'")
            bbox = tuple(float(v) for v in boxes[image_id])
            if not image_path.is_file():
                raise FileNotFoundError(f"image {image_path} does not exist")
            if not mask_path.is_file():
                raise FileNotFoundError(f"mask {mask_path} for image {image_path} does not exist")
            ratio = None
            if compute_ratio:
                mask = load_binary_mask(mask_path, 0)
                left, upper, right, lower = enlarged_bbox(bbox, mask.shape[1], mask.shape[0])
                ratio = foreground_ratio(mask[upper:lower, left:right])
        except (ValueError, FileNotFoundError) as err:
            col.fail(err, str(image_path))
            continue
        col.records.append(ReconRecord(
            image_path=str(image_path), mask_path=str(mask_path), mask_estimated=False,
            split="train" if split[image_id][0] == "1" else "test", fg_ratio=ratio, dataset="cub",
            pid=int(match.group(1)) - 1, bbox=bbox, mask_threshold=160,
        ))
    return col.result()


# ----------------------------------------------------------------------------------------
# generic folder


def _find_mask(mask_dir: Path, rel: Path) -> Path | None:
    exact = mask_dir / rel.parent / f"{rel.stem}.png"
    if exact.is_file():
        return exact
    folder = mask_dir / rel.parent
    if folder.is_dir():
        for cand in sorted(folder.glob(f"{rel.stem}_*.png")):
            try:
                if strip_ratio_suffix(cand.name) == rel.stem:
                    return cand
            except ValueError:
                continue
    return None


def read_image_folder(
    image_dir: str | Path,
    mask_dir: str | Path | None = None,
    split: str = "all",
    mask_threshold: int = 127,
    compute_ratio: bool = True,
    estimate_missing: bool = False,
    check_sizes: bool = False,
    dataset: str = "folder",
    skip_bad: bool = False,
) -> tuple[list[ReconRecord], ReadSummary]:
    """Any folder of images, with masks from a mask folder or estimated.

    Args:
        image_dir: images, searched recursively (sorted).
        mask_dir: masks at the same relative path and stem, ``.png`` (or
            ``<stem>_<ratio>.png``, whose ratio is then used). None: every mask is estimated.
        split: the split given to every record.
        mask_threshold: foreground is mask value > threshold (127 suits 0/255 masks).
        compute_ratio: compute the ratio of file masks (estimated masks get ``None``).
        estimate_missing: with a mask folder, estimate the masks that are missing instead of
            raising FileNotFoundError.
        check_sizes: open each image and mask now and raise on a size mismatch.
    """
    image_dir = Path(image_dir)
    required = [image_dir] + ([Path(mask_dir)] if mask_dir is not None else [])
    _require(required, dataset, FOLDER_LAYOUT)
    col = _Collector(dataset, skip_bad)
    for image_path in sorted(p for p in image_dir.rglob("*") if p.is_file() and is_image_file(p)):
        rel = image_path.relative_to(image_dir)
        mask_path = _find_mask(Path(mask_dir), rel) if mask_dir is not None else None
        ratio = None
        try:
            if mask_path is None and mask_dir is not None and not estimate_missing:
                raise FileNotFoundError(
                    f"no mask for {image_path}: expected {Path(mask_dir) / rel.parent / (rel.stem + '.png')}"
                )
            if mask_path is not None:
                try:
                    ratio = ratio_from_filename(mask_path.name)
                except ValueError:
                    ratio = None
                if (ratio is None and compute_ratio) or check_sizes:
                    mask = load_binary_mask(mask_path, mask_threshold)
                    if ratio is None and compute_ratio:
                        ratio = foreground_ratio(mask)
                    if check_sizes:
                        size = open_image(image_path).size
                        if size != (mask.shape[1], mask.shape[0]):
                            raise ValueError(f"image {image_path} is {size[0]}x{size[1]} but mask {mask_path} "
                                             f"is {mask.shape[1]}x{mask.shape[0]}")
        except (ValueError, FileNotFoundError) as err:
            col.fail(err, str(image_path))
            continue
        col.records.append(ReconRecord(
            image_path=str(image_path), mask_path=None if mask_path is None else str(mask_path),
            mask_estimated=mask_path is None, split=split, fg_ratio=ratio, dataset=dataset,
            mask_threshold=mask_threshold,
        ))
    return col.result()


RECON_READERS = {
    "market_hq": read_market_hq,
    "atr": read_atr,
    "cub": read_cub,
    "folder": read_image_folder,
}


def read_recon(name: str, root: str | Path, **kwargs) -> tuple[list[ReconRecord], ReadSummary]:
    """Dispatch to a reader by name: one of :data:`RECON_READERS`."""
    if name not in RECON_READERS:
        raise ValueError(f"unknown reconstruction dataset {name!r}; expected one of {sorted(RECON_READERS)}")
    return RECON_READERS[name](root, **kwargs)
