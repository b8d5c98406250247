"""Inference with a trained CASL model (Zheng et al. 2022, "3D Magic Mirror"):
``load_casl(path).reconstruct(image, mask)``, optionally with test-time refinement
(``refine_steps=N``, :mod:`mirror3d.models.casl.refine`; beyond the papers).

Separate from training (docs/architecture.md): the lifting pipeline and the Serve demo load a
model with one call and reconstruct single images. The model is rebuilt from the config saved in
its checkpoint (the ``net`` section, ``data.image_size``, ``data.bg``, ``ellipsoid``, ``sigma``),
so nothing here imports the trainer.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from mirror3d.data.images import to_rgb
from mirror3d.data.masks import binary_mask_array
from mirror3d.models.casl.losses import CaslLossConfig
from mirror3d.models.casl.networks import CaslAttributes
from mirror3d.models.casl.refine import RefineHistory, refine_attributes
from mirror3d.models.casl.step import build_casl_model
from mirror3d.render.camera import Camera, look_at_camera
from mirror3d.render.mesh_io import export_mesh
from mirror3d.utils.checkpoint import load_model_checkpoint
from mirror3d.utils.config import config_from_dict, config_to_dict
from mirror3d.utils.errors import UserError

__all__ = ["load_casl", "CaslPredictor", "Reconstruction", "CameraParams", "MaskError",
           "FLOAT_RANGES"]


class MaskError(UserError, ValueError):
    """A mask that is readable but unusable as a silhouette: empty, covering the whole image, or
    with no foreground pixel left at the model's input size. Callers that lift many images
    (the lifting job) count such an image as bad input; any other ``ValueError`` is a bug or a
    wrong argument and stops them."""


@dataclass
class CameraParams:
    """The predicted camera of one image."""

    azimuth: float
    elevation: float
    distance: float
    bias: tuple[float, float]


@dataclass
class Reconstruction:
    """One image's reconstruction.

    Attributes:
        vertices: (V, 3) object-frame vertices (template + δ).
        faces: (F, 3) int64.  face_uvs: (F, 3, 2).
        texture: (3, 2H, W) texture map in [0, 1].
        light: (9,) SH coefficients.
        camera: the predicted :class:`CameraParams`; :attr:`render_camera` as a render Camera.
        image_size: (W, H) of the input the model saw.
        refinement: the :class:`~mirror3d.models.casl.refine.RefineHistory` when the attributes
            were refined at test time, else None.
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    face_uvs: torch.Tensor
    texture: torch.Tensor
    light: torch.Tensor
    camera: CameraParams
    image_size: tuple[int, int]
    refinement: RefineHistory | None = None
    _model: object = None

    @property
    def render_camera(self) -> Camera:
        c = self.camera
        return look_at_camera(torch.tensor([c.azimuth]), torch.tensor([c.elevation]),
                              torch.tensor([c.distance]), torch.tensor([list(c.bias)]))

    @torch.no_grad()
    def render(self, azimuth: float | None = None, elevation: float | None = None,
               distance: float | None = None, light: torch.Tensor | None = None) -> np.ndarray:
        """Render on white from the predicted camera with any of its parameters replaced.

        Returns an H×W×3 uint8 image.
        """
        c = self.camera
        cam = look_at_camera(torch.tensor([c.azimuth if azimuth is None else azimuth]),
                             torch.tensor([c.elevation if elevation is None else elevation]),
                             torch.tensor([c.distance if distance is None else distance]),
                             torch.tensor([list(c.bias)]))
        renderer = self._model.renderer
        out = renderer.render(self.vertices[None], self.faces, self.face_uvs, self.texture[None],
                              cam, (self.light if light is None else light)[None])
        return (out.rgb[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)

    def export(self, path: str | os.PathLike) -> pathlib.Path:
        """Write the textured mesh: ``.obj`` (+ .mtl + .png) or ``.glb`` by suffix."""
        return export_mesh(path, self.vertices, self.faces, self.face_uvs, self.texture)


#: The value ranges a float image may be declared in (``float_range`` of
#: :meth:`CaslPredictor.prepare`): its largest value, white.
FLOAT_RANGES = {"0..1": 1.0, "0..255": 255.0}


def _to_image_array(image, name: str = "image", float_range: str = "0..1") -> np.ndarray:
    """An H×W×3 uint8 array from the accepted image forms (see :meth:`CaslPredictor.prepare`).

    Raises:
        ValueError: naming ``name`` and what was expected.
    """
    if float_range not in FLOAT_RANGES:
        raise ValueError(f"float_range: expected one of {sorted(FLOAT_RANGES)}, got "
                         f"{float_range!r}")
    if isinstance(image, Image.Image):
        image = to_rgb(image, name)  # the one image decoder's conversion of every Pillow mode
    elif isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.dim() == 3 and t.shape[0] == 3 and t.shape[2] != 3:
            t = t.permute(1, 2, 0)
        image = t.numpy()
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        kind = ("a 2-D (gray) array" if arr.ndim == 2 else
                f"{arr.shape[2]} channels" if arr.ndim == 3 else f"{arr.ndim} dimensions")
        raise ValueError(f"{name}: expected an H×W×3 RGB image (or a 3×H×W tensor, or a PIL "
                         f"image), got shape {arr.shape} ({kind})")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name}: expected a non-empty image, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name}: expected uint8 values (0..255) or floats in [0, 1], got "
                         f"dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: expected finite values, got {int((~np.isfinite(arr)).sum())} "
                         f"NaN/inf value(s)")
    top = FLOAT_RANGES[float_range]
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 or hi > top:
        hint = (" (0..255 floats? pass float_range='0..255', divide by 255 or pass uint8)"
                if top == 1.0 and hi <= 255.0 else "")
        raise ValueError(f"{name}: expected float values in [0, {top:g}] (float_range="
                         f"{float_range!r}), got values in [{lo:g}, {hi:g}]{hint}")
    return (arr.astype(np.float64) * (255.0 / top)).round().astype(np.uint8)


