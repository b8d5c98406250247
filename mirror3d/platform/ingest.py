"""Ray Data ingestion: reader records -> a ``ray.data.Dataset`` of decoded images and masks.

Any reader's records (:class:`~mirror3d.data.records.ReidRecord` or
:class:`~mirror3d.data.records.ReconRecord`, mixed if you like) become one Arrow table of
paths and labels, split into ``num_blocks`` blocks (``ray.data.from_arrow(...,
override_num_blocks=...)``); the pixels are decoded inside Ray tasks (``map_batches``, batch
format ``numpy``) by the one decode path of mirror3d, :func:`mirror3d.data.decode.decode_image`
(the lifting job's too). Ray Data schedules these tasks with its default
``"SPREAD"`` strategy, so with enough blocks the decoding spreads over the nodes of a cluster.

Output columns (one row per image):

- ``image``: (H, W, 3) uint8 RGB. With ``image_size=(W, H)`` every image is resized (bicubic by
  default) so the column has one fixed shape and batches stack; without it each row keeps its
  own size (Ray stores a variable-shaped tensor column when sizes differ).
- ``mask``: (H, W) uint8 in {0, 1}, aligned with ``image`` (resized with nearest).
  ``mask_source`` says where it came from: ``"file"`` (the record's mask file, binarised as
  ``value > mask_threshold``), ``"estimate"`` (GrabCut, :func:`~mirror3d.data.masks.estimate_mask`,
  on the decoded image: after the crop and the resize) or ``"ones"`` (all foreground: the
  dataset has no mask). ``mask_estimated`` (bool) is True unless the mask came from a file. By default (``missing_mask="auto"``) reconstruction records
  without a mask file are estimated, as the record declares, and re-id records get all-ones.
  ``with_masks=False`` leaves out ``mask``, ``mask_path``, ``mask_source`` and ``mask_estimated``.
- ``pid``, ``camid``, ``label`` (int64): re-id records give theirs; reconstruction records give
  ``pid`` (or -1 when the layout has none, e.g. ATR), ``camid = -1`` and ``label = pid``.
- ``path`` (the image path), ``mask_path`` (``""`` without a file), ``split``, ``dataset`` (str).

Records with a ``bbox`` (CUB) are cropped to the box enlarged by 10 % per side, as
:class:`~mirror3d.data.datasets.ReconstructionDataset` does, before any resize.

Bad data
--------
A decode never raises inside a Ray task: :func:`records_to_dataset` returns every row with an
``ok`` (bool) and an ``error`` (str, ``"ExceptionType: message"``) column, and a placeholder
image for a failed row. A row fails when its image (or mask file) is missing or cannot be
decoded (truncated JPEG, garbage bytes, ...), when its mask differs in size from its image, or
when its box misses the image. :func:`ingest` then applies the policy: failed rows are dropped
from the returned dataset but counted and listed in ``<run_dir>/bad_images.txt`` (one
``path<TAB>reason`` line each, always written, empty when all is well;
:func:`mirror3d.data.decode.read_bad_list` reads it back) and
``<run_dir>/ingest.json`` (total / good / bad / failure rate / threshold); one warning line with
the count is logged. When the failure rate is above ``max_failure_rate`` (default 5 %, strictly
above) :class:`IngestError` stops the job with one line naming the rate, the threshold and the
list file. The number of rows seen is checked against the number of records, so no row can
vanish unnoticed.

Why materialise (the default) rather than split a live stream: the policy needs the exact
count of bad rows *before* anyone trains on the good ones, and the bad-row list must be
complete even when the consumer stops early (a training loop that runs a fixed number of
steps). With a pure streaming split the count is known only when the stream ends, and an
abort at 5 % would come after part of an epoch had been used. So :func:`ingest` decodes once,
``materialize()``s the decoded blocks (Ray keeps them in the object store and spills to disk
when they do not fit in memory), streams only the small ``path/ok/error`` columns back to the
driver to write the list, and returns a lazy ``filter(ok)`` over the materialised blocks: epochs
then cost no decoding. For datasets too large to hold decoded, ``materialize=False`` runs two
passes instead: a check pass that decodes every image but keeps only the status columns, then
a lazy dataset over the good records that decodes again on every iteration (and raises, naming
the path, if an image that passed the check fails later -- a file changed under the job).

Consuming
---------
- Torch: ``ds.iter_torch_batches(batch_size=B, collate_fn=TensorCollate())`` gives
  ``image (B, H, W, 3) uint8``, ``mask (B, H, W) uint8`` and the int / bool columns as tensors
  (string columns are left out: torch cannot hold them). Needs ``image_size`` or equal sizes.
- Ray Train V2: pass ``datasets={"train": result.dataset}`` to ``TorchTrainer`` and, in the
  train loop, ``ray.train.get_dataset_shard("train").iter_torch_batches(collate_fn=TensorCollate())``.
  Outside Ray Train, :func:`train_shards` gives ``n`` disjoint streaming iterators.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import torch
from ray.data.collate_fn import NumpyBatchCollateFn  # iter_torch_batches picks the format from it
from ray.data.expressions import col

from mirror3d.data.decode import BAD_LIST_NAME, decode_image, one_line, write_bad_list
from mirror3d.data.records import ReconRecord, ReidRecord
from mirror3d.data.transforms import resize_pair
from mirror3d.utils.files import atomic_write
from mirror3d.utils.errors import UserError

__all__ = [
    "COLUMNS",
    "MASK_COLUMNS",
    "SUMMARY_NAME",
    "TENSOR_COLUMNS",
    "IngestError",
    "IngestResult",
    "TensorCollate",
    "decode_batch",
    "default_num_blocks",
    "ingest",
    "records_to_dataset",
    "records_to_table",
    "train_shards",
]

logger = logging.getLogger(__name__)

SUMMARY_NAME = "ingest.json"
MISSING_MASK_CHOICES = ("auto", "estimate", "ones")
STATUS_COLUMNS = ("ok", "error")
LABEL_COLUMNS = ("path", "pid", "camid", "label", "split", "dataset")
MASK_COLUMNS = ("mask", "mask_path", "mask_source", "mask_estimated")
COLUMNS = ("image",) + MASK_COLUMNS + LABEL_COLUMNS
"""Columns of an ingested dataset with masks (without masks, ``MASK_COLUMNS`` are absent)."""
TENSOR_COLUMNS = ("image", "mask", "mask_estimated", "pid", "camid", "label")
"""Columns :class:`TensorCollate` turns into tensors by default (those present are used)."""


class IngestError(UserError, RuntimeError):
    """The failure rate of an ingest is above its threshold (the message is one line)."""


@dataclass
class IngestResult:
    """What :func:`ingest` produced.

    Attributes:
        dataset: the good rows (columns :data:`COLUMNS`, without ``ok`` / ``error``).
        total: number of input records.
        good: rows in ``dataset``.
        bad: rows dropped (``total - good``).
        failure_rate: ``bad / total``.
        bad_list: path of ``bad_images.txt``.
        summary_path: path of ``ingest.json``.
        bad_rows: the dropped ``(path, reason)`` pairs, sorted by path.
    """

    dataset: Any
    total: int
    good: int
    bad: int
    failure_rate: float
    bad_list: Path
    summary_path: Path
    bad_rows: list[tuple[str, str]] = field(default_factory=list)


# ----------------------------------------------------------------------------------------
# records -> Arrow table of paths and labels


def _mask_source(rec: ReidRecord | ReconRecord, missing_mask: str) -> str:
    if isinstance(rec, ReconRecord) and rec.mask_path is not None:
        return "file"
    if missing_mask == "auto":
        return "estimate" if isinstance(rec, ReconRecord) else "ones"
    return missing_mask


def records_to_table(records: Sequence[ReidRecord | ReconRecord], missing_mask: str = "auto"):
    """One Arrow row per record: what a decode task needs (paths, labels, box, mask rule).

    Args:
        records: re-id and/or reconstruction records (non-empty).
        missing_mask: ``"auto"`` | ``"estimate"`` | ``"ones"``, the mask of a record without a
            mask file (see the module docstring).

    Returns:
        pyarrow.Table with columns row (index in ``records``), path, mask_path (nullable), mask_threshold, mask_source,
        bbox_x / bbox_y / bbox_w / bbox_h (NaN without a box), pid, camid, label, split, dataset.
    """
    if missing_mask not in MISSING_MASK_CHOICES:
        raise ValueError(f"missing_mask must be one of {MISSING_MASK_CHOICES}, got {missing_mask!r}")
    records = list(records)
    if not records:
        raise ValueError("records is empty: nothing to ingest")
    cols: dict[str, list] = {name: [] for name in (
        "row", "path", "mask_path", "mask_threshold", "mask_source", "bbox_x", "bbox_y", "bbox_w", "bbox_h",
        "pid", "camid", "label", "split", "dataset")}
    for i, rec in enumerate(records):
        if isinstance(rec, ReidRecord):
            path, mask_path, threshold, bbox = rec.path, None, 0, None
            pid, camid, label = rec.pid, rec.camid, rec.label
        elif isinstance(rec, ReconRecord):
            path, mask_path, threshold, bbox = rec.image_path, rec.mask_path, rec.mask_threshold, rec.bbox
            pid = -1 if rec.pid is None else rec.pid
            camid, label = -1, pid
        else:
            raise ValueError(f"records[{i}] must be a ReidRecord or ReconRecord, got {type(rec).__name__}")
        box = (math.nan,) * 4 if bbox is None else tuple(float(v) for v in bbox)
        values = (i, str(path), None if mask_path is None else str(mask_path), int(threshold),
                  _mask_source(rec, missing_mask), *box, int(pid), int(camid), int(label), rec.split,
                  rec.dataset)
        for name, value in zip(cols, values):
            cols[name].append(value)
    schema = pa.schema([
        ("row", pa.int64()), ("path", pa.string()), ("mask_path", pa.string()), ("mask_threshold", pa.int64()),
        ("mask_source", pa.string()), ("bbox_x", pa.float64()), ("bbox_y", pa.float64()),
        ("bbox_w", pa.float64()), ("bbox_h", pa.float64()), ("pid", pa.int64()), ("camid", pa.int64()),
        ("label", pa.int64()), ("split", pa.string()), ("dataset", pa.string()),
    ])
    return pa.table(cols, schema=schema)


# ----------------------------------------------------------------------------------------
# decoding (runs inside Ray tasks)


def _decode_row(path: str, mask_path: str | None, threshold: int, source: str, box: np.ndarray,
                image_size: tuple[int, int] | None, with_masks: bool, resample: str, seed: int):
    """Decode one row with the one decode path (:func:`mirror3d.data.decode.decode_image`).
    Returns image (H, W, 3) uint8 and mask (H, W) bool or None; raises on bad data."""
    d = decode_image(path, mask_path if with_masks and source == "file" else None,
                     mask_threshold=int(threshold),
                     missing_mask=source if with_masks and source != "file" else "none",
                     bbox=None if np.isnan(box).any() else tuple(box), image_size=image_size,
                     resample=resample, seed=seed, mask_mismatch="error")
    return d.image, d.mask


def _column(arrays: list[np.ndarray]) -> np.ndarray:
    """Stack equal-shaped arrays; otherwise an object array (Ray: variable-shaped tensors)."""
    if len({a.shape for a in arrays}) <= 1:
        return np.stack(arrays)
    out = np.empty(len(arrays), dtype=object)
    out[:] = arrays
    return out


def decode_batch(
    batch: dict[str, np.ndarray],
    image_size: tuple[int, int] | None = None,
    with_masks: bool = True,
    resample: str = "bicubic",
    seed: int = 0,
    check_only: bool = False,
    strict: bool = False,
) -> dict[str, np.ndarray]:
    """The ``map_batches`` function: a numpy batch of :func:`records_to_table` rows -> decoded rows.

    A row that fails gets ``ok=False``, ``error="Type: message"`` and a placeholder image / mask
    (zeros of ``image_size``, else of the batch's first good size, else 1x1). ``check_only``
    returns only ``path``, ``ok``, ``error`` and ``row`` (the record index). ``strict`` raises
    instead and leaves out ``ok`` / ``error`` (the second pass of a two-pass ingest, whose rows
    were all checked).
    """
    n = len(batch["path"])
    images: list[np.ndarray | None] = [None] * n
    masks: list[np.ndarray | None] = [None] * n
    ok = np.zeros(n, bool)
    errors = [""] * n
    boxes = np.stack([batch[k] for k in ("bbox_x", "bbox_y", "bbox_w", "bbox_h")], axis=1).astype(np.float64)
    for i in range(n):
        path = str(batch["path"][i])
        mask_path = batch["mask_path"][i]
        mask_path = None if mask_path is None else str(mask_path)
        try:
            image, mask = _decode_row(path, mask_path, int(batch["mask_threshold"][i]), str(batch["mask_source"][i]),
                                      boxes[i], image_size, with_masks, resample, seed)
        except Exception as err:  # noqa: BLE001 - every failure becomes a reported row
            if strict:
                raise ValueError(f"{path} could not be decoded although it passed the check pass: "
                                 f"{type(err).__name__}: {err}") from err
            errors[i] = one_line(f"{type(err).__name__}: {err}")
            continue
        ok[i] = True
        if not check_only:
            images[i] = image
            masks[i] = None if mask is None else mask.astype(np.uint8)
    out: dict[str, np.ndarray] = {"path": np.asarray([str(p) for p in batch["path"]], dtype=object)}
    if not strict:
        out["ok"] = ok
        out["error"] = np.asarray(errors, dtype=object)
    if check_only:
        out["row"] = np.asarray(batch["row"], dtype=np.int64)
        return out
    if image_size is not None:
        hw = (image_size[1], image_size[0])
    else:
        good = [im.shape[:2] for im in images if im is not None]
        hw = good[0] if good else (1, 1)
    images = [np.zeros(hw + (3,), np.uint8) if im is None else im for im in images]
    out["image"] = _column(images) if n else np.zeros((0,) + hw + (3,), np.uint8)
    if with_masks:
        masks = [np.zeros(im.shape[:2], np.uint8) if m is None else m for m, im in zip(masks, images)]
        out["mask"] = _column(masks) if n else np.zeros((0,) + hw, np.uint8)
        out["mask_path"] = np.asarray(["" if p is None else str(p) for p in batch["mask_path"]], dtype=object)
        out["mask_source"] = np.asarray([str(s) for s in batch["mask_source"]], dtype=object)
        out["mask_estimated"] = out["mask_source"] != "file"
    for name in ("pid", "camid", "label"):
        out[name] = np.asarray(batch[name], dtype=np.int64)
    for name in ("split", "dataset"):
        out[name] = np.asarray([str(s) for s in batch[name]], dtype=object)
    return out


# ----------------------------------------------------------------------------------------
# public API


def _check_args(image_size, num_blocks, batch_size, num_cpus, concurrency, resample) -> tuple[int, int] | None:
    if image_size is not None:
        if (not isinstance(image_size, (tuple, list)) or len(image_size) != 2
                or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in image_size)):
            raise ValueError(f"image_size must be None or (W, H) with positive ints, got {image_size!r}")
        image_size = (int(image_size[0]), int(image_size[1]))
    resize_pair(np.zeros((1, 1, 3), np.uint8), None, image_size or (1, 1), resample)  # validates resample
    for name, value in (("num_blocks", num_blocks), ("concurrency", concurrency)):
        if value is not None and (not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1):
            raise ValueError(f"{name} must be None or a positive int, got {value!r}")
    if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool)
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be None or a positive int, got {batch_size!r}")
    if not (isinstance(num_cpus, (int, float)) and num_cpus > 0 and math.isfinite(num_cpus)):
        raise ValueError(f"num_cpus must be a positive number, got {num_cpus!r}")
    return image_size


def default_num_blocks(n: int, rows_per_block: int = 64) -> int:
    """Blocks for ``n`` rows: ``ceil(n / rows_per_block)``, but at least one per cluster CPU
    (when Ray is up) so a small dataset still spreads, and never more than ``n``."""
    cpus = int(ray.cluster_resources().get("CPU", 1)) if ray.is_initialized() else 1
    return max(1, min(n, max(cpus, math.ceil(n / rows_per_block))))


def records_to_dataset(
    records: Sequence[ReidRecord | ReconRecord],
    image_size: tuple[int, int] | None = None,
    with_masks: bool = True,
    num_blocks: int | None = None,
    *,
    missing_mask: str = "auto",
    batch_size: int | None = None,
    num_cpus: float = 1.0,
    concurrency: int | None = None,
    resample: str = "bicubic",
    seed: int = 0,
    _check_only: bool = False,
    _strict: bool = False,
):
    """A lazy ``ray.data.Dataset`` decoding ``records`` in Ray tasks, bad rows included.

    Args:
        records: re-id and/or reconstruction records (non-empty).
        image_size: ``(W, H)`` to resize every image (and mask) to, so batches stack; None
            keeps each image's size.
        with_masks: add ``mask``, ``mask_path``, ``mask_source``, ``mask_estimated``.
        num_blocks: input blocks (the unit of parallelism); None -> :func:`default_num_blocks`.
        missing_mask: mask of a record without a mask file: ``"auto"`` (estimate for
            reconstruction records, all-ones for re-id), ``"estimate"`` or ``"ones"``.
        batch_size: rows per ``map_batches`` call; None (default) decodes each block in one
            call, so ``num_blocks`` sets the number of decode tasks. (An int larger than a
            block makes Ray bundle blocks into one task, which undoes the sharding.)
        num_cpus: CPUs reserved per decode task (fractions allowed).
        concurrency: at most this many decode tasks at once (``TaskPoolStrategy(size=...)``).
        resample: image resize filter (``nearest``, ``bilinear``, ``bicubic``); masks are nearest.
        seed: GrabCut seed for estimated masks.

    Returns:
        Dataset with the columns :data:`COLUMNS` plus ``ok`` (bool) and ``error`` (str); failed
        rows hold placeholder pixels. Use :func:`ingest` to apply the bad-data policy.
    """
    image_size = _check_args(image_size, num_blocks, batch_size, num_cpus, concurrency, resample)
    table = records_to_table(records, missing_mask)
    n = table.num_rows
    blocks = min(n, num_blocks) if num_blocks is not None else default_num_blocks(n)
    ds = ray.data.from_arrow(table, override_num_blocks=blocks)
    compute = ray.data.TaskPoolStrategy(size=concurrency) if concurrency is not None else None
    return ds.map_batches(
        decode_batch,
        batch_format="numpy",
        batch_size=batch_size,
        num_cpus=num_cpus,
        compute=compute,
        fn_kwargs=dict(image_size=image_size, with_masks=bool(with_masks), resample=resample, seed=int(seed),
                       check_only=_check_only, strict=_strict),
    )


def _scan_status(ds, with_rows: bool = False) -> tuple[int, list[tuple[str, str]], set[int]]:
    """Stream the status columns to the driver: (rows seen, sorted bad (path, reason) pairs,
    bad record indices when ``with_rows``)."""
    seen, bad, bad_idx = 0, [], set()
    names = ["path", "ok", "error"] + (["row"] if with_rows else [])
    for batch in ds.select_columns(names).iter_batches(batch_format="numpy", batch_size=None):
        seen += len(batch["path"])
        for i in np.flatnonzero(~np.asarray(batch["ok"], bool)):
            bad.append((str(batch["path"][i]), str(batch["error"][i])))
            if with_rows:
                bad_idx.add(int(batch["row"][i]))
    return seen, sorted(bad), bad_idx


def ingest(
    records: Sequence[ReidRecord | ReconRecord],
    run_dir: str | os.PathLike,
    image_size: tuple[int, int] | None = None,
    max_failure_rate: float = 0.05,
    *,
    with_masks: bool = True,
    materialize: bool = True,
    num_blocks: int | None = None,
    missing_mask: str = "auto",
    batch_size: int | None = None,
    num_cpus: float = 1.0,
    concurrency: int | None = None,
    resample: str = "bicubic",
    seed: int = 0,
) -> IngestResult:
    """Decode ``records`` with Ray Data and apply the bad-data policy (module docstring).

    Args:
        records: re-id and/or reconstruction records (non-empty).
        run_dir: the run directory; ``bad_images.txt`` and ``ingest.json`` are written there.
        image_size: ``(W, H)`` resize, or None (see :func:`records_to_dataset`).
        max_failure_rate: stop when ``bad / total`` is above this, in [0, 1].
        with_masks, num_blocks, missing_mask, batch_size, num_cpus, concurrency, resample, seed:
            as in :func:`records_to_dataset`.
        materialize: True decodes once and keeps the decoded blocks (object store, spilled to
            disk if needed); False checks in a first pass and decodes lazily again on use.

    Returns:
        :class:`IngestResult` with the dataset of good rows and the counts.

    Raises:
        IngestError: failure rate above ``max_failure_rate`` (after writing the list).
        ValueError: bad arguments or records.
    """
    if (not isinstance(max_failure_rate, (int, float)) or isinstance(max_failure_rate, bool)
            or not 0.0 <= max_failure_rate <= 1.0):
        raise ValueError(f"max_failure_rate must be a number in [0, 1], got {max_failure_rate!r}")
    records = list(records)
    options = dict(image_size=image_size, with_masks=with_masks, num_blocks=num_blocks, missing_mask=missing_mask,
                   batch_size=batch_size, num_cpus=num_cpus, concurrency=concurrency, resample=resample, seed=seed)
    # Validate everything (records included) before any Ray work.
    _check_args(image_size, num_blocks, batch_size, num_cpus, concurrency, resample)
    records_to_table(records, missing_mask)
    total = len(records)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    if materialize:
        decoded = records_to_dataset(records, **options).materialize()
        seen, bad_rows, _ = _scan_status(decoded)
        good_ds = decoded.filter(expr=col("ok")).drop_columns(list(STATUS_COLUMNS))
    else:
        seen, bad_rows, bad_idx = _scan_status(records_to_dataset(records, **options, _check_only=True),
                                               with_rows=True)
        good_ds = None  # built below, once the bad paths are known
    if seen != total:
        raise RuntimeError(f"ingest: {total} records went in but {seen} rows came out of Ray Data")

    bad_list = write_bad_list(run_dir / BAD_LIST_NAME, bad_rows)
    n_bad = len(bad_rows)
    rate = n_bad / total
    summary_path = run_dir / SUMMARY_NAME
    summary = {"total": total, "good": total - n_bad, "bad": n_bad, "failure_rate": rate,
               "max_failure_rate": float(max_failure_rate), "bad_list": BAD_LIST_NAME,
               "materialize": bool(materialize)}
    atomic_write(summary_path, json.dumps(summary, indent=2) + "\n")

    if rate > max_failure_rate:
        raise IngestError(
            f"ingest stopped: {n_bad} of {total} images are bad (unreadable image or mask), failure rate "
            f"{rate:.1%} is above the threshold {max_failure_rate:.1%} (max_failure_rate); list: {bad_list}"
        )
    if n_bad:
        logger.warning("ingest: dropped %d of %d images (%.1f%%) as bad (unreadable image or mask); "
                       "listed in %s", n_bad, total, 100.0 * rate, bad_list)
    else:
        logger.info("ingest: all %d images decoded", total)

    if good_ds is None:
        good_records = [r for i, r in enumerate(records) if i not in bad_idx]
        good_ds = records_to_dataset(good_records, **options, _strict=True)
    return IngestResult(dataset=good_ds, total=total, good=total - n_bad, bad=n_bad, failure_rate=rate,
                        bad_list=bad_list, summary_path=summary_path, bad_rows=bad_rows)


class TensorCollate(NumpyBatchCollateFn):
    """``collate_fn`` for ``iter_torch_batches``: numeric / bool columns -> tensors.

    ``image (B, H, W, 3) uint8``, ``mask (B, H, W) uint8``, ``mask_estimated (B,) bool``,
    ``pid`` / ``camid`` / ``label (B,) int64``. String columns (paths, split) cannot be tensors
    and are left out. The output is a dict of tensors, so Ray moves it to the train device.

    Args:
        columns: the columns to keep; None keeps those of :data:`TENSOR_COLUMNS` present in the
            batch. A named column that is missing raises ValueError.
    """

    def __init__(self, columns: Sequence[str] | None = None):
        self.columns = None if columns is None else tuple(columns)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        names = [c for c in TENSOR_COLUMNS if c in batch] if self.columns is None else list(self.columns)
        out = {}
        for name in names:
            if name not in batch:
                raise ValueError(f"column {name!r} is not in the batch (columns: {sorted(batch)})")
            values = batch[name]
            if values.dtype == object:
                raise ValueError(f"column {name!r} has rows of different shapes (or strings) and cannot be "
                                 "stacked; set image_size when building the dataset")
            values = np.ascontiguousarray(values)
            if not values.flags.writeable:  # zero-copy views of the object store are read-only
                values = values.copy()
            out[name] = torch.from_numpy(values)
        return out


def train_shards(ds, n: int, equal: bool = True) -> list:
    """``n`` disjoint streaming iterators over ``ds`` (``Dataset.streaming_split``), one per
    training worker; each supports ``iter_torch_batches(collate_fn=TensorCollate())`` and can
    be iterated once per epoch. All ``n`` must be consumed concurrently (Ray starts each epoch
    when every iterator asks for data). ``equal=True`` (what DDP needs: the same number of steps
    per worker) may leave out up to ``n - 1`` rows per epoch; ``equal=False`` keeps every row.

    Inside Ray Train V2 use ``ray.train.get_dataset_shard(name)`` instead: ``TorchTrainer(...,
    datasets={name: ds})`` splits the dataset the same way.
    """
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    return ds.streaming_split(int(n), equal=bool(equal))
