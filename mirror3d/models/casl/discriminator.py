"""The WGAN critic of CASL (Zheng et al. 2022; WGAN-GP of Gulrajani et al. 2017).

Fifteen bias-free convolutions with LeakyReLU(0.2) between them and no normalisation; six have
stride 2 (output stride 64); the output map is mean-pooled to one score per image. Widths are
multiples of ``base_channels`` (reference nf = 16):

    4 →1×1→ 16 →3×3→ 16 →/2→ 32 → 32 →/2→ 48 → 48 →/2→ 64 →/2→ 64 → 64 →/2→ 64 → 64 →/2→ 64
      →3×3→ 48 →1×1→ 32 →1×1→ 1

With nf = 16 this has exactly 291,936 parameters, the reference count. The widths above are the reference's;
its kernel sizes are not recorded here; ours (1×1 for 4→16, 48→32 and 32→1, 3×3 elsewhere) reproduce that
count. Other exact fits exist (e.g. 1×1 for 32→48 instead of 48→32, or for 16→32 and 32→32
instead), so the kernel layout is a guess consistent with the count. Which six convs have stride 2 is not recorded either; ours
are the three that widen the map (16→32, 32→48, 48→64) and three of the five 64→64 convs.
Initialisation: Kaiming (fan_in), last layer N(0, 1e-5).
"""

from __future__ import annotations

import torch
from torch import nn

from mirror3d.models.casl.blocks import LEAKY_SLOPE, check_image, init_head, init_weights

__all__ = ["Discriminator", "DISCRIMINATOR_PLAN"]

#: (width multiple of base_channels, kernel size, stride) of each conv but the last (→ 1, 1×1).
DISCRIMINATOR_PLAN: tuple[tuple[int, int, int], ...] = (
    (1, 1, 1), (1, 3, 1), (2, 3, 2), (2, 3, 1), (3, 3, 2), (3, 3, 1), (4, 3, 2),
    (4, 3, 2), (4, 3, 1), (4, 3, 2), (4, 3, 1), (4, 3, 2),
    (3, 3, 1), (2, 1, 1),
)


class Discriminator(nn.Module):
    """Bias-free, normalisation-free conv critic with a mean-pooled score.

    Args:
        in_channels: 4 (RGB + mask, the reference's ``--unmask 2``).
        base_channels: width unit nf (reference 16).

    forward: x (B, in_channels, H, W) → scores (B,). The map before pooling is
    (B, 1, ⌈H/64⌉, ⌈W/64⌉) (Market 64×128: 2×1).
    """

    def __init__(self, in_channels: int = 4, base_channels: int = 16) -> None:
        super().__init__()
        if in_channels < 1 or base_channels < 1:
            raise ValueError(f"in_channels and base_channels must be >= 1, got {in_channels}, {base_channels}")
        self.in_channels = int(in_channels)
        layers: list[nn.Module] = []
        prev = in_channels
        for mult, k, s in DISCRIMINATOR_PLAN:
            layers += [nn.Conv2d(prev, mult * base_channels, k, s, k // 2, bias=False),
                       nn.LeakyReLU(LEAKY_SLOPE)]
            prev = mult * base_channels
        layers.append(nn.Conv2d(prev, 1, 1, bias=False))
        self.net = nn.Sequential(*layers)
        self.apply(init_weights)
        init_head(self.net[-1])

    def score_map(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) → (B, 1, ⌈H/64⌉, ⌈W/64⌉)."""
        check_image(x, self.in_channels)
        return self.net(x.contiguous(memory_format=torch.channels_last))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score_map(x).mean(dim=(1, 2, 3))
