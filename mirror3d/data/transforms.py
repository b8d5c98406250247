"""Augmentations: reconstruction image+mask pairs (CASL) and coloured point clouds (OG-Net).

Reconstruction (the augmentations of CASL's public data loaders; CASL: Zheng et al. 2022,
"3D Magic Mirror", arXiv:2204.13096). Images are (H, W, 3) uint8 RGB arrays, masks (H, W)
bool arrays (or None); sizes are given as ``(W, H)`` like the configs. Image and mask go
through the same geometric operations with the same random draws; images are resized with
bicubic filtering (PIL's default, which the reference uses) and masks with nearest
neighbour. Random draws come from a ``torch.Generator``, so a fixed seed reproduces a sample.

- :class:`MarketAugment` (Market-HQ, 64x128): resize to W x H, pad 10 px of black on image
  and mask, crop back to W x H at an offset drawn from {0..20}^2, flip with p = 0.5.
- :class:`AtrAugment` (ATR, 96x160): flip p = 0.5, pad 10, random crop (below), then a
  direct resize to W x H (no aspect-preserving pad).
- :class:`CubAugment` (CUB, 128x128): flip, pad 10, the ATR crop, zero-pad to a centred
  square, resize. In eval mode only the square pad and the resize.
- :class:`ResizeOnly`: resize only. Market and ATR in eval mode (``train=False``) are the same.

The ATR/CUB crop follows the reference loaders: on the padded size (W', H'),
``w ~ U{int(0.95 W'), ..., int(0.99 W')}``, ``left ~ U{0, ..., W' - w}``, then the right edge
is drawn on its own, ``right ~ U{w - left, ..., W'}`` (likewise ``h``, ``upper``, ``lower``),
so the crop covers ~85-100 % of each side with some aspect jitter.

Point clouds (the per-sample loading of OG-Net's public code; OG-Net: Zheng et al. 2021,
"Parameter-Efficient Person Re-identification in the 3D Space", arXiv:2006.04569): (N, 6) tensors
``[x, y, z, r, g, b]`` with rgb in [0, 1]. :class:`PointCloudAugment` applies, in the reference
order: centre xyz on all points; flip x (train, p = 0.5); blank (white) points get colour 0.5 and
a subset of points is chosen (random with p = 0.5 in training, evenly spaced otherwise), kept in
input order; per-axis scale U(0.75, 1.33) and Gaussian jitter sigma = 0.01 clipped to +-0.01
(train); rgb - 0.5. Rotation and erasing are off in every reference snapshot and are not
implemented. The default ``backend="numpy"`` does the per-point work in numpy on the chosen
points only (one gather, no per-point python) with the same random draws from the same
generator, and gives bit-identical outputs to ``backend="reference"`` (the torch version, kept
as :meth:`PointCloudAugment.call_reference`): torch's small indexing ops enter OpenMP parallel
regions, which cost milliseconds each when another process holds the second core.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


# ----------------------------------------------------------------------------------------
# random draws


def _randint(lo: int, hi: int, generator: torch.Generator | None) -> int:
    """Uniform integer in [lo, hi] (both inclusive)."""
    if hi < lo:
        raise ValueError(f"empty integer range [{lo}, {hi}]")
    return int(torch.randint(lo, hi + 1, (1,), generator=generator).item())


def _rand(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator).item())


# ----------------------------------------------------------------------------------------
# image + mask geometry


def _check_pair(image: np.ndarray, mask: np.ndarray | None) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        raise ValueError(f"image must be an (H, W, 3) uint8 array, got {shape} {getattr(image, 'dtype', type(image))}")
    if mask is not None:
        if not isinstance(mask, np.ndarray) or mask.dtype != bool or mask.ndim != 2:
            raise ValueError(f"mask must be an (H, W) bool array, got {getattr(mask, 'shape', None)} "
                             f"{getattr(mask, 'dtype', type(mask))}")
        if mask.shape != image.shape[:2]:
            raise ValueError(f"mask shape {mask.shape} does not match image shape {image.shape[:2]}")


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in size):
        raise ValueError(f"size must be (W, H) with positive ints, got {size!r}")
    return int(size[0]), int(size[1])


def resize_pair(
    image: np.ndarray, mask: np.ndarray | None, size: tuple[int, int], resample: str = "bicubic"
) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize image (``resample``) and mask (nearest) to ``size = (W, H)``."""
    w, h = _check_size(size)
    if resample not in _RESAMPLE:
        raise ValueError(f"resample must be one of {sorted(_RESAMPLE)}, got {resample!r}")
    if image.shape[1] == w and image.shape[0] == h:
        return image, mask
    out = np.asarray(Image.fromarray(image).resize((w, h), _RESAMPLE[resample]))
    if mask is not None:
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.Resampling.NEAREST)) > 127
    return out, mask


