"""The CASL attribute encoders (Zheng et al. 2022, "3D Magic Mirror"; the reference code's
networks.py): camera, shape, texture, light, background.

Every encoder takes the raw 4-channel input x: (B, 4, H, W), RGB + binary mask in [0, 1], and
normalises it itself (ImageNet mean/std on RGB, m − 0.5 on the mask). Final ("head") layers
start at N(0, 1e-5), so at initialisation every output sits at the centre of its range:
distance and elevation at their range midpoints, biases ≈ 0, δ ≈ 0, light ≈ (3, 0, …, 0),
texture flow ≈ 0 (every texel samples the image centre). Sizes are free: anything from 32×64
(W×H) up works; feature maps are looked up, pooled or resized, never assumed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mirror3d.models.casl.backbones import ResNetBackbone
from mirror3d.models.casl.blocks import (LEAKY_SLOPE, AddCoords, ConvNormAct, ImageNormalization,
                                         GatedResidualStack, MaxAvgPool2d, check_image, init_head,
                                         init_weights)
from mirror3d.models.casl.integration import (NeighbourDifference, TemplateFeatureSampler, check_template,
                                              vertex_features)
from mirror3d.render.mesh import check_faces, laplacian_smooth, uniform_laplacian

__all__ = ["CameraEncoder", "ShapeEncoder", "TextureEncoder", "FlowDecoder", "LightEncoder",
           "BackgroundEncoder", "vector_angle", "angle_cos_sin", "LIGHT_SCALE", "LIGHT_OFFSET"]

#: light = tanh(·)·LIGHT_SCALE + LIGHT_OFFSET (as the reference code's light encoder)
LIGHT_SCALE = (0.5,) + (0.1,) * 8
LIGHT_OFFSET = (3.0,) + (0.0,) * 8


def _mlp_head(in_features: int, hidden: int, out_features: int, dropout: float) -> nn.Sequential:
    """Linear → BN1d → Dropout → Linear (last layer N(0, 1e-5)): the reference's FC heads."""
    head = nn.Sequential(nn.Linear(in_features, hidden), nn.BatchNorm1d(hidden), nn.Dropout(dropout),
                         nn.Linear(hidden, out_features))
    head.apply(init_weights)
    init_head(head[-1])
    return head


def _check_range(value: Sequence[float], name: str) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{name} must be a finite (min, max) pair with min < max, got {tuple(value)}")
    return lo, hi


def vector_angle(vec: torch.Tensor) -> torch.Tensor:
    """Signed angle of a free 2-D vector in degrees, in [−180, 180].

    φ = sign(a_y)·acos(a_x / r): computed as atan2(a_y, a_x), the same function with finite
    gradients for any nonzero vector (acos has an infinite slope at ±1).

    vec: (..., 2) → (...).
    """
    return torch.rad2deg(torch.atan2(vec[..., 1], vec[..., 0]))


def angle_cos_sin(angle_deg: torch.Tensor) -> torch.Tensor:
    """(cos, sin) of an angle in degrees: (...) → (..., 2) (what the IC loss compares)."""
    rad = torch.deg2rad(angle_deg)
    return torch.stack([torch.cos(rad), torch.sin(rad)], dim=-1)


# --------------------------------------------------------------------------------------------
# camera
# --------------------------------------------------------------------------------------------


