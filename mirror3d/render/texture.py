"""UV texture lookup with kaolin's ``texture_mapping`` conventions, as CASL's DIB-R renderer uses it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["sample_texture"]


def sample_texture(uv: torch.Tensor, texture: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Sample a texture at UV coordinates.

    UVs are clamped to [0, 1] and v is flipped (v = 1 is the top row of the texture image), then
    ``grid_sample(align_corners=False, padding_mode="border")``.

    Args:
        uv: (B, H, W, 2) with v up.
        texture: (B, C, Ht, Wt).
    Returns:
        (B, C, H, W).
    """
    uv = uv.clamp(0.0, 1.0)
    grid = torch.stack([uv[..., 0] * 2.0 - 1.0, 1.0 - uv[..., 1] * 2.0], dim=-1)
    return F.grid_sample(texture, grid.to(texture.dtype), mode=mode, padding_mode="border",
                         align_corners=False)