def pad_pair(
    image: np.ndarray, mask: np.ndarray | None, left: int, top: int, right: int, bottom: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Zero-pad (black image, background mask) by the given pixel counts."""
    if min(left, top, right, bottom) < 0:
        raise ValueError(f"padding must be >= 0, got {(left, top, right, bottom)}")
    image = np.pad(image, ((top, bottom), (left, right), (0, 0)))
    if mask is not None:
        mask = np.pad(mask, ((top, bottom), (left, right)))
    return image, mask


def crop_pair(
    image: np.ndarray, mask: np.ndarray | None, left: int, upper: int, right: int, lower: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Crop the box ``[left, right) x [upper, lower)`` (PIL box convention)."""
    h, w = image.shape[:2]
    if not (0 <= left < right <= w and 0 <= upper < lower <= h):
        raise ValueError(f"crop box {(left, upper, right, lower)} is outside the {w}x{h} image or empty")
    image = image[upper:lower, left:right]
    if mask is not None:
        mask = mask[upper:lower, left:right]
    return image, mask


def hflip_pair(image: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Mirror left-right."""
    return image[:, ::-1], (mask[:, ::-1] if mask is not None else None)


def pad_to_square(image: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Zero-pad the short side to a centred square (extra pixel of an odd difference at the end)."""
    h, w = image.shape[:2]
    side = max(h, w)
    dw, dh = side - w, side - h
    return pad_pair(image, mask, dw // 2, dh // 2, dw - dw // 2, dh - dh // 2)


def enlarged_bbox(
    bbox: tuple[float, float, float, float], width: int, height: int, margin: float = 0.1
) -> tuple[int, int, int, int]:
    """CUB preprocessing box: ``bbox = (x, y, w, h)`` enlarged by ``margin`` of its width /
    height on every side and clamped to the image.

    Returns:
        (left, upper, right, lower) integer box (floor of the start, ceil of the end).
    """
    x, y, bw, bh = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (x, y, bw, bh)) or bw <= 0 or bh <= 0:
        raise ValueError(f"bbox must be finite (x, y, w, h) with w, h > 0, got {bbox}")
    left = max(0, math.floor(x - margin * bw))
    upper = max(0, math.floor(y - margin * bh))
    right = min(width, math.ceil(x + bw + margin * bw))
    lower = min(height, math.ceil(y + bh + margin * bh))
    if not (left < right and upper < lower):
        raise ValueError(f"bbox {bbox} does not overlap the {width}x{height} image")
    return left, upper, right, lower


def reference_random_crop_box(
    width: int, height: int, generator: torch.Generator | None, lo: float = 0.95, hi: float = 0.99
) -> tuple[int, int, int, int]:
    """The ATR/CUB random crop box on a ``width x height`` image (see the module docstring).

    Returns:
        (left, upper, right, lower).
    """
    w = _randint(int(lo * width), int(hi * width), generator)
    h = _randint(int(lo * height), int(hi * height), generator)
    left = _randint(0, width - w, generator)
    upper = _randint(0, height - h, generator)
    right = _randint(w - left, width, generator)
    lower = _randint(h - upper, height, generator)
    return left, upper, right, lower


@dataclass
class AugResult:
    """Output of a reconstruction transform: (H, W, 3) uint8 image, (H, W) bool mask or None,
    and the random parameters drawn (for logging and tests)."""

    image: np.ndarray
    mask: np.ndarray | None
    params: dict = field(default_factory=dict)


class ReconTransform:
    """Base class: ``__call__(image, mask, generator) -> AugResult``.

    Args:
        size: output ``(W, H)``.
        train: apply the random parts; False keeps only the deterministic parts.
        resample: image resize filter (``bicubic`` | ``bilinear`` | ``nearest``); masks always
            use nearest.
    """

    def __init__(self, size: tuple[int, int] = (64, 128), train: bool = True, resample: str = "bicubic"):
        self.size = _check_size(size)
        if resample not in _RESAMPLE:
            raise ValueError(f"resample must be one of {sorted(_RESAMPLE)}, got {resample!r}")
        self.train = bool(train)
        self.resample = resample

    def __call__(
        self, image: np.ndarray, mask: np.ndarray | None = None, generator: torch.Generator | None = None
    ) -> AugResult:
        _check_pair(image, mask)
        out = self.apply(image, mask, generator)
        return AugResult(np.ascontiguousarray(out.image),
                         None if out.mask is None else np.ascontiguousarray(out.mask), out.params)

    def apply(self, image, mask, generator) -> AugResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, train={self.train}, resample={self.resample!r})"


class ResizeOnly(ReconTransform):
    """Resize to ``(W, H)``; no randomness."""

    def apply(self, image, mask, generator):
        image, mask = resize_pair(image, mask, self.size, self.resample)
        return AugResult(image, mask, {})


class MarketAugment(ReconTransform):
    """Market-HQ augmentation (CASL ``datasets/market.py``): resize to (W, H), pad ``pad`` px of
    black, random (W, H) crop at an offset in {0..2*pad}^2, horizontal flip with ``flip_p``.
    ``train=False``: resize only.

    params: ``offset = (dx, dy)``, ``flipped``.
    """

    def __init__(self, size=(64, 128), train=True, resample="bicubic", pad: int = 10, flip_p: float = 0.5):
        super().__init__(size, train, resample)
        if pad < 0 or not 0.0 <= flip_p <= 1.0:
            raise ValueError(f"pad must be >= 0 and flip_p in [0, 1], got pad={pad}, flip_p={flip_p}")
        self.pad, self.flip_p = int(pad), float(flip_p)

    def apply(self, image, mask, generator):
        image, mask = resize_pair(image, mask, self.size, self.resample)
        if not self.train:
            return AugResult(image, mask, {})
        p = self.pad
        image, mask = pad_pair(image, mask, p, p, p, p)
        dx, dy = _randint(0, 2 * p, generator), _randint(0, 2 * p, generator)
        w, h = self.size
        image, mask = crop_pair(image, mask, dx, dy, dx + w, dy + h)
        flipped = _rand(generator) < self.flip_p
        if flipped:
            image, mask = hflip_pair(image, mask)
        return AugResult(image, mask, {"offset": (dx, dy), "flipped": flipped})


class AtrAugment(ReconTransform):
    """ATR augmentation (CASL ``datasets/atr2.py``): flip with ``flip_p``, pad ``pad`` px, the
    reference random crop, direct resize to (W, H). ``train=False``: resize only.

    params: ``flipped``, ``crop = (left, upper, right, lower)`` on the padded image.
    """

    def __init__(self, size=(96, 160), train=True, resample="bicubic", pad: int = 10, flip_p: float = 0.5):
        super().__init__(size, train, resample)
        if pad < 0 or not 0.0 <= flip_p <= 1.0:
            raise ValueError(f"pad must be >= 0 and flip_p in [0, 1], got pad={pad}, flip_p={flip_p}")
        self.pad, self.flip_p = int(pad), float(flip_p)

    def _random_part(self, image, mask, generator):
        flipped = _rand(generator) < self.flip_p
        if flipped:
            image, mask = hflip_pair(image, mask)
        p = self.pad
        image, mask = pad_pair(image, mask, p, p, p, p)
        box = reference_random_crop_box(image.shape[1], image.shape[0], generator)
        image, mask = crop_pair(image, mask, *box)
        return image, mask, {"flipped": flipped, "crop": box}

    def apply(self, image, mask, generator):
        params = {}
        if self.train:
            image, mask, params = self._random_part(image, mask, generator)
        image, mask = resize_pair(image, mask, self.size, self.resample)
        return AugResult(image, mask, params)


class CubAugment(AtrAugment):
    """CUB augmentation (CASL ``datasets/bird.py``): the ATR flip / pad / crop (train only),
    then zero-pad to a centred square and resize to (W, H) (always)."""

    def __init__(self, size=(128, 128), train=True, resample="bicubic", pad: int = 10, flip_p: float = 0.5):
        super().__init__(size, train, resample, pad, flip_p)

    def apply(self, image, mask, generator):
        params = {}
        if self.train:
            image, mask, params = self._random_part(image, mask, generator)
        image, mask = pad_to_square(image, mask)
        image, mask = resize_pair(image, mask, self.size, self.resample)
        return AugResult(image, mask, params)


RECON_TRANSFORMS = {"market": MarketAugment, "atr": AtrAugment, "cub": CubAugment}


def build_recon_transform(
    aug: str | None, size: tuple[int, int], train: bool = True, resample: str = "bicubic"
) -> ReconTransform:
    """``aug`` in {"market", "atr", "cub"} or None (resize only)."""
    if aug is None:
        return ResizeOnly(size, train=False, resample=resample)
    if aug not in RECON_TRANSFORMS:
        raise ValueError(f"aug must be one of {sorted(RECON_TRANSFORMS)} or None, got {aug!r}")
    return RECON_TRANSFORMS[aug](size, train=train, resample=resample)


def to_four_channel(image: np.ndarray, mask: np.ndarray, bg: bool = True) -> torch.Tensor:
    """Stack RGB in [0, 1] and the binary mask.

    Args:
        image: (H, W, 3) uint8.
        mask: (H, W) bool.
        bg: keep the real background; False sets background RGB to 1 (white), as the
            reference loaders do without ``--bg``.

    Returns:
        (4, H, W) float32: RGB then mask in {0, 1}.
    """
    _check_pair(image, mask)
    if mask is None:
        raise ValueError("mask must not be None")
    rgb = torch.tensor(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    m = torch.tensor(np.ascontiguousarray(mask)).float().unsqueeze(0)
    if not bg:
        rgb = rgb * m + (1.0 - m)
    return torch.cat([rgb, m], dim=0)


def to_rgb_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1]."""
    _check_pair(image, None)
    return torch.tensor(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


# ----------------------------------------------------------------------------------------
# point clouds


def check_points(points: torch.Tensor, name: str = "points") -> torch.Tensor:
    """Validate an (N, 6) xyz+rgb cloud; returns it as a floating tensor.

    Raises:
        ValueError: wrong shape, N = 0, non-numeric dtype or a NaN / inf value (naming ``name``).
    """
    if isinstance(points, np.ndarray):
        points = torch.from_numpy(points)
    if not isinstance(points, torch.Tensor):
        raise ValueError(f"{name}: points must be a tensor or array, got {type(points).__name__}")
    if points.ndim != 2 or points.shape[1] != 6 or points.shape[0] == 0:
        raise ValueError(f"{name}: points must have shape (N, 6) with N > 0 (xyz + rgb), got {tuple(points.shape)}")
    if not points.is_floating_point():
        points = points.float()
    if not torch.isfinite(points).all():
        bad = int((~torch.isfinite(points)).any(dim=1).sum())
        raise ValueError(f"{name}: {bad} point(s) contain NaN or inf")
    return points


def center_xyz(points: torch.Tensor) -> torch.Tensor:
    """Subtract the mean xyz over all points. points: (N, 6) -> (N, 6)."""
    out = points.clone()
    out[:, :3] -= out[:, :3].mean(dim=0, keepdim=True)
    return out


def flip_x(points: torch.Tensor) -> torch.Tensor:
    """x -> -x; colours unchanged. points: (N, 6) -> (N, 6)."""
    out = points.clone()
    out[:, 0] = -out[:, 0]
    return out


def blank_mask(points: torch.Tensor, tol: float = 1e-5) -> torch.Tensor:
    """(N,) bool: points whose mean rgb is within ``tol`` of 1.0 (pure white, "blank")."""
    return (points[:, 3:6].mean(dim=1) - 1.0).abs() <= tol


def blank_mask_np(points: np.ndarray, tol: float = 1e-5) -> np.ndarray:
    """:func:`blank_mask` of an (N, 6) float32 / float64 numpy array, bit-for-bit: torch's mean
    over the 3 colours is ``(r + g) + b`` then a true division by 3 in the array's dtype, and
    the comparison is against ``tol`` in that dtype. Returns (N,) bool."""
    dt = points.dtype.type
    mean = np.add(np.add(points[:, 3], points[:, 4]), points[:, 5]) / dt(3)
    mean -= dt(1.0)
    return np.abs(mean, out=mean) <= dt(tol)


def _even(n: int, k: int, device) -> torch.Tensor:
    """k evenly spaced indices in [0, n-1], as ``int(linspace(0, n-1, k))``."""
    return torch.linspace(0, n - 1, k, dtype=torch.float64, device=device).long()


@functools.lru_cache(maxsize=1024)
def _even_np(n: int, k: int) -> np.ndarray:
    """:func:`_even` as a read-only (k,) int64 numpy array, cached per ``(n, k)`` (computed by
    torch's ``linspace`` itself: its rounding, which numpy's ``linspace`` does not share, decides
    the truncated indices)."""
    out = _even(n, k, "cpu").numpy()
    out.flags.writeable = False
    return out


def select_points(
    points: torch.Tensor,
    num: int,
    random_subset: bool = False,
    generator: torch.Generator | None = None,
    short: str = "error",
    name: str = "points",
    blank: torch.Tensor | None = None,
) -> torch.Tensor:
    """Indices of ``num`` points, sorted (input order kept), as the reference loader chooses:

    - at least ``num`` non-blank points: a random subset of them (``random_subset``), else
      ``num`` evenly spaced ones. (The reference's random draw never picks the last non-blank
      point, an off-by-one we do not copy.)
    - fewer non-blank points: all of them plus evenly spaced blank points.
    - fewer than ``num`` points in all: ``short="error"`` raises ValueError naming ``name``;
      ``short="repeat"`` takes every point and repeats points in order (index ``i % N``).

    ``blank`` is the (N,) bool blank flag per point; default :func:`blank_mask` of ``points``
    (pass it explicitly once blank colours have been reset).

    Returns:
        (num,) long tensor.
    """
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    if short not in ("error", "repeat"):
        raise ValueError(f"short must be 'error' or 'repeat', got {short!r}")
    n = points.shape[0]
    device = points.device
    if n < num:
        if short == "error":
            raise ValueError(f"{name}: has {n} points, fewer than the {num} required "
                             "(use short='repeat' to pad by repetition)")
        return torch.sort(torch.arange(num, device=device) % n).values
    if blank is None:
        blank = blank_mask(points)
    elif blank.shape != (n,) or blank.dtype != torch.bool:
        raise ValueError(f"{name}: blank must be a ({n},) bool tensor, got {tuple(blank.shape)} {blank.dtype}")
    keep = torch.nonzero(~blank).flatten()
    if keep.numel() >= num:
        if random_subset:
            perm = torch.randperm(keep.numel(), generator=generator)[:num].to(device)
            chosen = keep[perm]
        else:
            chosen = keep[_even(keep.numel(), num, device)]
    else:
        blanks = torch.nonzero(blank).flatten()
        chosen = torch.cat([keep, blanks[_even(blanks.numel(), num - keep.numel(), device)]])
    return torch.sort(chosen).values


def scale_and_jitter(
    points: torch.Tensor,
    generator: torch.Generator | None = None,
    scale_range: tuple[float, float] = (0.75, 1.33),
    sigma: float = 0.01,
    clip: float = 0.01,
) -> torch.Tensor:
    """Multiply each axis by its own U(scale_range) factor, then add N(0, sigma) noise clipped to
    +-clip to xyz. points: (N, 6) -> (N, 6)."""
    lo, hi = scale_range
    scale = lo + (hi - lo) * torch.rand(3, generator=generator, dtype=torch.float64)
    noise = (torch.randn(points.shape[0], 3, generator=generator, dtype=torch.float64) * sigma).clamp_(-clip, clip)
    out = points.clone()
    out[:, :3] = out[:, :3] * scale.to(points) + noise.to(points)
    return out


def _point_array(points) -> np.ndarray | None:
    """The (N, 6) cloud as a numpy float32 / float64 array, as :func:`check_points` converts it
    (non-floating -> float32), without copying float arrays; None when only the reference path
    handles it (other floating dtypes, non-CPU tensors, non-array inputs, wrong shapes: the
    reference then raises or computes)."""
    if isinstance(points, torch.Tensor):
        if points.device.type != "cpu":
            return None
        if not points.is_floating_point():
            if points.is_complex():
                return None
            points = points.float()
        if points.dtype not in (torch.float32, torch.float64):
            return None
        a = points.detach().numpy()
    elif isinstance(points, np.ndarray):
        a = points
        if a.dtype.kind in "iub":
            a = a.astype(np.float32)
        elif a.dtype not in (np.float32, np.float64) or not a.dtype.isnative:
            return None
    else:
        return None
    if a.ndim != 2 or a.shape[1] != 6 or a.shape[0] == 0:
        return None
    return a


class PointCloudAugment:
    """OG-Net per-sample loading (its public code's point-cloud dataset), in order.

    Args:
        train: random flip, random subset and scale + jitter; False: deterministic.
        num_points: points per output cloud; None = ``round(N * slim)`` (the reference).
        slim: fraction of points kept when ``num_points`` is None.
        flip_p, subset_p: probabilities of the x flip and of a random (not evenly spaced) subset.
        scale_range, sigma, clip: per-axis scale and jitter parameters.
        short: what to do with clouds having fewer than ``num_points`` points (see
            :func:`select_points`).
        backend: ``"numpy"`` (default): the per-point work in numpy on the chosen points only;
            ``"reference"``: the previous torch implementation (:meth:`call_reference`). Both
            draw the same numbers from the generator in the same order and return bit-identical
            clouds.

    ``__call__(points (N, 6), generator, name) -> (R, 6)`` float tensor, xyz centred,
    rgb in [-0.5, 0.5] with blank points at 0.
    """

    def __init__(
        self,
        train: bool = True,
        num_points: int | None = None,
        slim: float = 0.5,
        flip_p: float = 0.5,
        subset_p: float = 0.5,
        scale_range: tuple[float, float] = (0.75, 1.33),
        sigma: float = 0.01,
        clip: float = 0.01,
        short: str = "error",
        backend: str = "numpy",
    ):
        if num_points is not None and num_points < 1:
            raise ValueError(f"num_points must be >= 1 or None, got {num_points}")
        if not 0.0 < slim <= 1.0:
            raise ValueError(f"slim must be in (0, 1], got {slim}")
        if short not in ("error", "repeat"):
            raise ValueError(f"short must be 'error' or 'repeat', got {short!r}")
        if backend not in ("numpy", "reference"):
            raise ValueError(f"backend must be 'numpy' or 'reference', got {backend!r}")
        self.train, self.num_points, self.slim = bool(train), num_points, float(slim)
        self.flip_p, self.subset_p = float(flip_p), float(subset_p)
        self.scale_range, self.sigma, self.clip, self.short = scale_range, float(sigma), float(clip), short
        self.backend = backend

    def __call__(
        self, points: torch.Tensor, generator: torch.Generator | None = None, name: str = "points"
    ) -> torch.Tensor:
        if self.backend == "numpy":
            a = _point_array(points)
            if a is not None:
                return self._call_numpy(a, generator, name)
        return self.call_reference(points, generator, name)

    def call_reference(
        self, points: torch.Tensor, generator: torch.Generator | None = None, name: str = "points"
    ) -> torch.Tensor:
        """The previous (torch) implementation, kept as the reference of the numpy path."""
        points = check_points(points, name)
        points = center_xyz(points)
        if self.train and _rand(generator) < self.flip_p:
            points = flip_x(points)
        blank = blank_mask(points)
        points[blank, 3:6] = 0.5
        num = self.num_points if self.num_points is not None else max(1, round(points.shape[0] * self.slim))
        random_subset = self.train and _rand(generator) < self.subset_p
        idx = select_points(points, num, random_subset, generator, self.short, name, blank=blank)
        points = points[idx]
        if self.train:
            points = scale_and_jitter(points, generator, self.scale_range, self.sigma, self.clip)
        points[:, 3:6] -= 0.5
        return points

    def _call_numpy(self, a: np.ndarray, generator: torch.Generator | None, name: str) -> torch.Tensor:
        """:meth:`call_reference` on a validated-shape (N, 6) float32/float64 array ``a``.

        Same draws in the same order (flip, subset, randperm, scale, jitter), same arithmetic
        per element, on the chosen points only (centre, flip, scale and jitter commute with the
        gather); the xyz mean still by torch on the same tensor layout, so that its summation
        order is the reference's; the blank test by :func:`blank_mask_np`. No torch indexing
        (each enters an OpenMP parallel region).
        """
        if not np.isfinite(a).all():
            check_points(torch.from_numpy(np.ascontiguousarray(a)), name)  # raises, naming the sample
        t = torch.from_numpy(a)
        if not t.is_contiguous():  # the reference's clone (center_xyz) keeps dense strides
            t = t.clone()
        mean = t[:, :3].mean(dim=0).numpy()  # (3,)
        flip = self.train and _rand(generator) < self.flip_p
        blank = blank_mask_np(a)  # rgb only: centring and flip do not change it
        n = a.shape[0]
        num = self.num_points if self.num_points is not None else max(1, round(n * self.slim))
        random_subset = self.train and _rand(generator) < self.subset_p
        if n < num:
            if self.short == "error":
                raise ValueError(f"{name}: has {n} points, fewer than the {num} required "
                                 "(use short='repeat' to pad by repetition)")
            idx = np.sort(np.arange(num) % n)
        else:
            keep = np.flatnonzero(~blank)
            if keep.size >= num:
                if random_subset:
                    chosen = keep[torch.randperm(keep.size, generator=generator)[:num].numpy()]
                else:
                    chosen = keep[_even_np(keep.size, num)]
            else:
                blanks = np.flatnonzero(blank)
                chosen = np.concatenate([keep, blanks[_even_np(blanks.size, num - keep.size)]])
            idx = np.sort(chosen)
        xyz = np.take(a[:, :3].T, idx, axis=1)  # (3, num) contiguous: long inner loops below
        xyz -= mean[:, None]
        if flip:
            np.negative(xyz[0], out=xyz[0])
        if self.train:
            lo, hi = self.scale_range
            scale = lo + (hi - lo) * torch.rand(3, generator=generator, dtype=torch.float64).numpy()
            noise = torch.randn(num, 3, generator=generator, dtype=torch.float64).numpy() * self.sigma
            np.clip(noise, -self.clip, self.clip, out=noise)
            xyz *= scale.astype(a.dtype)[:, None]
            xyz += noise.astype(a.dtype).T
        rgb = a[idx, 3:6]  # (num, 3), a copy
        rgb -= a.dtype.type(0.5)
        rgb[blank[idx]] = 0.0
        return torch.from_numpy(np.concatenate([xyz.T, rgb], axis=1))
