"""Our own ResNet-style CNN backbones for the CASL encoders (He et al. 2016 residual blocks;
stand-ins for the reference code's pretrained backbones).

No pretrained weights exist on these machines, so every encoder uses :class:`ResNetBackbone`
with a configurable width (``base_channels`` × ``channel_mults``) and depth
(``blocks_per_stage``), trained from scratch; a local state dict can be loaded with
``pretrained_path``.

Layout: [input normalisation] → [coord channels] → stem conv k×k/s2 → one stage per entry of
``blocks_per_stage`` (a stride-2 :class:`DownsampleBlock` followed by that many
:class:`ResidualBlock`, wrapped in a :class:`GatedResidualStack` with ``gate=True``) → [1×1 conv
to ``out_channels``] → [:class:`ChannelGate`]. With four stages the outputs are at strides 4, 8,
16, 32 (a ResNet's layer1..layer4).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from mirror3d.models.casl.blocks import (AddCoords, ChannelGate, ConvNormAct, DownsampleBlock,
                                         GatedResidualStack, ImageNormalization, ResidualBlock,
                                         check_image, init_weights)

__all__ = ["ResNetBackbone", "load_state_dict_file"]


def load_state_dict_file(module: nn.Module, path: str | os.PathLike) -> None:
    """Load a local state dict into ``module`` (strict), with ``torch.load(weights_only=True)``.

    The file may hold the state dict itself or ``{"state_dict": ...}`` / ``{"model": ...}``.

    Raises:
        ValueError: naming ``path`` if the file is missing, unreadable, not a state dict, or its
            keys/shapes do not match ``module``.
    """
    path = os.fspath(path)
    name = type(module).__name__
    if not os.path.isfile(path):
        raise ValueError(f"pretrained_path: weights file {path!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors, foreign formats, truncated files
        raise ValueError(f"pretrained_path: cannot read {path!r} as a torch state dict "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    if isinstance(state, Mapping):
        for key in ("state_dict", "model"):
            if key in state and isinstance(state[key], Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"pretrained_path: {path!r} does not hold a state dict (a mapping of "
                         f"parameter names to tensors) for {name}")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())
        raise ValueError(f"pretrained_path: weights in {path!r} do not match {name}: "
                         f"{detail[:400]}") from e


class ResNetBackbone(nn.Module):
    """ResNet-style CNN with configurable width and depth.

    Args:
        in_channels: input channels (4 = RGB + mask).
        base_channels: stem width; stage i has ``base_channels · channel_mults[i]`` channels.
        blocks_per_stage: residual blocks after each stage's downsampling block (≥ 0 each);
            its length is the number of stages.
        channel_mults: per-stage width multipliers (default 1, 2, 4, 8, …).
        stem_kernel: odd kernel size of the stride-2 stem conv.
        coord_conv: append 2 coordinate channels to the stem input.
        gate: each stage's residual blocks form a :class:`GatedResidualStack` (reference "ResBlocks").
        bottleneck: residual blocks run at half width between their two convs (reference "ResBlock").
        out_channels: if set, a final 1×1 conv → BN → LReLU to this width on the last stage.
        out_gate: a :class:`ChannelGate` on the last stage's output (reference: SE after HRNet).
        normalize_input: apply :class:`ImageNormalization` first (needs ``in_channels == 4``).
        pretrained_path: optional local state dict (see :func:`load_state_dict_file`).

    forward: x (B, in_channels, H, W), RGB + mask in [0, 1] →
        list of stage features, stage i: (B, stage_channels[i], ⌈H/2^(i+2)⌉, ⌈W/2^(i+2)⌉).
    """

    def __init__(
        self,
        in_channels: int = 4,
        base_channels: int = 32,
        blocks_per_stage: Sequence[int] = (1, 1, 1, 1),
        channel_mults: Sequence[int] | None = None,
        stem_kernel: int = 3,
        coord_conv: bool = False,
        gate: bool = False,
        bottleneck: bool = False,
        out_channels: int | None = None,
        out_gate: bool = False,
        normalize_input: bool = True,
        pretrained_path: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        blocks = tuple(int(b) for b in blocks_per_stage)
        if not blocks or any(b < 0 for b in blocks):
            raise ValueError(f"blocks_per_stage must be a non-empty sequence of ints >= 0, got {blocks_per_stage}")
        mults = tuple(2 ** i for i in range(len(blocks))) if channel_mults is None else tuple(channel_mults)
        if len(mults) != len(blocks) or any(int(m) != m or m < 1 for m in mults):
            raise ValueError(f"channel_mults must hold {len(blocks)} positive ints (one per stage), got {channel_mults}")
        if int(base_channels) != base_channels or base_channels < 1:
            raise ValueError(f"base_channels must be a positive int, got {base_channels}")
        if stem_kernel < 1 or stem_kernel % 2 == 0:
            raise ValueError(f"stem_kernel must be a positive odd int, got {stem_kernel}")
        if normalize_input and in_channels != 4:
            raise ValueError(f"normalize_input needs in_channels == 4 (RGB + mask), got {in_channels}")
        if out_channels is not None and out_channels < 1:
            raise ValueError(f"out_channels must be a positive int or None, got {out_channels}")
        self.in_channels = int(in_channels)

        self.normalize = ImageNormalization() if normalize_input else nn.Identity()
        self.coords = AddCoords() if coord_conv else nn.Identity()
        self.stem = ConvNormAct(in_channels + (2 if coord_conv else 0), base_channels, stem_kernel, stride=2)
        stages = []
        widths = []
        prev = base_channels
        for n, m in zip(blocks, mults):
            width = base_channels * int(m)
            hidden = max(1, width // 2) if bottleneck else width
            if gate and n > 0:
                blocks_ = [GatedResidualStack(width, n, hidden)]
            else:
                blocks_ = [ResidualBlock(width, hidden) for _ in range(n)]
            stages.append(nn.Sequential(DownsampleBlock(prev, width), *blocks_))
            widths.append(width)
            prev = width
        self.stages = nn.ModuleList(stages)
        head: list[nn.Module] = []
        if out_channels is not None:
            head.append(ConvNormAct(prev, out_channels, 1))
            widths[-1] = out_channels
        if out_gate:
            head.append(ChannelGate(widths[-1]))
        self.head = nn.Sequential(*head)
        #: channels of each returned feature map
        self.stage_channels: tuple[int, ...] = tuple(widths)
        #: stride (relative to the input) of each returned feature map
        self.strides: tuple[int, ...] = tuple(2 ** (i + 2) for i in range(len(blocks)))

        self.apply(init_weights)
        if pretrained_path is not None:
            load_state_dict_file(self, pretrained_path)

    @property
    def out_channels(self) -> int:
        """Channels of the last feature map."""
        return self.stage_channels[-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_image(x, self.in_channels)
        h = self.stem(self.coords(self.normalize(x)))
        feats = []
        for i, stage in enumerate(self.stages):
            h = stage(h)
            if i == len(self.stages) - 1:
                h = self.head(h)
            feats.append(h)
        return feats