def _to_mask_array(mask, shape: tuple[int, int], name: str = "mask") -> np.ndarray:
    """An H×W bool foreground from the accepted mask forms (see :meth:`CaslPredictor.prepare`):
    bool, or values all in {0, 1} or all in {0, 255} (any integer or float dtype).

    Raises:
        ValueError: naming ``name`` and what was expected.
    """
    if isinstance(mask, Image.Image):
        if mask.mode not in ("1", "L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N"):
            raise ValueError(f"{name}: expected a one-channel PIL mask (mode 1, L, P or I), got "
                             f"mode {mask.mode!r}")
        mask = np.asarray(mask)
    elif isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[2] == 1:
        m = m[..., 0]
    if m.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)} like the image (H, W), got "
                         f"{m.shape}")
    fg = binary_mask_array(m, name)  # a 0/1 mask is a mask, not "all background"
    if not fg.any():
        raise MaskError(f"{name}: empty (no foreground pixel); expected a person's silhouette")
    if fg.all():
        raise MaskError(f"{name}: covers the whole image (no background pixel); expected a "
                         f"person's silhouette")
    return fg


class CaslPredictor:
    """A trained CASL model ready for single images (eval mode, no gradients).

    Args:
        model: the :class:`~mirror3d.models.casl.model.CaslModel`.
        config: its training config as the plain dict a checkpoint holds (``state["config"]``);
            a config object (``CaslTrainConfig``) is turned into that dict. :attr:`config` is
            the dict; ``data.bg`` says whether inputs keep their background.
        refine_steps: default test-time refinement steps of :meth:`reconstruct` (0: the
            network's prediction as it is; :mod:`mirror3d.models.casl.refine`).
        refine_lr: base learning rate of the refinement.
    """

    def __init__(self, model, config: Mapping[str, Any] | Any, refine_steps: int = 0,
                 refine_lr: float = 0.01) -> None:
        self.model = model.eval()
        if dataclasses.is_dataclass(config) and not isinstance(config, type):
            config = config_to_dict(config)
        self.config: dict[str, Any] = dict(config)
        self.refine_steps = _check_steps(refine_steps)
        self.refine_lr = float(refine_lr)

    @property
    def keeps_background(self) -> bool:
        """Whether the model was trained on real backgrounds (``data.bg``; else on white)."""
        return bool((self.config.get("data") or {}).get("bg", True))

    @property
    def image_size(self) -> tuple[int, int]:
        return self.model.image_size

    @property
    def loss_config(self) -> CaslLossConfig:
        """The loss weights the model was trained with (the checkpoint's ``loss`` section; keys
        this version does not know are ignored, missing ones take the defaults)."""
        known = {f.name for f in dataclasses.fields(CaslLossConfig)}
        saved = self.config.get("loss") or {}
        return config_from_dict(CaslLossConfig, {k: v for k, v in saved.items() if k in known})

    def prepare(self, image, mask, float_range: str = "0..1") -> torch.Tensor:
        """Image + mask → the (1, 4, h, w) input at the model's size (bicubic RGB, nearest mask).

        Accepted images: an H×W×3 array of uint8 (0..255) or of finite floats in [0, 1] — or in
        [0, 255] when declared with ``float_range="0..255"`` (never clamped: values outside the
        range are refused) —, a torch tensor of the same (H×W×3 or 3×H×W), or a PIL image of any
        mode (converted to RGB by the one image decoder, :func:`mirror3d.data.images.to_rgb`:
        gray replicated, alpha composited on white, 16-bit scaled; float ``F`` refused; the
        image is taken as given, no EXIF rotation). Gray (H×W) or 4-channel arrays are refused.
        Accepted masks: H×W (or H×W×1) of bool, or of numbers (integer or float) that are all
        0/1 or all 0/255, or a one-channel PIL image (modes 1, L, P, I) of such values; at
        least one foreground and one background pixel. Soft or other-valued masks are refused
        (threshold them first).

        Raises:
            ValueError: naming ``image``, ``mask`` or ``float_range`` and what was expected
                (:class:`MaskError` for an empty or full mask).
        """
        img = _to_image_array(image, "image", float_range)
        m = _to_mask_array(mask, img.shape[:2])
        w, h = self.model.image_size
        rgb = np.asarray(Image.fromarray(img).resize((w, h), Image.BICUBIC), np.float32) / 255.0
        mm = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((w, h), Image.NEAREST)) > 127
        if not mm.any():
            raise MaskError(f"mask: no foreground pixel left at the model's size {w}x{h} "
                             f"({int(m.sum())} of {m.size} pixels in the input); expected a "
                             f"larger silhouette")
        if not self.keeps_background:
            rgb = np.where(mm[..., None], rgb, 1.0)
        x = np.concatenate([rgb.transpose(2, 0, 1), mm[None].astype(np.float32)], 0)
        return torch.from_numpy(x)[None].to(self.model.template.device)

    def refine(self, x: torch.Tensor, attrs: CaslAttributes, steps: int, seed: int = 0
               ) -> tuple[CaslAttributes, RefineHistory]:
        """Test-time refinement of the attributes of x (:func:`~mirror3d.models.casl.refine.
        refine_attributes`) with the model's loss weights and background setting."""
        return refine_attributes(self.model, x, attrs, steps, lr=self.refine_lr, seed=seed,
                                 loss=self.loss_config, bg=self.keeps_background)

    @torch.no_grad()
    def reconstruct(self, image, mask, refine_steps: int | None = None,
                    seed: int = 0, float_range: str = "0..1") -> Reconstruction:
        """Reconstruct one image + mask (see :class:`Reconstruction` and :meth:`prepare`;
        ``float_range``: the declared range of a float image, ``"0..1"`` or ``"0..255"``).

        ``refine_steps`` (default :attr:`refine_steps`): N > 0 continues from the network's
        prediction with N steps of test-time refinement of this image's attributes
        (:meth:`refine`; deterministic for a ``seed``); 0 returns the prediction unchanged.

        Raises:
            ValueError: a bad image or mask (see :meth:`prepare`), a bad ``refine_steps``.
        """
        steps = self.refine_steps if refine_steps is None else _check_steps(refine_steps)
        x = self.prepare(image, mask, float_range)
        attrs = self.model.encode(x)
        history = None
        if steps > 0:
            attrs, history = self.refine(x, attrs, steps, seed)
        verts = self.model.vertices(attrs)[0].cpu()
        cam = CameraParams(float(attrs.azimuth[0]), float(attrs.elevation[0]),
                           float(attrs.distance[0]), tuple(float(v) for v in attrs.bias[0]))
        return Reconstruction(verts, self.model.faces.cpu(), self.model.face_uvs.cpu(),
                              attrs.texture[0].cpu(), attrs.light[0].cpu(), cam,
                              self.model.image_size, refinement=history, _model=self.model)


def _check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"refine_steps: expected an int >= 0, got {steps!r}")
    return int(steps)


def load_casl(path: str | os.PathLike, device: str | torch.device = "cpu",
              refine_steps: int = 0) -> CaslPredictor:
    """Load a trained CASL model from a run directory (its ``model_final.pt``, else the newest
    checkpoint) or a ``.pt`` checkpoint file. ``refine_steps``: the predictor's default
    test-time refinement (:class:`CaslPredictor`).

    Raises:
        FileNotFoundError: nothing there.
        mirror3d.utils.checkpoint.CheckpointError: a foreign, truncated or non-CASL checkpoint,
            or weights that do not fit the model of the checkpoint's own config.
    """
    model, state = load_model_checkpoint(path, "casl", lambda st: build_casl_model(st["config"]),
                                         "CASL")
    config = state["config"]
    return CaslPredictor(model.to(device), config, refine_steps=refine_steps)