class CameraEncoder(nn.Module):
    """Camera: distance, elevation, azimuth (degrees) and the look-at bias (reference code).

    backbone (stride 16 with 3 stages, coord channels on the stem) → [features sampled at the
    template's (x, y), pooled to 2×2 | global map pooled to 2×2] (each its own
    :class:`MaxAvgPool2d`) → three heads Linear → BN1d → Dropout → Linear(→ 2):

    - distance = d_min + σ(o_d)(d_max − d_min), elevation = e_min + σ(o_e)(e_max − e_min);
    - azimuth = −φ·azi_scope/360 with φ the angle of a free 2-D vector (random at init);
    - bias = tanh(·) ∈ (−1, 1)², the (x, y) of the look-at point.

    With ``use_im=False`` (the "No IM" ablation) only the global map is used.

    forward: x (B, 4, H, W), template (1 or B, V, 3) (ignored without IM) → dict with
    ``azimuth, elevation, distance`` (B,), ``bias, azimuth_cs, elevation_cs`` (B, 2).
    """

    def __init__(
        self,
        base_channels: int = 16,
        blocks_per_stage: Sequence[int] = (1, 1, 1),
        hidden: int = 128,
        dropout: float = 0.2,
        distance_range: Sequence[float] = (2.0, 6.0),
        elevation_range: Sequence[float] = (-15.0, 15.0),
        azi_scope: float = 360.0,
        use_im: bool = True,
        im_flip_y: bool = True,
        coord_conv: bool = True,
        stem_kernel: int = 5,
        pretrained_path: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        self.distance_range = _check_range(distance_range, "distance_range")
        self.elevation_range = _check_range(elevation_range, "elevation_range")
        if not (0 < azi_scope <= 360):
            raise ValueError(f"azi_scope must be in (0, 360], got {azi_scope}")
        self.azi_scope = float(azi_scope)
        self.use_im = bool(use_im)
        mults = tuple(2 ** (i + 1) for i in range(len(blocks_per_stage)))
        self.backbone = ResNetBackbone(4, base_channels, blocks_per_stage, mults, stem_kernel=stem_kernel,
                                       coord_conv=coord_conv, gate=True, bottleneck=True,
                                       pretrained_path=pretrained_path)
        c = self.backbone.out_channels
        self.global_pool = MaxAvgPool2d(2)
        if self.use_im:
            self.sampler = TemplateFeatureSampler(align_corners=False, flip_y=im_flip_y)
            self.local_pool = MaxAvgPool2d(2)
        features = c * 4 * (2 if self.use_im else 1)
        self.distance_elevation_head = _mlp_head(features, hidden, 2, dropout)
        self.azimuth_head = _mlp_head(features, hidden, 2, dropout)
        self.bias_head = _mlp_head(features, hidden, 2, dropout)

    def features(self, x: torch.Tensor, template: torch.Tensor | None) -> torch.Tensor:
        """(B, 4, H, W) → (B, F) pooled features fed to the heads."""
        if self.use_im and template is None:
            raise ValueError("template must be given (1 or B, V, 3) when the Integration Module is on")
        fmap = self.backbone(x)[-1]
        parts = [self.global_pool(fmap).flatten(1)]
        if self.use_im:
            local = self.sampler(fmap, template).unsqueeze(-1)  # (B, C, V, 1)
            parts.insert(0, self.local_pool(local).flatten(1))
        return torch.cat(parts, dim=1)

    def forward(self, x: torch.Tensor, template: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        f = self.features(x, template)
        d_min, d_max = self.distance_range
        e_min, e_max = self.elevation_range
        de = torch.sigmoid(self.distance_elevation_head(f))
        distance = d_min + de[:, 0] * (d_max - d_min)
        elevation = e_min + de[:, 1] * (e_max - e_min)
        azimuth = -vector_angle(self.azimuth_head(f)) * (self.azi_scope / 360.0)
        bias = torch.tanh(self.bias_head(f))
        return {
            "azimuth": azimuth,
            "elevation": elevation,
            "distance": distance,
            "bias": bias,
            "azimuth_cs": angle_cos_sin(azimuth),
            "elevation_cs": angle_cos_sin(elevation),
        }


# --------------------------------------------------------------------------------------------
# shape
# --------------------------------------------------------------------------------------------


class ShapeEncoder(nn.Module):
    """Per-vertex offsets δ from the template (reference code).

    backbone (stride 32, channel gate on the output) → per vertex [local sample (bilinear,
    align_corners=True), global pool (broadcast), local·L (neighbour difference), template xyz]
    → Conv1d 1×1 → BN1d → LReLU(0.2) → Dropout → Conv1d 1×1 → 3 → BN1d → flatten (3V) →
    Linear(3V → 3V) (N(0, 1e-5)) → δ = 0.5·tanh(·) → (V, 3) → [``smooth_passes`` Laplacian
    smoothing passes δ ← δ + 0.5·Lδ, ours, off by default] → minus the per-sample vertex mean.

    With ``use_im=False`` ("No IM"): global pool → BN1d → Linear(C → 3V).

    The template is not this module's state: it is passed at call time (the CASL model keeps it
    as a buffer that the prototype loop updates). The mesh connectivity (``faces``) is fixed.

    forward: x (B, 4, H, W), template (1 or B, V, 3) → δ (B, V, 3), mean over V = 0.
    """

    def __init__(
        self,
        num_verts: int,
        faces: torch.Tensor,
        base_channels: int = 16,
        blocks_per_stage: Sequence[int] = (1, 1, 1, 1),
        feature_channels: int | None = None,
        hidden: int = 256,
        dropout: float = 0.2,
        use_im: bool = True,
        im_flip_y: bool = True,
        pretrained_path: str | os.PathLike | None = None,
        smooth_passes: int = 0,
    ) -> None:
        super().__init__()
        if int(num_verts) != num_verts or num_verts < 1:
            raise ValueError(f"num_verts must be a positive int, got {num_verts}")
        check_faces(faces, num_verts=int(num_verts))
        self.num_verts = int(num_verts)
        self.use_im = bool(use_im)
        if int(smooth_passes) != smooth_passes or smooth_passes < 0:
            raise ValueError(f"smooth_passes must be an int >= 0, got {smooth_passes}")
        self.smooth_passes = int(smooth_passes)
        # (V, V) uniform Laplacian for the offset smoothing; derived from faces, so not saved
        self.register_buffer("laplacian", uniform_laplacian(self.num_verts, faces)
                             if self.smooth_passes else torch.zeros(0), persistent=False)
        self.backbone = ResNetBackbone(4, base_channels, blocks_per_stage, out_channels=feature_channels,
                                       out_gate=True, pretrained_path=pretrained_path)
        c = self.backbone.out_channels
        v3 = 3 * self.num_verts
        self.global_pool = MaxAvgPool2d(1)
        if self.use_im:
            self.neighbour_difference = NeighbourDifference(self.num_verts, faces)
            self.sampler = TemplateFeatureSampler(align_corners=True, flip_y=im_flip_y)
            self.vertex_mlp = nn.Sequential(
                nn.Conv1d(3 * c + 3, hidden, 1, bias=False), nn.BatchNorm1d(hidden),
                nn.LeakyReLU(LEAKY_SLOPE), nn.Dropout(dropout),
                nn.Conv1d(hidden, 3, 1, bias=False), nn.BatchNorm1d(3),
            )
            self.vertex_mlp.apply(init_weights)
            self.offset_head = nn.Linear(v3, v3)
        else:
            self.global_norm = nn.BatchNorm1d(c)
            self.global_norm.apply(init_weights)
            self.offset_head = nn.Linear(c, v3)
        init_head(self.offset_head)

    def forward(self, x: torch.Tensor, template: torch.Tensor | None = None) -> torch.Tensor:
        if self.use_im:
            if template is None:
                raise ValueError("template must be given (1 or B, V, 3) when the Integration Module is on")
            check_template(template, batch=x.shape[0], num_verts=self.num_verts)
        fmap = self.backbone(x)[-1]
        b = fmap.shape[0]
        pooled = self.global_pool(fmap).flatten(1)  # (B, C)
        if self.use_im:
            local = self.sampler(fmap, template)  # (B, C, V)
            stacked = vertex_features(local, pooled, self.neighbour_difference(local), template)
            per_vertex = self.vertex_mlp(stacked)  # (B, 3, V)
            out = self.offset_head(per_vertex.flatten(1)).view(b, 3, self.num_verts).transpose(1, 2)
        else:
            out = self.offset_head(self.global_norm(pooled)).view(b, self.num_verts, 3)
        delta = 0.5 * torch.tanh(out)
        if self.smooth_passes:
            delta = laplacian_smooth(delta, self.laplacian, 0.5, self.smooth_passes)
        return (delta - delta.mean(dim=1, keepdim=True)).contiguous()


# --------------------------------------------------------------------------------------------
# texture
# --------------------------------------------------------------------------------------------


class FlowDecoder(nn.Module):
    """Light-weight FPN-style decoder from multi-scale features to a 2-channel flow in [−1, 1].

    Replaces the reference's ``TextureBiFPN`` (three BiFPN blocks + ASPP). Top-down path: 1×1
    laterals to ``width`` channels, upsample-and-add, a 3×3 conv per level; then at the finest
    level conv → width/2, upsample to H/2, conv → width/4, upsample to H, Dropout2d, conv 5×5
    (reflect padding) → 2, Hardtanh. The last conv starts at N(0, 1e-5), so the flow starts ≈ 0.

    forward: skips [(B, C_i, h_i, w_i)] finest first, size (H, W) → flow (B, 2, H, W).
    """

    def __init__(self, skip_channels: Sequence[int], width: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        if width < 4:
            raise ValueError(f"width must be >= 4, got {width}")
        self.laterals = nn.ModuleList([nn.Conv2d(c, width, 1) for c in skip_channels])
        self.smooth = nn.ModuleList([ConvNormAct(width, width, 3) for _ in skip_channels[:-1]])
        self.refine_half = ConvNormAct(width, width // 2, 3)
        self.refine_full = ConvNormAct(width // 2, width // 4, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.to_flow = nn.Conv2d(width // 4, 2, 5, padding=2, padding_mode="reflect")
        self.apply(init_weights)
        init_head(self.to_flow)

    @staticmethod
    def _up(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)

    def forward(self, skips: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
        if len(skips) != len(self.laterals):
            raise ValueError(f"skips must hold {len(self.laterals)} feature maps, got {len(skips)}")
        p = self.laterals[-1](skips[-1])
        for i in range(len(skips) - 2, -1, -1):
            p = self.smooth[i](self.laterals[i](skips[i]) + self._up(p, skips[i].shape[-2:]))
        h, w = int(size[0]), int(size[1])
        p = self._up(self.refine_half(p), ((h + 1) // 2, (w + 1) // 2))
        p = self._up(self.refine_full(p), (h, w))
        return F.hardtanh(self.to_flow(self.dropout(p))).contiguous()


class TextureEncoder(nn.Module):
    """Texture map by flow sampling of the input image (reference code).

    backbone (skip features at strides 4, 8, 16, 32) → :class:`FlowDecoder` → flow (B, 2, H, W)
    in [−1, 1] → UV image T = grid_sample(input RGB, flow, bicubic, align_corners=True) →
    texture = [T ; T flipped vertically] (B, 3, 2H, W): front/back symmetry. The source is the
    raw input RGB, real background included. We pad at the border (the reference pads with
    zeros; that only darkens the outer cubic taps at the image edge). Dropout2d(dropout/2)
    before the last conv, as in the reference.

    forward: x (B, 4, H, W) → (texture (B, 3, 2H, W), flow (B, 2, H, W)).
    """

    def __init__(
        self,
        base_channels: int = 16,
        blocks_per_stage: Sequence[int] = (1, 1, 1, 1),
        decoder_channels: int = 32,
        dropout: float = 0.0,
        pretrained_path: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        self.backbone = ResNetBackbone(4, base_channels, blocks_per_stage, pretrained_path=pretrained_path)
        self.decoder = FlowDecoder(self.backbone.stage_channels, decoder_channels, dropout / 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flow = self.decoder(self.backbone(x), x.shape[-2:])
        uv_image = F.grid_sample(x[:, :3], flow.permute(0, 2, 3, 1), mode="bicubic",
                                 padding_mode="border", align_corners=True)
        texture = torch.cat([uv_image, uv_image.flip(2)], dim=2)
        return texture, flow


# --------------------------------------------------------------------------------------------
# light
# --------------------------------------------------------------------------------------------


class LightEncoder(nn.Module):
    """Nine spherical-harmonic lighting coefficients (reference code).

    Five (= len(channels)) conv 5×5/s2 → BN → LReLU blocks (2 coordinate channels appended to the
    input of the first ``coord_layers`` convs; the reference does it for the first two) →
    :class:`MaxAvgPool2d` → Linear → BN1d → Dropout → Linear(→ 9);
    l = tanh(·)·[0.5, 0.1×8] + [3, 0×8], so l0 ∈ [2.5, 3.5] and l1..8 ∈ [−0.1, 0.1].

    forward: x (B, 4, H, W) → (B, 9).
    """

    def __init__(self, channels: Sequence[int] = (32, 64, 96, 192, 96), hidden: int | None = None,
                 dropout: float = 0.2, coord_layers: int = 2) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if not channels or any(c < 1 for c in channels):
            raise ValueError(f"channels must be a non-empty sequence of positive ints, got {channels}")
        if coord_layers < 0:
            raise ValueError(f"coord_layers must be >= 0, got {coord_layers}")
        layers: list[nn.Module] = [ImageNormalization()]
        prev = 4
        for i, c in enumerate(channels):
            if i < coord_layers:
                layers.append(AddCoords())
                prev += 2
            layers.append(ConvNormAct(prev, c, 5, stride=2))
            prev = c
        layers.append(MaxAvgPool2d(1))
        layers.append(nn.Flatten(1))
        self.features = nn.Sequential(*layers)
        self.features.apply(init_weights)
        self.head = _mlp_head(prev, hidden or max(1, prev // 2), 9, dropout)
        self.register_buffer("scale", torch.tensor(LIGHT_SCALE), persistent=False)
        self.register_buffer("offset", torch.tensor(LIGHT_OFFSET), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image(x, 4)
        o = self.head(self.features(x))
        return torch.tanh(o) * self.scale.to(o.dtype) + self.offset.to(o.dtype)


# --------------------------------------------------------------------------------------------
# background
# --------------------------------------------------------------------------------------------


class BackgroundEncoder(nn.Module):
    """Full-resolution background image from the masked-out input (the reference code's ``--bg``).

    RGB·(1 − mask) → conv 3×3/s2 (no norm) → :class:`GatedResidualStack` of ``blocks``
    half-width residual blocks (no norm) →
    bilinear ×2 back to H×W → Dropout2d(dropout/2) → conv 3×3 → 3 → sigmoid.

    forward: x (B, 4, H, W) → (B, 3, H, W) in (0, 1).
    """

    def __init__(self, channels: int = 32, blocks: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        if channels < 1 or blocks < 0:
            raise ValueError(f"channels must be >= 1 and blocks >= 0, got {channels}, {blocks}")
        self.down = ConvNormAct(3, channels, 3, stride=2, norm=False)
        self.blocks = (GatedResidualStack(channels, blocks, hidden=max(1, channels // 2), norm=False)
                       if blocks > 0 else nn.Identity())
        self.dropout = nn.Dropout2d(dropout / 2)
        self.to_rgb = nn.Conv2d(channels, 3, 3, padding=1)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image(x, 4)
        masked = x[:, :3] * (1 - x[:, 3:4])
        h = self.blocks(self.down(masked))
        h = F.interpolate(h, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return torch.sigmoid(self.to_rgb(self.dropout(h))).contiguous()
