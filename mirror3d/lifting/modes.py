"""Lifting modes: one image (+ mask) → one coloured point cloud (M, 6) [x, y, z, r, g, b].

Modes (the OG-Net paper's Table I inputs):

- ``flat``: every pixel as (x, y, 0) (:func:`mirror3d.lifting.flat.lift_flat`); no mask needed.
- ``casl-visible``: the visible, coloured part of the reconstructed mesh
  (:func:`mirror3d.lifting.visible.lift_visible`); needs a mask and a reconstructor.
- ``casl-visible+bg``: as above plus the background pixels at the body's mean depth.

The ``casl-*`` modes take any reconstructor (:mod:`mirror3d.lifting.reconstructors`): CASL's
prediction (the method), or ``synth-truth``, SynthPeople's true mesh and camera of each image —
an oracle that needs ground truth, an upper bound for what the mode gives when the mesh is
right, not a method. Such a reconstructor finds the image by its file (``needs_path``), which
:func:`lift_image` passes as ``path``.

Point counts (``LiftParams``): ``num_points`` N is the density, the number of points per sample.

- ``flat`` lifts H·W pixels.
- ``casl-visible`` draws ⌈N·oversample⌉ surface samples (about half of a closed surface faces
  the camera, so oversample 2 yields ≈ N visible points).
- ``casl-visible+bg`` matches the body's density to the pixels': it draws
  ⌈(foreground pixels)·oversample⌉ surface samples (≈ one visible point per foreground pixel),
  adds every background pixel, and the cap to N then thins body and background alike.

A cloud with more than N points is subsampled to N (uniform, without replacement, the kept
points in their original order). A cloud with fewer than ``min_points`` points (OG-Net needs at
least its first FPS level) is padded by repetition (``short="pad"``: points 0, 1, …, M−1, 0, 1, …
up to ``min_points``) or rejected (``short="reject"``: :class:`TooFewPoints`). Every random draw
comes from ``seed`` — :func:`seed_for_key` derives it from the image path — so a sample lifts
to the same points on any worker and in any order.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from mirror3d.data.masks import binary_mask_array
from mirror3d.lifting.flat import lift_flat
from mirror3d.lifting.visible import Reconstructor, check_image_mask, lift_visible
from mirror3d.utils.errors import UserError

__all__ = [
    "LIFT_MODES",
    "MODES_NEEDING_MASK",
    "LiftParams",
    "LiftResult",
    "MissingMask",
    "TooFewPoints",
    "seed_for_key",
    "cap_points",
    "pad_points",
    "lift_image",
]

LIFT_MODES = ("flat", "casl-visible", "casl-visible+bg")
#: Modes that need a foreground mask and a reconstructor.
MODES_NEEDING_MASK = frozenset({"casl-visible", "casl-visible+bg"})


class MissingMask(UserError, ValueError):
    """A mode that needs a foreground mask was given none."""


class TooFewPoints(UserError, ValueError):
    """A lifted cloud has fewer than ``min_points`` points and the policy is to reject it (or it
    has no point at all)."""


@dataclass(frozen=True)
class LiftParams:
    """How many points, and how the visible part is tested.

    Attributes:
        num_points: N, points per sample (larger clouds are subsampled to N).
        min_points: fewer points than this → pad or reject (OG-Net: its first FPS level, 768).
        short: "pad" (repeat points) or "reject" (:class:`TooFewPoints`).
        oversample: surface samples drawn per wanted visible point.
        depth_tol: visibility tolerance in view depth (object units).
        height: world units spanned by the image height in ``flat`` mode.
        frame: ``casl-*`` modes: coordinates in the mesh's ``"object"`` frame, or in the
            predicted ``"camera"``'s frame (x right, y up, looking along −z; see
            :func:`mirror3d.lifting.visible.lift_visible`).
    """

    num_points: int = 8192
    min_points: int = 768
    short: Literal["pad", "reject"] = "pad"
    oversample: float = 2.0
    depth_tol: float = 0.02
    height: float = 1.8
    frame: Literal["object", "camera"] = "object"

    def __post_init__(self) -> None:
        if not isinstance(self.num_points, int) or self.num_points < 1:
            raise ValueError(f"num_points: expected an int >= 1, got {self.num_points!r}")
        if not isinstance(self.min_points, int) or not 0 <= self.min_points <= self.num_points:
            raise ValueError(f"min_points: expected an int in [0, num_points={self.num_points}], "
                             f"got {self.min_points!r}")
        if self.short not in ("pad", "reject"):
            raise ValueError(f"short: expected 'pad' or 'reject', got {self.short!r}")
        if not (math.isfinite(self.oversample) and self.oversample > 0):
            raise ValueError(f"oversample: expected a finite value > 0, got {self.oversample!r}")
        if not (math.isfinite(self.depth_tol) and self.depth_tol >= 0):
            raise ValueError(f"depth_tol: expected a finite value >= 0, got {self.depth_tol!r}")
        if not (math.isfinite(self.height) and self.height > 0):
            raise ValueError(f"height: expected a finite value > 0, got {self.height!r}")
        if self.frame not in ("object", "camera"):
            raise ValueError(f"frame: expected 'object' or 'camera', got {self.frame!r}")


@dataclass
class LiftResult:
    """A lifted sample.

    Attributes:
        points: (M, 6) float32 [x, y, z, r, g, b].
        num_lifted: points the mode produced, before subsampling and padding.
        padded: the cloud was padded by repetition to ``min_points``.
    """

    points: np.ndarray
    num_lifted: int
    padded: bool


def seed_for_key(key: str, base_seed: int = 0) -> int:
    """A stable 63-bit seed from a string (e.g. the image path relative to the dataset root)
    and a base seed; the same on every machine and Python process (no ``hash()``)."""
    digest = hashlib.sha256(f"{int(base_seed)}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def cap_points(points: np.ndarray, num_points: int, seed: int) -> np.ndarray:
    """points: (M, C) → at most ``num_points`` rows, a uniform random subset in original order."""
    if points.shape[0] <= num_points:
        return points
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(points.shape[0], size=num_points, replace=False))
    return points[idx]


def pad_points(points: np.ndarray, min_points: int) -> np.ndarray:
    """points: (M, C), M ≥ 1 → (max(M, min_points), C) by cyclic repetition of the rows."""
    m = points.shape[0]
    if m == 0:
        raise TooFewPoints("cannot pad a cloud with no point")
    if m >= min_points:
        return points
    return points[np.arange(min_points) % m]


def lift_image(
    image: np.ndarray,
    mask: np.ndarray | None,
    mode: str,
    reconstructor: Reconstructor | None = None,
    params: LiftParams = LiftParams(),
    seed: int = 0,
    path: str | None = None,
) -> LiftResult:
    """Lift one image with ``mode`` (see the module docstring).

    Args:
        image: (H, W, 3) uint8.
        mask: (H, W) foreground: bool, or values all 0/1 or all 0/255
            (:func:`mirror3d.data.masks.binary_mask_array`); or None (only ``flat`` accepts
            None). It must have the image's size (never resized here).
        mode: one of :data:`LIFT_MODES`.
        reconstructor: required by the ``casl-*`` modes (built once, reused for many images).
        params: :class:`LiftParams`.
        seed: seed of every random draw for this image (see :func:`seed_for_key`).
        path: the image's file, passed to a reconstructor that looks images up by file
            (``reconstructor.needs_path``, e.g. ``synth-truth``); others never see it.
    Returns:
        :class:`LiftResult` with N_out = min(M, num_points), or min_points when padded.
    Raises:
        MissingMask: a ``casl-*`` mode without a mask.
        TooFewPoints: fewer than ``min_points`` with ``short="reject"``, or no point at all.
        ValueError: bad inputs; a reconstructor's own errors (``synth-truth``: an image without
            ground truth).
    """
    if mode not in LIFT_MODES:
        raise ValueError(f"mode: expected one of {LIFT_MODES}, got {mode!r}")
    if mask is not None:
        mask = binary_mask_array(mask, "mask")
    if mode == "flat":
        rgb, m = check_image_mask(image, mask, mask_required=False)
        pts = lift_flat(rgb, height=params.height)
    else:
        if mask is None:
            raise MissingMask(f"mask: mode {mode!r} needs a foreground mask, got None")
        if reconstructor is None:
            raise ValueError(f"reconstructor: mode {mode!r} needs a reconstructor, got None")
        _, m = check_image_mask(image, mask, mask_required=True)
        if not m.any():
            raise TooFewPoints("mask: empty (no foreground pixel), nothing to lift")
        if mode == "casl-visible":
            wanted = params.num_points
        else:  # pixel density, like the background; the cap to num_points comes after
            wanted = float(m.sum())
        num_samples = max(1, math.ceil(wanted * params.oversample))
        if getattr(reconstructor, "needs_path", False):
            recon = reconstructor.reconstruct(np.asarray(image), m, path=path)
        else:
            recon = reconstructor.reconstruct(np.asarray(image), m)
        gen = torch.Generator(device=recon.vertices.device).manual_seed(seed)
        try:
            pts = lift_visible(image, m, recon, num_samples, gen, params.depth_tol,
                               background=mode == "casl-visible+bg", frame=params.frame)
        except ValueError as err:
            if "no visible body point" in str(err):
                raise TooFewPoints(str(err)) from None
            raise
    num_lifted = int(pts.shape[0])
    if num_lifted == 0:
        raise TooFewPoints(f"mode {mode!r} lifted no point")
    pts = cap_points(pts, params.num_points, seed + 1)
    padded = False
    if pts.shape[0] < params.min_points:
        if params.short == "reject":
            raise TooFewPoints(f"{pts.shape[0]} points, fewer than min_points={params.min_points}")
        pts = pad_points(pts, params.min_points)
        padded = True
    return LiftResult(np.ascontiguousarray(pts, dtype=np.float32), num_lifted, padded)
