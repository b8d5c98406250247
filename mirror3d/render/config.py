"""Renderer settings as a config section (DIB-R semantics: see docs/architecture.md and the
renderer's README section)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["RenderConfig"]


@dataclass
class RenderConfig:
    """Renderer settings (DIB-R semantics: Chen et al. 2019, §3)."""

    image_size: tuple[int, int] = field(
        default=(64, 128),
        metadata={"range": (1, 4096), "metavar": "W,H", "help": "output image size in pixels, W,H"},
    )
    sigma: float = field(
        default=7000.0,
        metadata={"range": (0.0, None), "help": "soft-silhouette sharpness: coverage exp(-sigma*d^2) at NDC distance d"},
    )
    ellipsoid: float = field(
        default=2.0,
        metadata={
            "range": (1e-3, None),
            "help": "template x and z are divided by this factor (2 for people, 1 for birds)",
        },
    )
    background: Literal["white", "black", "image"] = field(
        default="white", metadata={"help": "what fills pixels outside the mesh"}
    )
