"""Job ``turntable``: the CASL template sphere rendered from a full circle of azimuths under SH
lighting with an orientation texture, as ``turntable.gif`` and ``turntable_sheet.png``.

    python -m mirror3d turntable --frames 12 --render.image_size 64,128 --elevation 20
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field

import torch

from mirror3d.render.config import RenderConfig
from mirror3d.render.renderer import MeshRenderer
from mirror3d.render.sphere import template_mesh
from mirror3d.render.turntable import demo_texture, render_turntable
from mirror3d.utils import storage
from mirror3d.utils.config import ConfigError
from mirror3d.utils.pictures import save_gif, save_sheet
from mirror3d.utils.preflight import check_output
from mirror3d.utils.rundir import final_path, run_directory

__all__ = ["CONFIG", "TurntableConfig", "run", "run_turntable"]


@dataclass
class TurntableConfig:
    """A turntable render of the template sphere."""

    render: RenderConfig = field(default_factory=RenderConfig)
    frames: int = field(default=36, metadata={"range": (1, 3600), "help": "number of azimuth steps"})
    elevation: float = field(
        default=10.0, metadata={"range": (-90.0, 90.0), "help": "camera elevation in degrees"}
    )
    distance: float = field(
        default=4.0, metadata={"range": (0.5, 100.0), "help": "camera distance from the look-at point"}
    )
    out_dir: str = field(default="runs/turntable", metadata={"help": "output directory"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    light: tuple[float, ...] = field(
        default=(3.0, 0.3, 0.3, 0.3, 0.0, 0.0, 0.0, 0.0, 0.0),
        metadata={"help": "9 spherical-harmonic lighting coefficients"},
    )

    name: str = field(default="", metadata={
        "help": "run name (default: a timestamp); an existing run is refused unless --overwrite"})
    overwrite: bool = field(default=False, metadata={
        "help": "replace the run of this name (when the new one is complete)"})

    def validate(self) -> None:
        if len(self.light) != 9:
            raise ConfigError(
                f"light: expected exactly 9 spherical-harmonic coefficients, got {len(self.light)}"
            )


CONFIG = TurntableConfig


def run_turntable(cfg: TurntableConfig, progress: bool = True) -> pathlib.Path:
    """Render the template turntable; returns the run directory (``<out_dir>/<name>``) holding
    ``turntable.gif``, ``turntable_sheet.png`` and ``config.yaml``."""
    check_output(cfg.out_dir, "out_dir")  # not a file, not under one, writable
    w, h = cfg.render.image_size
    renderer = MeshRenderer((h, w), sigma=cfg.render.sigma)
    verts, faces, uvs = template_mesh(cfg.render.ellipsoid)
    torch.manual_seed(cfg.seed)
    texture = demo_texture(2 * h, w)
    light = torch.tensor(cfg.light, dtype=torch.float32)
    parent, job = storage.split(cfg.out_dir)  # a folder or a storage URI
    with run_directory(job, cfg.name or None, root=parent, config=cfg,
                       overwrite=cfg.overwrite) as tmp:
        frames = render_turntable(verts, faces, uvs, texture, light, renderer, cfg.frames,
                                  cfg.elevation, cfg.distance, progress=progress)
        save_gif(frames, tmp / "turntable.gif")
        save_sheet(frames, tmp / "turntable_sheet.png")
        final = final_path(tmp)
    return final


def run(cfg: TurntableConfig) -> int:
    final = run_turntable(cfg)
    print(f"turntable: wrote {final / 'turntable.gif'} and {final / 'turntable_sheet.png'}")
    return 0
