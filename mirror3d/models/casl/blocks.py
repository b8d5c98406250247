"""Small building blocks of the CASL networks (as in the reference code of Zheng et al. 2022,
github.com/layumi/3D-Magic-Mirror).

- :class:`ImageNormalization`: the reference's ``normalize_batch_4C`` (ImageNet mean/std on RGB,
  mask → m − 0.5).
- :class:`MaxAvgPool2d`: the reference's ``MMPool``, σ(p)·max + (1 − σ(p))·avg with a learnable p.
- :class:`ChannelGate`: squeeze-and-excitation ("SE" in the reference).
- :class:`AddCoords`: coord-conv channels ("coordconv" in the reference).
- :class:`ConvNormAct`: conv → [BN] → LeakyReLU(0.2) (the reference's ``Conv2dBlock``).
- :class:`ResidualBlock`, :class:`GatedResidualStack` (the reference's ``ResBlocks``),
  :class:`DownsampleBlock`: ResNet-style blocks of our own backbones.
- :func:`init_weights`, :func:`init_head`: the reference's initialisation (network/utils.py).

Everything follows the device and dtype of its input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LEAKY_SLOPE",
    "ImageNormalization",
    "MaxAvgPool2d",
    "ChannelGate",
    "AddCoords",
    "ConvNormAct",
    "ResidualBlock",
    "GatedResidualStack",
    "DownsampleBlock",
    "init_weights",
    "init_head",
    "check_image",
    "count_parameters",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LEAKY_SLOPE = 0.2


def check_image(x: torch.Tensor, channels: int | None = 4, name: str = "x") -> None:
    """Raise ``ValueError`` unless ``x`` is a finite float (B, C, H, W) tensor (C = ``channels``)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
    if x.ndim != 4 or (channels is not None and x.shape[1] != channels):
        want = f"(B, {channels}, H, W)" if channels is not None else "(B, C, H, W)"
        raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.shape[0] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")


# --------------------------------------------------------------------------------------------
# initialisation
# --------------------------------------------------------------------------------------------


def init_weights(module: nn.Module) -> None:
    """The reference initialisation, applied to every submodule.

    Conv and linear weights: Kaiming-normal (fan_in, gain √2); batch-norm weights N(1, 0.02);
    every bias 0. Use as ``model.apply(init_weights)``.
    """
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight, a=0.0, mode="fan_in")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)) and module.affine:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def init_head(module: nn.Module, std: float = 1e-5) -> None:
    """A final ("classifier") layer: weights N(0, ``std``), bias 0, so its output starts ≈ 0."""
    if not isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
        raise ValueError(f"module must be a Conv1d, Conv2d or Linear layer, got {type(module).__name__}")
    nn.init.normal_(module.weight, 0.0, std)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


# --------------------------------------------------------------------------------------------
# input normalisation, pooling, gating, coordinates
# --------------------------------------------------------------------------------------------


