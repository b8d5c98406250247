"""CASL's attribute encoder: all encoders on one image batch (reference networks.py
``AttributeEncoder``), its config, and the encoder groups the encoder EM loop rotates.

Encoder groups (the encoder loop of Zheng et al. 2022): ``camera``, ``shape``, ``texture`` (texture AND light,
trained together) and ``background`` (always trainable). A group named in ``frozen`` runs

- without gradients (under ``torch.no_grad``), and
- without updating its batch-norm running statistics: its BN layers still normalise with the
  batch statistics in train mode (like the reference's train-mode deep copy) but do not write
  ``running_mean``/``running_var``/``num_batches_tracked``; in eval mode they use the running
  statistics as usual.
- Dropout stays as the module's mode says (active in train mode), as in the reference's
  train-mode copy.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mirror3d.models.casl.blocks import check_image
from mirror3d.models.casl.discriminator import Discriminator
from mirror3d.models.casl.encoders import (BackgroundEncoder, CameraEncoder, LightEncoder, ShapeEncoder,
                                           TextureEncoder)
from mirror3d.models.casl.integration import check_template
from mirror3d.render.mesh import check_faces

__all__ = ["CaslNetConfig", "CaslAttributes", "AttributeEncoder", "ENCODER_GROUP_NAMES",
           "FREEZABLE_GROUPS", "build_discriminator", "frozen_modules"]

#: every encoder group, in forward order
ENCODER_GROUP_NAMES = ("camera", "shape", "texture", "background")
#: the groups that may be frozen (the background encoder always trains)
FREEZABLE_GROUPS = ("camera", "shape", "texture")


@dataclass
class CaslNetConfig:
    """Widths, depths and output ranges of the CASL networks.

    The defaults are a small CPU model (one forward + backward at batch 8, 64×128 in well
    under a second on 2 cores); :meth:`paper` approximates the reference widths. Market
    defaults for the camera ranges; dropout c/s/t as the reference's ``--drop``.
    """

    distance_range: tuple[float, float] = field(default=(2.0, 6.0), metadata={
        "help": "camera distance range (min, max): Market 2,6; CUB 2,7; ATR 2,8"})
    elevation_range: tuple[float, float] = field(default=(-15.0, 15.0), metadata={
        "help": "elevation range in degrees (min, max): Market/ATR -15,15; CUB 0,30"})
    azi_scope: float = field(default=360.0, metadata={
        "range": (1e-3, 360.0), "help": "azimuth = -angle·azi_scope/360"})
    drop_camera: float = field(default=0.2, metadata={
        "range": (0.0, 1.0), "help": "dropout c: camera and light heads"})
    drop_shape: float = field(default=0.2, metadata={"range": (0.0, 1.0), "help": "dropout s: shape head"})
    drop_texture: float = field(default=0.0, metadata={
        "range": (0.0, 1.0), "help": "dropout t: texture and background (applied as t/2)"})
    use_im: bool = field(default=True, metadata={
        "help": "Integration Module on; false = 'No IM' ablation (global features only)"})
    im_flip_y: bool = field(default=True, metadata={
        "help": "IM grid y = -y (image top = +y); false keeps the reference's mirrored lookup"})
    coord_conv: bool = field(default=True, metadata={"help": "coordinate channels in the camera and light CNNs"})

    camera_channels: int = field(default=8, metadata={
        "range": (1, None), "help": "camera backbone stem width (stages ×2, ×4, ×8)"})
    camera_blocks: tuple[int, ...] = field(default=(1, 1, 1), metadata={
        "range": (0, None), "help": "camera residual blocks per stage (3 stages = stride 16)"})
    camera_hidden: int = field(default=64, metadata={"range": (1, None), "help": "camera head width"})
    camera_pretrained: str | None = field(default=None, metadata={"help": "local state dict for the camera backbone"})

    shape_channels: int = field(default=8, metadata={
        "range": (1, None), "help": "shape backbone stem width (stages ×1, ×2, ×4, ×8)"})
    shape_blocks: tuple[int, ...] = field(default=(1, 1, 1, 1), metadata={
        "range": (0, None), "help": "shape residual blocks per stage (4 stages = stride 32)"})
    shape_features: int | None = field(default=None, metadata={
        "range": (1, None), "help": "1x1 expansion of the shape feature map (reference 2048); none = off"})
    shape_hidden: int = field(default=64, metadata={"range": (1, None), "help": "per-vertex Conv1d width"})
    shape_pretrained: str | None = field(default=None, metadata={"help": "local state dict for the shape backbone"})
    shape_backbone_lr_scale: float = field(default=0.05, metadata={
        "range": (0.0, None), "help": "learning-rate factor of the shape backbone (reference 0.05)"})
    shape_offsets_lr_scale: float = field(default=1.0, metadata={
        "range": (0.0, None), "help": "learning-rate factor of the dense 3V->3V offset layer: with Adam "
                                      "every one of its ~3.7M weights moves by ~lr per step, so the offsets "
                                      "move by ~3V*lr (docs/casl-on-cpu.md)"})
    shape_smooth_passes: int = field(default=0, metadata={
        "range": (0, 100), "help": "Laplacian smoothing passes (x <- x + 0.5 L x) applied to the predicted "
                                   "offsets: smooth by construction (0 = off, the reference)"})

    texture_channels: int = field(default=8, metadata={
        "range": (1, None), "help": "texture backbone stem width (stages ×1, ×2, ×4, ×8)"})
    texture_blocks: tuple[int, ...] = field(default=(1, 1, 1, 1), metadata={
        "range": (0, None), "help": "texture residual blocks per stage (skips at /4 /8 /16 /32)"})
    texture_decoder_channels: int = field(default=32, metadata={"range": (4, None), "help": "flow decoder width"})
    texture_pretrained: str | None = field(default=None, metadata={"help": "local state dict for the texture backbone"})

    light_channels: tuple[int, ...] = field(default=(16, 32, 32, 64, 32), metadata={
        "range": (1, None), "help": "widths of the light CNN's stride-2 convs"})
    light_hidden: int | None = field(default=None, metadata={
        "range": (1, None), "help": "light head width (none = half the last conv width)"})

    background_channels: int = field(default=16, metadata={"range": (1, None), "help": "background encoder width"})
    background_blocks: int = field(default=1, metadata={"range": (0, None), "help": "background residual blocks"})

    disc_channels: int = field(default=8, metadata={"range": (1, None), "help": "discriminator width nf (reference 16)"})

    def validate(self) -> None:
        for name in ("distance_range", "elevation_range"):
            lo, hi = getattr(self, name)
            if not lo < hi:
                raise ValueError(f"{name}: expected min < max, got {lo},{hi}")
        if self.distance_range[0] <= 0:
            raise ValueError(f"distance_range: expected a positive minimum, got {self.distance_range[0]}")
        for name in ("camera_blocks", "shape_blocks", "texture_blocks", "light_channels"):
            if len(getattr(self, name)) == 0:
                raise ValueError(f"{name}: expected at least one entry")

    @classmethod
    def small(cls, **overrides) -> "CaslNetConfig":
        """The small CPU default (same as ``CaslNetConfig()``)."""
        return cls(**overrides)

    @classmethod
    def paper(cls, **overrides) -> "CaslNetConfig":
        """Widths approximating the networks of the reference code (github.com/layumi/3D-Magic-Mirror).

        Camera: stem 36 → 72/144/288 at stride 16 (Base_4C-like), 6.78M parameters (reference
        6.50M); shape: a ResNet-style trunk 64..512 expanded to 2048 channels + gate (stand-in
        for HRNet-W18-small-v2 + SE) with a 256-wide vertex head, 19.52M (19.36M); texture: a
        ResNet-34-like trunk (64..512, 21.28M) with a 480-wide decoder, 29.27M (29.18M); light:
        32, 64, 96, 192, 96, 1,140,554 (exact); background 32 with 3 blocks, 29,717 (exact);
        discriminator nf = 16, 291,936 (exact).
        """
        base = dict(
            camera_channels=36, camera_blocks=(1, 3, 5), camera_hidden=128,
            shape_channels=64, shape_blocks=(1, 2, 2, 1), shape_features=2048, shape_hidden=256,
            texture_channels=64, texture_blocks=(2, 3, 5, 2), texture_decoder_channels=480,
            light_channels=(32, 64, 96, 192, 96), light_hidden=48,
            background_channels=32, background_blocks=3, disc_channels=16,
        )
        base.update(overrides)
        return cls(**base)


@dataclass
class CaslAttributes:
    """Everything the encoders predict for a batch of B images of size H×W (V vertices).

    Dict-like access (``attrs["azimuth"]``, ``keys()``, ``items()``) is supported.
    """

    azimuth: torch.Tensor        #: (B,) degrees, [−180, 180] for azi_scope 360
    elevation: torch.Tensor      #: (B,) degrees
    distance: torch.Tensor       #: (B,)
    bias: torch.Tensor           #: (B, 2) look-at (x, y) in (−1, 1)
    azimuth_cs: torch.Tensor     #: (B, 2) (cos, sin) of the azimuth
    elevation_cs: torch.Tensor   #: (B, 2) (cos, sin) of the elevation
    delta: torch.Tensor          #: (B, V, 3) offsets from the template, mean over V = 0
    texture: torch.Tensor        #: (B, 3, 2H, W) texture map [UV image; flipped copy]
    light: torch.Tensor          #: (B, 9) SH coefficients
    background: torch.Tensor     #: (B, 3, H, W) in (0, 1)
    texture_flow: torch.Tensor   #: (B, 2, H, W) in [−1, 1] (diagnostic: where each texel samples)

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self)]

    def items(self) -> list[tuple[str, torch.Tensor]]:
        return [(k, getattr(self, k)) for k in self.keys()]

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self.keys():
            raise KeyError(f"{key!r} is not an attribute; known: {', '.join(self.keys())}")
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def as_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.items())

    def replace(self, **changes: torch.Tensor) -> "CaslAttributes":
        return dataclasses.replace(self, **changes)

    def detach(self) -> "CaslAttributes":
        return CaslAttributes(**{k: v.detach() for k, v in self.items()})


@contextlib.contextmanager
def frozen_modules(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Run ``modules`` without gradients and without touching their BN running statistics.

    Batch-norm layers get ``track_running_stats = False`` for the duration: in train mode they
    normalise with batch statistics and write nothing; in eval mode they still use their stored
    running statistics. Restored on exit.
    """
    bns = [m for mod in modules for m in mod.modules() if isinstance(m, _BatchNorm)]
    saved = [m.track_running_stats for m in bns]
    try:
        for m in bns:
            m.track_running_stats = False
        with torch.no_grad():
            yield
    finally:
        for m, flag in zip(bns, saved):
            m.track_running_stats = flag


