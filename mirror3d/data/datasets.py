"""Torch datasets over reader records (reconstruction, 2D re-id) and in-memory point clouds.

Randomness: each sample draws from its own ``torch.Generator`` seeded from
``(seed, epoch, index)`` (:func:`sample_generator`), so a sample is the same whatever the
DataLoader worker or order; call ``set_epoch(e)`` once per epoch to get new draws.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from mirror3d.data.masks import (
    check_nonempty,
    estimate_mask,
    foreground_ratio,
    keep_by_ratio,
    load_binary_mask,
    load_rgb,
)
from mirror3d.data.records import ReconRecord, ReidRecord
from mirror3d.data.transforms import (
    MarketAugment,
    PointCloudAugment,
    ResizeOnly,
    build_recon_transform,
    crop_pair,
    enlarged_bbox,
    to_four_channel,
    to_rgb_tensor,
)


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from ``(seed, epoch, index)`` (all >= 0)."""
    if min(seed, epoch, index) < 0:
        raise ValueError(f"seed, epoch and index must be >= 0, got {(seed, epoch, index)}")
    state = np.random.SeedSequence([int(seed), int(epoch), int(index)]).generate_state(2, dtype=np.uint32)
    g = torch.Generator()
    g.manual_seed((int(state[0]) << 31) ^ int(state[1]))
    return g


class _EpochMixin:
    seed: int
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the random draws of ``epoch`` from now on."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def generator(self, index: int) -> torch.Generator:
        return sample_generator(self.seed, self.epoch, index)


def _check_index(index: int, n: int) -> int:
    if not -n <= index < n:
        raise IndexError(f"index {index} out of range for a dataset of {n} samples")
    return index % n