class ImageNormalization(nn.Module):
    """RGB + mask → network input (the reference's ``normalize_batch_4C``).

    RGB channels get the ImageNet mean/std; the mask channel becomes m − 0.5.

    x: (B, 4, H, W) in [0, 1] → (B, 4, H, W).
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([*IMAGENET_MEAN, 0.5]).view(1, 4, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([*IMAGENET_STD, 1.0]).view(1, 4, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class MaxAvgPool2d(nn.Module):
    """Adaptive max/average pooling mix (the reference's ``MMPool``).

    out = σ(p)·adaptive_max(x) + (1 − σ(p))·adaptive_avg(x), with one learnable scalar p
    initialised to 0 (a 50/50 mix).

    x: (B, C, H, W) → (B, C, *output_size).
    """

    def __init__(self, output_size: int | tuple[int, int] = 1) -> None:
        super().__init__()
        self.output_size = output_size
        self.mix_logit = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.sigmoid(self.mix_logit).to(x.dtype)
        return w * F.adaptive_max_pool2d(x, self.output_size) + (1 - w) * F.adaptive_avg_pool2d(
            x, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class ChannelGate(nn.Module):
    """Squeeze-and-excitation channel gate ("SE" in the reference, reduction 16).

    x · sigmoid(W₂ lrelu(W₁ mean_hw(x))). x: (B, C, H, W) → (B, C, H, W).

    The squeeze uses LeakyReLU(0.2) where SE uses ReLU: with reduction 16 narrow layers have
    one or two hidden units, which a ReLU often leaves dead from initialisation on (the gate
    then never trains). Same parameters as SE.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.squeeze = nn.Linear(channels, hidden)
        self.excite = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.sigmoid(self.excite(F.leaky_relu(self.squeeze(x.mean(dim=(2, 3))), LEAKY_SLOPE)))
        return x * g[:, :, None, None]


class AddCoords(nn.Module):
    """Append two coordinate channels (x, y in [−1, 1], left→right and top→bottom): coord-conv.

    x: (B, C, H, W) → (B, C + 2, H, W).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        coords = torch.stack([gx, gy]).unsqueeze(0).expand(b, 2, h, w)
        return torch.cat([x, coords], dim=1)


# --------------------------------------------------------------------------------------------
# conv blocks
# --------------------------------------------------------------------------------------------


class ConvNormAct(nn.Sequential):
    """conv k×k → [BatchNorm] → LeakyReLU(0.2) (the reference's ``Conv2dBlock``).

    The conv has no bias when batch norm follows. Padding keeps the size at stride 1 and gives
    ceil(H/2) × ceil(W/2) at stride 2 (odd kernels).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 norm: bool = True, act: bool = True, padding_mode: str = "zeros") -> None:
        layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                                             kernel_size // 2, bias=not norm, padding_mode=padding_mode)]
        if norm:
            layers.append(nn.BatchNorm2d(out_channels))
        if act:
            layers.append(nn.LeakyReLU(LEAKY_SLOPE))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """x + branch(x), branch = conv3×3 → [BN] → LReLU → conv3×3 → [BN].

    ``hidden`` is the width between the two convs (default ``channels``; the reference's
    ``ResBlock`` uses channels/2). x: (B, C, H, W) → (B, C, H, W).
    """

    def __init__(self, channels: int, hidden: int | None = None, norm: bool = True) -> None:
        super().__init__()
        hidden = channels if hidden is None else hidden
        self.branch = nn.Sequential(
            ConvNormAct(channels, hidden, 3, norm=norm),
            ConvNormAct(hidden, channels, 3, norm=norm, act=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


class GatedResidualStack(nn.Module):
    """x + ChannelGate(blocks(x)) over ``num_blocks`` :class:`ResidualBlock` (the reference's
    ``ResBlocks(n, dim)``: x + SE(out)·out).

    x: (B, C, H, W) → (B, C, H, W).
    """

    def __init__(self, channels: int, num_blocks: int, hidden: int | None = None, norm: bool = True) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[ResidualBlock(channels, hidden, norm) for _ in range(num_blocks)])
        self.gate = ChannelGate(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gate(self.blocks(x))


class DownsampleBlock(nn.Module):
    """Stride-2 residual block that changes the width (role of the reference's ``ResBlock_half``).

    out = LReLU(branch(x) + shortcut(x)) with branch = conv3×3/s2 → BN → LReLU → conv3×3 → BN
    and shortcut = avg-pool 2×2 (ceil) → conv1×1 → BN.

    x: (B, C_in, H, W) → (B, C_out, ceil(H/2), ceil(W/2)).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.branch = nn.Sequential(
            ConvNormAct(in_channels, out_channels, 3, stride=2),
            ConvNormAct(out_channels, out_channels, 3, act=False),
        )
        self.shortcut = nn.Sequential(
            nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.act = nn.LeakyReLU(LEAKY_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.branch(x) + self.shortcut(x))


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())

