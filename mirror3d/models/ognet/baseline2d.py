"""A small ResNet-style 2D CNN for OG-Net's 2D-vs-3D comparison (our design, not the paper's).

Input images (B, 3, 128, 64) (H × W, the re-id crop size; other sizes work too). Layout:
3×3 stem (stride 2) -> four stages of two basic blocks (widths 32-64-96-128, strides 1-2-2-2)
-> [max ; mean] over H×W -> the OG-Net head (Linear no bias -> BatchNorm1d 512 = the re-id
feature -> Dropout 0.7 -> classifier). Paper-style parameter count without the classifier:
1,179,616, within 2% of OG-Net-Small's 1,200,829. Registered as ``"cnn2d-small"``
(``input_kind="image"``, ``input_size=(64, 128)`` as (W, H); no paper count: not a paper's model).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mirror3d.models.ognet.model import ReIDNetwork, ReIDOutput
from mirror3d.models.registry import register_model

__all__ = ["BasicBlock", "CNN2D", "INPUT_SIZE", "cnn2d_small"]


class BasicBlock(nn.Module):
    """ResNet basic block: 3×3 conv -> BN -> ReLU -> 3×3 conv -> BN, plus a (projected) skip.

    Shapes: x (B, C_in, H, W) -> (B, C_out, H / stride, W / stride).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)
        self.skip: nn.Module = (
            nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
            if stride != 1 or in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.act(y + self.skip(x))


class CNN2D(ReIDNetwork):
    """ResNet-style re-id CNN with the OG-Net head.

    Args:
        num_classes: identities (0: no classifier, ``logits=None``).
        widths: channels of the four stages.
        depths: basic blocks per stage.
        strides: first-block stride per stage.
        stem_channels: output channels of the 3×3 stride-2 stem.
        in_channels: image channels.
        embed_dim, drop_rate: head settings (as OG-Net).

    Forward: images (B, in_channels, H, W) -> :class:`ReIDOutput` (logits (B, num_classes),
    feature (B, embed_dim)).
    """

    def __init__(
        self,
        num_classes: int = 751,
        widths: Sequence[int] = (32, 64, 96, 128),
        depths: Sequence[int] = (2, 2, 2, 2),
        strides: Sequence[int] = (1, 2, 2, 2),
        stem_channels: int = 32,
        in_channels: int = 3,
        embed_dim: int = 512,
        drop_rate: float = 0.7,
    ) -> None:
        super().__init__()
        if not (len(widths) == len(depths) == len(strides)) or not widths:
            raise ValueError(
                "widths, depths and strides must be non-empty and of equal length, "
                f"got {widths}, {depths}, {strides}"
            )
        self.in_channels = int(in_channels)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem_channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(stem_channels),
            nn.ReLU(inplace=True),
        )
        stages = []
        prev = stem_channels
        for width, depth, stride in zip(widths, depths, strides):
            blocks = [BasicBlock(prev, width, stride)] + [BasicBlock(width, width) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            prev = width
        self.stages = nn.Sequential(*stages)
        self._build_head(2 * prev, num_classes, embed_dim, drop_rate)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, C, H, W) -> pooled [max ; mean] descriptor (B, 2·widths[-1])."""
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != self.in_channels:
            raise ValueError(
                f"images must have shape (B, {self.in_channels}, H, W), "
                f"got {tuple(getattr(images, 'shape', ()))}"
            )
        if not images.is_floating_point() or not bool(torch.isfinite(images).all()):
            raise ValueError("images must be a finite floating-point tensor")
        x = self.stages(self.stem(images))
        return torch.cat([x.amax(dim=(2, 3)), x.mean(dim=(2, 3))], dim=1)

    def forward(self, images: torch.Tensor) -> ReIDOutput:
        logits, feature = self.head(self.forward_features(images))
        return ReIDOutput(logits, feature)


#: (W, H) of the re-id crops the baseline is built for (Market-1501's 64x128).
INPUT_SIZE = (64, 128)


@register_model("cnn2d-small", input_kind="image", input_size=INPUT_SIZE)
def cnn2d_small(num_classes: int = 751, **kwargs) -> CNN2D:
    """2D baseline on 3×128×64 crops, paper-style size close to OG-Net-Small (1,179,616)."""
    return CNN2D(num_classes=num_classes, **kwargs)
