"""Inference with a trained CASL model (Zheng et al. 2022, "3D Magic Mirror"):
``load_casl(path).reconstruct(image, mask)``.

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

from mirror3d.models.casl.step import build_casl_model
from mirror3d.render.camera import Camera, look_at_camera
from mirror3d.render.mesh_io import export_mesh
from mirror3d.utils.checkpoint import CheckpointError, load_checkpoint
from mirror3d.utils.config import config_to_dict

__all__ = ["load_casl", "CaslPredictor", "Reconstruction", "CameraParams"]


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
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    face_uvs: torch.Tensor
    texture: torch.Tensor
    light: torch.Tensor
    camera: CameraParams
    image_size: tuple[int, int]
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


def _to_image_array(image, name: str) -> np.ndarray:
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    elif isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.dim() == 3 and t.shape[0] == 3:
            t = t.permute(1, 2, 0)
        image = (t.clamp(0, 1).numpy() * 255).round().astype(np.uint8) if t.is_floating_point() \
            else t.numpy()
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{name}: expected an H×W×3 image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"{name}: expected uint8 values, got {arr.dtype}")
    return arr


def _to_mask_array(mask, shape: tuple[int, int]) -> np.ndarray:
    if isinstance(mask, Image.Image):
        mask = np.asarray(mask.convert("L")) > 127
    elif isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[2] == 1:
        m = m[..., 0]
    if m.shape != shape:
        raise ValueError(f"mask: expected shape {shape} like the image, got {m.shape}")
    m = m > (127 if m.dtype == np.uint8 else 0.5 if np.issubdtype(m.dtype, np.floating) else 0)
    if not m.any():
        raise ValueError("mask: empty (no foreground pixel)")
    return m


class CaslPredictor:
    """A trained CASL model ready for single images (eval mode, no gradients).

    Args:
        model: the :class:`~mirror3d.models.casl.model.CaslModel`.
        config: its training config as the plain dict a checkpoint holds (``state["config"]``);
            a config object (``CaslTrainConfig``) is turned into that dict. :attr:`config` is
            the dict; ``data.bg`` says whether inputs keep their background.
    """

    def __init__(self, model, config: Mapping[str, Any] | Any) -> None:
        self.model = model.eval()
        if dataclasses.is_dataclass(config) and not isinstance(config, type):
            config = config_to_dict(config)
        self.config: dict[str, Any] = dict(config)

    @property
    def keeps_background(self) -> bool:
        """Whether the model was trained on real backgrounds (``data.bg``; else on white)."""
        return bool((self.config.get("data") or {}).get("bg", True))

    @property
    def image_size(self) -> tuple[int, int]:
        return self.model.image_size

    def prepare(self, image, mask) -> torch.Tensor:
        """H×W×3 uint8 (PIL/tensor also accepted) + H×W bool mask → (1, 4, h, w) input at the
        model's size (bicubic RGB, nearest mask)."""
        img = _to_image_array(image, "image")
        m = _to_mask_array(mask, img.shape[:2])
        w, h = self.model.image_size
        rgb = np.asarray(Image.fromarray(img).resize((w, h), Image.BICUBIC), np.float32) / 255.0
        mm = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((w, h), Image.NEAREST)) > 127
        if not self.keeps_background:
            rgb = np.where(mm[..., None], rgb, 1.0)
        x = np.concatenate([rgb.transpose(2, 0, 1), mm[None].astype(np.float32)], 0)
        return torch.from_numpy(x)[None].to(self.model.template.device)

    @torch.no_grad()
    def reconstruct(self, image, mask) -> Reconstruction:
        """Reconstruct one image + mask (see :class:`Reconstruction`)."""
        x = self.prepare(image, mask)
        attrs = self.model.encode(x)
        verts = self.model.vertices(attrs)[0].cpu()
        cam = CameraParams(float(attrs.azimuth[0]), float(attrs.elevation[0]),
                           float(attrs.distance[0]), tuple(float(v) for v in attrs.bias[0]))
        return Reconstruction(verts, self.model.faces.cpu(), self.model.face_uvs.cpu(),
                              attrs.texture[0].cpu(), attrs.light[0].cpu(), cam,
                              self.model.image_size, _model=self.model)


def load_casl(path: str | os.PathLike, device: str | torch.device = "cpu") -> CaslPredictor:
    """Load a trained CASL model from a run directory (its ``model_final.pt``, else the newest
    checkpoint) or a ``.pt`` checkpoint file.

    Raises:
        FileNotFoundError: nothing there.
        mirror3d.utils.checkpoint.CheckpointError: a foreign, truncated or non-CASL checkpoint,
            or weights that do not fit the model of the checkpoint's own config.
    """
    p = pathlib.Path(path)
    if p.is_dir() and (p / "model_final.pt").exists():
        p = p / "model_final.pt"
    state = load_checkpoint(p, "casl", map_location="cpu")
    config = state.get("config")
    if not isinstance(config, Mapping):
        raise CheckpointError(f"checkpoint {p}: holds no training config")
    model = build_casl_model(config)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {p}: weights do not fit the model of its own config "
                              f"({str(exc).splitlines()[0]})") from None
    return CaslPredictor(model.to(device), config)
