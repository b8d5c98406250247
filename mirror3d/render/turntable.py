"""Turntable renders: a mesh seen from a full circle of azimuths, as a GIF and a PNG sheet.

``python -m mirror3d turntable`` renders the CASL template sphere under SH lighting with a
procedural texture (the main job's output until training lands).
"""

from __future__ import annotations

import argparse
import colorsys
import math
import pathlib

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from mirror3d.render.camera import look_at_camera
from mirror3d.render.renderer import MeshRenderer
from mirror3d.render.sphere import template_mesh

__all__ = ["render_turntable", "save_gif", "contact_sheet", "demo_texture", "run_turntable",
           "add_arguments", "run"]


def demo_texture(height: int = 256, width: int = 64) -> torch.Tensor:
    """A texture that shows orientation: hue follows u, bands follow v. Returns (3, H, W)."""
    img = np.zeros((height, width, 3), dtype=np.float32)
    for j in range(width):
        r, g, b = colorsys.hsv_to_rgb(j / width, 0.65, 1.0)
        img[:, j] = (r, g, b)
    bands = ((np.arange(height) // max(1, height // 16)) % 2).astype(np.float32)
    img *= (0.65 + 0.35 * bands)[:, None, None]
    return torch.from_numpy(img).permute(2, 0, 1).contiguous()


@torch.no_grad()
def render_turntable(
    verts: torch.Tensor,
    faces: torch.Tensor,
    face_uvs: torch.Tensor,
    texture: torch.Tensor,
    light: torch.Tensor,
    renderer: MeshRenderer,
    frames: int = 36,
    elevation: float = 10.0,
    distance: float = 4.0,
    batch_size: int = 12,
    progress: bool = True,
) -> list[np.ndarray]:
    """Render ``frames`` views at azimuths evenly spaced over 360°.

    Args:
        verts: (V, 3).  faces: (F, 3).  face_uvs: (F, 3, 2).  texture: (3, Ht, Wt).  light: (9,).
    Returns:
        a list of H×W×3 uint8 frames.
    """
    if frames < 1:
        raise ValueError(f"frames: expected >= 1, got {frames}")
    azimuths = torch.arange(frames, dtype=torch.float32) * (360.0 / frames)
    out: list[np.ndarray] = []
    steps = range(0, frames, batch_size)
    for s in tqdm(steps, desc="turntable", unit="batch", disable=not progress):
        az = azimuths[s : s + batch_size]
        n = az.shape[0]
        cam = look_at_camera(az, torch.full((n,), float(elevation)), torch.full((n,), float(distance)))
        res = renderer.render(verts[None].expand(n, -1, -1), faces, face_uvs,
                              texture[None].expand(n, -1, -1, -1), cam, light[None].expand(n, -1))
        rgb = (res.rgb.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).round()
        out.extend(rgb.astype(np.uint8))
    return out


def save_gif(frames: list[np.ndarray], path: str | pathlib.Path, fps: float = 12.0,
             scale: int = 2) -> pathlib.Path:
    """Write frames (H×W×3 uint8) as a looping GIF, upscaled ``scale``× (nearest)."""
    path = pathlib.Path(path)
    imgs = [Image.fromarray(f).resize((f.shape[1] * scale, f.shape[0] * scale), Image.NEAREST)
            for f in frames]
    tmp = path.with_name(path.name + ".tmp")
    imgs[0].save(tmp, format="GIF", save_all=True, append_images=imgs[1:],
                 duration=int(1000 / fps), loop=0)
    tmp.replace(path)
    return path


def contact_sheet(frames: list[np.ndarray], path: str | pathlib.Path, columns: int | None = None,
                  pad: int = 2) -> pathlib.Path:
    """Tile frames into one PNG (white padding)."""
    path = pathlib.Path(path)
    n = len(frames)
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    h, w = frames[0].shape[:2]
    sheet = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), 255, np.uint8)
    for k, f in enumerate(frames):
        r, c = divmod(k, columns)
        sheet[pad + r * (h + pad): pad + r * (h + pad) + h,
              pad + c * (w + pad): pad + c * (w + pad) + w] = f
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(sheet).save(tmp, format="PNG")
    tmp.replace(path)
    return path


def run_turntable(cfg, name: str | None = None, progress: bool = True) -> pathlib.Path:
    """Render the template turntable for a :class:`mirror3d.config.TurntableConfig`.

    Returns the run directory (``<out_dir>/<name>``) holding ``turntable.gif``,
    ``turntable_sheet.png`` and ``config.yaml``.
    """
    from mirror3d.platform.rundir import final_path, run_directory

    w, h = cfg.render.image_size
    renderer = MeshRenderer((h, w), sigma=cfg.render.sigma)
    verts, faces, uvs = template_mesh(cfg.render.ellipsoid)
    torch.manual_seed(cfg.seed)
    texture = demo_texture(2 * h, w)
    light = torch.tensor(cfg.light, dtype=torch.float32)
    out_dir = pathlib.Path(cfg.out_dir)
    with run_directory(out_dir.name, name, root=out_dir.parent, config=cfg) as tmp:
        frames = render_turntable(verts, faces, uvs, texture, light, renderer, cfg.frames,
                                  cfg.elevation, cfg.distance, progress=progress)
        save_gif(frames, tmp / "turntable.gif")
        contact_sheet(frames, tmp / "turntable_sheet.png")
        final = final_path(tmp)
    return final


# ------------------------------------------------------------------------------ CLI command
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mirror3d.cli import add_config_arguments
    from mirror3d.config import TurntableConfig

    parser.add_argument("--name", default=None, help="run name (default: a timestamp)")
    add_config_arguments(parser, TurntableConfig)


def run(args: argparse.Namespace) -> int:
    from mirror3d.cli import config_from_args
    from mirror3d.config import TurntableConfig

    cfg = config_from_args(TurntableConfig, args)
    final = run_turntable(cfg, name=args.name)
    print(f"turntable: wrote {final / 'turntable.gif'} and {final / 'turntable_sheet.png'}")
    return 0