class ReconstructionDataset(_EpochMixin, Dataset):
    """4-channel reconstruction samples (RGB + binary mask) for CASL.

    Args:
        records: :class:`ReconRecord` list from a reader.
        image_size: output ``(W, H)`` (64x128 Market, 96x160 ATR, 128x128 CUB).
        aug: ``"market"`` | ``"atr"`` | ``"cub"`` | None (resize only); see
            :mod:`mirror3d.data.transforms`.
        bg: keep the real background; False sets background RGB to 1 (white).
        ratio_range: keep only records with ``lo < fg_ratio < hi``; records without a ratio
            get it computed here (masks loaded, estimated ones estimated) before filtering.
        seed: base seed of the per-sample generators (and of GrabCut for estimated masks).
        train: random augmentation on; False keeps only the deterministic part of ``aug``
            (the CUB square pad). In training an empty mask raises ValueError naming the file.
        resample: image resize filter (masks are always nearest).

    Records with a ``bbox`` (CUB) are first cropped to the box enlarged by 10 % per side,
    clamped to the image. Estimated masks (``mask_estimated=True``) come from
    :func:`estimate_mask` on the full image and are cached per image.

    ``__getitem__`` returns ``dict(image=(4, H, W) float32, path=str, mask_path=str ('' for an
    estimated mask), fg_ratio=float, mask_estimated=bool, index=int)``; ``fg_ratio`` is the
    record's ratio, or the loaded mask's when the record has none.

    Raises (at ``__getitem__``):
        ValueError: image and mask sizes differ (names both paths and sizes); the image or mask
            cannot be decoded (names the path); empty training mask.
        FileNotFoundError: a file is missing.
    """

    def __init__(
        self,
        records: Sequence[ReconRecord],
        image_size: tuple[int, int] = (64, 128),
        aug: str | None = "market",
        bg: bool = True,
        ratio_range: tuple[float, float] | None = None,
        seed: int = 0,
        train: bool = True,
        resample: str = "bicubic",
    ):
        records = list(records)
        for r in records:
            if not isinstance(r, ReconRecord):
                raise ValueError(f"records must be ReconRecord instances, got {type(r).__name__}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.image_size = tuple(image_size)
        self.aug, self.bg, self.seed, self.train, self.resample = aug, bool(bg), int(seed), bool(train), resample
        self.transform = build_recon_transform(aug, self.image_size, train=self.train, resample=resample)
        self._estimated: dict[str, np.ndarray] = {}
        self.epoch = 0
        if ratio_range is not None:
            lo, hi = ratio_range
            records = keep_by_ratio(self.with_ratios(records), lo, hi)
        self.ratio_range = ratio_range
        self.records = records
        #: the training input in numbers (read, used, skipped by reason), set by the trainer
        #: that built this dataset (:func:`mirror3d.engine.casl_train.load_casl_data`)
        self.input_report: dict | None = None

    def __len__(self) -> int:
        return len(self.records)

    def _mask_for(self, rec: ReconRecord, image: np.ndarray) -> np.ndarray:
        if rec.mask_path is None:
            if rec.image_path not in self._estimated:
                self._estimated[rec.image_path] = estimate_mask(image, seed=self.seed)
            return self._estimated[rec.image_path]
        mask = load_binary_mask(rec.mask_path, rec.mask_threshold)
        if mask.shape != image.shape[:2]:
            raise ValueError(
                f"image {rec.image_path} is {image.shape[1]}x{image.shape[0]} but mask {rec.mask_path} "
                f"is {mask.shape[1]}x{mask.shape[0]} (W x H)"
            )
        return mask

    def load_pair(self, rec: ReconRecord) -> tuple[np.ndarray, np.ndarray]:
        """Image (H, W, 3) uint8 and mask (H, W) bool of a record, cropped to its bbox if any."""
        image = load_rgb(rec.image_path)
        mask = self._mask_for(rec, image)
        if rec.bbox is not None:
            box = enlarged_bbox(rec.bbox, image.shape[1], image.shape[0])
            image, mask = crop_pair(image, mask, *box)
        return image, mask

    def with_ratios(self, records: Sequence[ReconRecord]) -> list[ReconRecord]:
        """Records with every missing ``fg_ratio`` filled in from the (loaded or estimated) mask."""
        out = []
        for rec in records:
            if rec.fg_ratio is None:
                _, mask = self.load_pair(rec)
                rec = dataclasses.replace(rec, fg_ratio=foreground_ratio(mask))
            out.append(rec)
        return out

    def __getitem__(self, index: int) -> dict:
        index = _check_index(index, len(self))
        rec = self.records[index]
        image, mask = self.load_pair(rec)
        if self.train:
            check_nonempty(mask, rec.mask_path if rec.mask_path is not None else f"{rec.image_path} (estimated mask)")
        ratio = rec.fg_ratio if rec.fg_ratio is not None else foreground_ratio(mask)
        out = self.transform(image, mask, self.generator(index))
        return {
            "image": to_four_channel(out.image, out.mask, bg=self.bg),
            "path": rec.image_path,
            "mask_path": rec.mask_path or "",
            "fg_ratio": float(ratio),
            "mask_estimated": bool(rec.mask_estimated),
            "index": index,
        }

    def clean_subset(self, lo: float, hi: float) -> ReconstructionDataset:
        """The "clean" set of the prototype loop: records with ``lo < fg_ratio < hi``, same
        size / style / background / seed, without random augmentation (``train=False``)."""
        clean = ReconstructionDataset(
            [], self.image_size, self.aug, self.bg, None, self.seed, train=False, resample=self.resample
        )
        clean._estimated = self._estimated
        clean.records = keep_by_ratio(clean.with_ratios(self.records), lo, hi)
        clean.ratio_range = (lo, hi)
        return clean


class ReidImageDataset(_EpochMixin, Dataset):
    """RGB re-id images for the 2D baseline.

    Training: resize to (W, H), pad 10 px black, random (W, H) crop, flip p = 0.5 (the Market
    style without a mask). Eval: resize only.

    ``__getitem__`` returns ``dict(image=(3, H, W) float32 in [0, 1], pid=int (original),
    label=int (train: relabelled class index), camid=int, path=str, index=int)``.
    """

    def __init__(
        self,
        records: Sequence[ReidRecord],
        image_size: tuple[int, int] = (64, 128),
        train: bool = True,
        seed: int = 0,
        resample: str = "bicubic",
    ):
        self.records = list(records)
        for r in self.records:
            if not isinstance(r, ReidRecord):
                raise ValueError(f"records must be ReidRecord instances, got {type(r).__name__}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.seed, self.epoch, self.train = int(seed), 0, bool(train)
        cls = MarketAugment if train else ResizeOnly
        self.transform = cls(tuple(image_size), train=self.train, resample=resample)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        index = _check_index(index, len(self))
        rec = self.records[index]
        out = self.transform(load_rgb(rec.path), None, self.generator(index))
        return {
            "image": to_rgb_tensor(out.image),
            "pid": rec.pid,
            "label": rec.label,
            "camid": rec.camid,
            "path": rec.path,
            "index": index,
        }


class PointCloudDataset(_EpochMixin, Dataset):
    """In-memory coloured point clouds for OG-Net.

    Args:
        clouds: sequence of (N_i, 6) arrays / tensors ``[x, y, z, r, g, b]``, rgb in [0, 1].
        pids: class index per cloud (relabel before, e.g. ``ReidRecord.label``).
        camids: 0-based camera per cloud (default all 0).
        num_points: points per sample; None = ``round(N_i * slim)`` (then clouds of different
            sizes cannot be batched by the default collate).
        train: augmentation on (flip, random subset, scale + jitter); see
            :class:`PointCloudAugment`.
        slim: fraction of points when ``num_points`` is None (reference 0.5).
        seed: base seed of the per-sample generators.
        short: a cloud with fewer than ``num_points`` points: ``"error"`` raises ValueError
            naming it, ``"repeat"`` pads by repeating its points in order.
        names: a name per cloud for error messages (default ``cloud[<i>]``).
        backend: the augmentation's implementation (:class:`PointCloudAugment`): ``"numpy"``
            (default, cheap per sample) or ``"reference"`` (the previous torch one); both give
            bit-identical samples for the same ``(seed, epoch, index)``.

    ``__getitem__`` returns ``dict(points=(R, 6) float32, pid=int, camid=int, index=int)``.
    NaN / inf coordinates raise ValueError naming the sample.
    """

    def __init__(
        self,
        clouds: Sequence[np.ndarray | torch.Tensor],
        pids: Sequence[int],
        camids: Sequence[int] | None = None,
        num_points: int | None = None,
        train: bool = True,
        slim: float = 0.5,
        seed: int = 0,
        short: str = "error",
        names: Sequence[str] | None = None,
        backend: str = "numpy",
    ):
        n = len(clouds)
        camids = [0] * n if camids is None else list(camids)
        names = [f"cloud[{i}]" for i in range(n)] if names is None else list(names)
        if not (len(pids) == len(camids) == len(names) == n):
            raise ValueError(f"clouds, pids, camids and names must have the same length, got "
                             f"{n}, {len(pids)}, {len(camids)}, {len(names)}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.clouds = list(clouds)
        self.pids, self.camids, self.names = [int(p) for p in pids], [int(c) for c in camids], names
        self.seed, self.epoch = int(seed), 0
        self.augment = PointCloudAugment(train=train, num_points=num_points, slim=slim, short=short,
                                         backend=backend)

    def __len__(self) -> int:
        return len(self.clouds)

    def __getitem__(self, index: int) -> dict:
        index = _check_index(index, len(self))
        points = torch.as_tensor(self.clouds[index])
        if points.is_floating_point():
            points = points.to(torch.float32)
        points = self.augment(points, self.generator(index), name=self.names[index])
        return {"points": points.to(torch.float32), "pid": self.pids[index],
                "camid": self.camids[index], "index": index}