def build_discriminator(cfg: CaslNetConfig) -> Discriminator:
    """The WGAN critic with ``cfg.disc_channels`` width on RGB + mask."""
    return Discriminator(in_channels=4, base_channels=cfg.disc_channels)


class AttributeEncoder(nn.Module):
    """All CASL encoders on one batch.

    Args:
        cfg: widths, depths, ranges, dropout.
        template_verts: (V, 3) or (1, V, 3), the template at construction; only V is kept
            (the template itself is passed to :meth:`forward`).
        faces: (F, 3) int64 template faces (for the shape encoder's Laplacian).

    forward: x (B, 4, H, W) RGB + mask in [0, 1], template (1 or B, V, 3),
    frozen ⊆ {"camera", "shape", "texture"} → :class:`CaslAttributes`.
    """

    def __init__(self, cfg: CaslNetConfig, template_verts: torch.Tensor, faces: torch.Tensor) -> None:
        super().__init__()
        if not isinstance(cfg, CaslNetConfig):
            raise ValueError(f"cfg must be a CaslNetConfig, got {type(cfg).__name__}")
        cfg.validate()
        if not isinstance(template_verts, torch.Tensor) or template_verts.ndim not in (2, 3) \
                or template_verts.shape[-1] != 3 or (template_verts.ndim == 3 and template_verts.shape[0] != 1):
            shape = tuple(template_verts.shape) if isinstance(template_verts, torch.Tensor) else type(template_verts).__name__
            raise ValueError(f"template_verts must have shape (V, 3) or (1, V, 3), got {shape}")
        num_verts = template_verts.shape[-2]
        check_faces(faces, num_verts=num_verts)
        self.cfg = cfg
        self.num_verts = int(num_verts)
        self.camera = CameraEncoder(
            cfg.camera_channels, cfg.camera_blocks, cfg.camera_hidden, cfg.drop_camera, cfg.distance_range,
            cfg.elevation_range, cfg.azi_scope, cfg.use_im, cfg.im_flip_y, cfg.coord_conv,
            pretrained_path=cfg.camera_pretrained)
        self.shape = ShapeEncoder(
            self.num_verts, faces, cfg.shape_channels, cfg.shape_blocks, cfg.shape_features, cfg.shape_hidden,
            cfg.drop_shape, cfg.use_im, cfg.im_flip_y, pretrained_path=cfg.shape_pretrained,
            smooth_passes=cfg.shape_smooth_passes)
        self.texture = TextureEncoder(cfg.texture_channels, cfg.texture_blocks, cfg.texture_decoder_channels,
                                      cfg.drop_texture, pretrained_path=cfg.texture_pretrained)
        self.light = LightEncoder(cfg.light_channels, cfg.light_hidden, cfg.drop_camera,
                                  coord_layers=2 if cfg.coord_conv else 0)
        self.background = BackgroundEncoder(cfg.background_channels, cfg.background_blocks, cfg.drop_texture)

    def group_modules(self) -> dict[str, list[nn.Module]]:
        """Encoder group → its modules (``texture`` covers the texture and light encoders)."""
        return {"camera": [self.camera], "shape": [self.shape], "texture": [self.texture, self.light],
                "background": [self.background]}

    def param_groups(self) -> list[dict]:
        """Parameters by optimiser group, each ``{"name", "group", "params", "lr_scale"}``.

        Names: camera, shape_backbone (lr_scale = ``cfg.shape_backbone_lr_scale``), shape_head,
        shape_offsets (the offset layer; ``cfg.shape_offsets_lr_scale``), texture, light, background; ``group`` is the encoder group each belongs to. Together
        they hold every parameter exactly once.
        """
        backbone_ids = {id(p) for p in self.shape.backbone.parameters()}
        offset_ids = {id(p) for p in self.shape.offset_head.parameters()}
        return [
            {"name": "camera", "group": "camera", "params": list(self.camera.parameters()), "lr_scale": 1.0},
            {"name": "shape_backbone", "group": "shape", "params": list(self.shape.backbone.parameters()),
             "lr_scale": float(self.cfg.shape_backbone_lr_scale)},
            {"name": "shape_head", "group": "shape",
             "params": [p for p in self.shape.parameters()
                        if id(p) not in backbone_ids and id(p) not in offset_ids], "lr_scale": 1.0},
            {"name": "shape_offsets", "group": "shape", "params": list(self.shape.offset_head.parameters()),
             "lr_scale": float(self.cfg.shape_offsets_lr_scale)},
            {"name": "texture", "group": "texture", "params": list(self.texture.parameters()), "lr_scale": 1.0},
            {"name": "light", "group": "texture", "params": list(self.light.parameters()), "lr_scale": 1.0},
            {"name": "background", "group": "background", "params": list(self.background.parameters()),
             "lr_scale": 1.0},
        ]

    def _check_frozen(self, frozen: Iterable[str]) -> frozenset[str]:
        if isinstance(frozen, str):
            raise ValueError(f"frozen must be a set of group names, got the string {frozen!r}")
        frozen = frozenset(frozen)
        bad = sorted(frozen - set(FREEZABLE_GROUPS))
        if bad:
            raise ValueError(f"frozen: unknown or unfreezable group(s) {bad}; expected a subset of "
                             f"{FREEZABLE_GROUPS} (the background encoder always trains)")
        return frozen

    def forward(self, x: torch.Tensor, template: torch.Tensor,
                frozen: Iterable[str] = frozenset()) -> CaslAttributes:
        check_image(x, 4)
        check_template(template, batch=x.shape[0], num_verts=self.num_verts)
        frozen = self._check_frozen(frozen)
        x = x.contiguous(memory_format=torch.channels_last)  # ~20% faster convolutions on CPU
        groups = self.group_modules()

        def run(group: str):
            return frozen_modules(groups[group]) if group in frozen else contextlib.nullcontext()

        with run("camera"):
            cam = self.camera(x, template)
        with run("shape"):
            delta = self.shape(x, template)
        with run("texture"):
            texture, flow = self.texture(x)
            light = self.light(x)
        background = self.background(x)
        return CaslAttributes(delta=delta, texture=texture, light=light, background=background,
                              texture_flow=flow, **cam)
