"""Pictures of a trained CASL model (Zheng et al. 2022, "3D Magic Mirror"), written by the
``eval-casl`` job (:mod:`mirror3d.engine.casl_eval`) under ``RUN_DIR/eval/``:

- ``reconstructions.png`` — one column per chosen test image: the input (real background),
  the input on white (GT mask), the reconstruction, the prediction turned +90° and −90°, and
  the texture map (UV image over its flipped copy, 2H tall).
- ``turntables/<k>_<name>.gif`` — per chosen image: the input next to the prediction rendered
  at azimuth −180..170 in steps of 10 (other camera parameters as predicted).
- ``texture_swap.png`` — shape and camera of row i with the texture of column j (the header
  row and column show the source inputs; the diagonal is the plain reconstruction).
- ``histograms.png`` — predicted azimuth, elevation, distance, look-at x/y and mean |δ| over
  the test set (like the CASL paper's Fig. 9); the truth overlaid on SynthPeople.
- ``template_evolution.gif`` — the prototype after every update (``RUN_DIR/templates/
  epoch_XXXX.obj`` from the trainer), front and side, grey with directional light.
- ``meshes/<k>_<name>.obj`` (+ .mtl + .png) and ``.glb`` — the textured meshes.
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

matplotlib.use("Agg", force=False)  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402  (after the backend choice)

from mirror3d.models.casl.inference import CameraParams, Reconstruction
from mirror3d.render.camera import look_at_camera
from mirror3d.render.mesh_io import load_mesh
from mirror3d.render.renderer import MeshRenderer
from mirror3d.utils.pictures import save_gif

__all__ = [
    "to_uint8", "safe_name", "repeat_attrs", "select_attrs", "chosen_indices",
    "reconstruction_grid", "turntable_frames", "write_turntables", "texture_swap_renders",
    "texture_swap_grid", "camera_histograms", "template_files", "template_evolution",
    "export_meshes", "TURNTABLE_AZIMUTHS",
]

#: Azimuths of the turntable GIFs (the reference trainer's sweep): −180, −170, …, 170.
TURNTABLE_AZIMUTHS = tuple(range(-180, 180, 10))


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
def to_uint8(img: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] → (H, W, 3) uint8."""
    if not isinstance(img, torch.Tensor) or img.dim() != 3 or img.shape[0] != 3:
        raise ValueError(f"img: expected a (3, H, W) tensor, got "
                         f"{tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__}")
    return (img.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


def safe_name(path: str) -> str:
    """A file-name-safe stem of an image path (``0001_c1s1_001000_01.jpg.png`` →
    ``0001_c1s1_001000_01``)."""
    name = pathlib.Path(str(path)).name
    for _ in range(3):
        stem, dot, ext = name.rpartition(".")
        if dot and ext.lower() in ("png", "jpg", "jpeg", "bmp", "webp"):
            name = stem
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "image"


def select_attrs(attrs, index) -> object:
    """CASL attributes restricted to ``index`` (a (K,) index tensor or list)."""
    idx = torch.as_tensor(index, dtype=torch.long, device=attrs.azimuth.device)
    return attrs.replace(**{k: v[idx] for k, v in attrs.items()})


def repeat_attrs(attrs, i: int, n: int) -> object:
    """Sample ``i`` of the attributes repeated ``n`` times (a batch of n)."""
    return select_attrs(attrs, [i] * n)


def _font(size: int = 10):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # older Pillow
        return ImageFont.load_default()


def _upscale(img: np.ndarray, scale: int) -> np.ndarray:
    if scale == 1:
        return img
    return np.asarray(Image.fromarray(img).resize((img.shape[1] * scale, img.shape[0] * scale),
                                                  Image.NEAREST))


def _save_png(img: np.ndarray | Image.Image, path: pathlib.Path) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    (img if isinstance(img, Image.Image) else Image.fromarray(img)).save(path, format="PNG")
    return path


def _labelled_grid(cells: list[list[np.ndarray | None]], row_labels: Sequence[str],
                   col_labels: Sequence[str] | None, pad: int = 2, label_w: int = 64,
                   label_h: int = 14) -> Image.Image:
    """Tile a rows×cols table of uint8 images (None = blank) on white with text labels.

    Each row is as tall as its tallest cell, each column as wide as its widest; cells are
    centred vertically."""
    nrows, ncols = len(cells), max(len(r) for r in cells)
    heights = [max((c.shape[0] for c in r if c is not None), default=0) for r in cells]
    widths = [max((r[j].shape[1] for r in cells if j < len(r) and r[j] is not None), default=0)
              for j in range(ncols)]
    top = label_h if col_labels else 0
    sheet = Image.new("RGB", (label_w + sum(widths) + pad * (ncols + 1),
                              top + sum(heights) + pad * (nrows + 1)), "white")
    draw = ImageDraw.Draw(sheet)
    font = _font()
    x0 = [label_w + pad + sum(widths[:j]) + pad * j for j in range(ncols)]
    y0 = [top + pad + sum(heights[:i]) + pad * i for i in range(nrows)]
    if col_labels:
        for j, t in enumerate(col_labels[:ncols]):
            draw.text((x0[j] + 1, 1), str(t), fill=(0, 0, 0), font=font)
    for i, row in enumerate(cells):
        draw.text((2, y0[i] + heights[i] // 2 - 5), str(row_labels[i]), fill=(0, 0, 0), font=font)
        for j, c in enumerate(row):
            if c is not None:
                sheet.paste(Image.fromarray(c), (x0[j], y0[i] + (heights[i] - c.shape[0]) // 2))
    return sheet


# --------------------------------------------------------------------------------------------
# pictures
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def reconstruction_grid(path, model, x: torch.Tensor, attrs, names: Sequence[str],
                        scale: int = 2) -> pathlib.Path:
    """Input / reconstruction / side views / texture map, one column per image.

    Args:
        x: (K, 4, H, W) inputs (RGB with background + mask).  attrs: their attributes (K).
        names: K column labels.
    """
    rgb, mask = x[:, :3], x[:, 3:4]
    ori = rgb * mask + (1 - mask)
    rec = model.render(attrs).rgb
    plus = model.render(model.with_camera(attrs, azimuth=_wrap(attrs.azimuth + 90))).rgb
    minus = model.render(model.with_camera(attrs, azimuth=_wrap(attrs.azimuth - 90))).rgb
    rows = [("input", rgb), ("on white", ori), ("recon", rec), ("+90°", plus), ("-90°", minus),
            ("texture", attrs.texture)]
    cells = [[_upscale(to_uint8(t[k]), scale) for k in range(x.shape[0])] for _, t in rows]
    sheet = _labelled_grid(cells, [label.replace("°", "") for label, _ in rows],
                           [n[: 10] for n in names])
    return _save_png(sheet, path)


def _wrap(az: torch.Tensor) -> torch.Tensor:
    return torch.remainder(az + 180.0, 360.0) - 180.0


@torch.no_grad()
def turntable_frames(model, attrs, i: int, input_rgb: torch.Tensor | None = None,
                     azimuths: Sequence[float] = TURNTABLE_AZIMUTHS, batch_size: int = 12,
                     scale: int = 2) -> list[np.ndarray]:
    """Frames of sample ``i`` rendered at ``azimuths`` (degrees), other parameters predicted.

    With ``input_rgb`` (3, H, W) each frame shows the input on the left. Returns H×W×3 uint8
    frames (upscaled ``scale``× when an input is shown side by side)."""
    frames = []
    az_all = torch.as_tensor(list(azimuths), dtype=attrs.azimuth.dtype)
    for s in range(0, len(az_all), batch_size):
        az = az_all[s:s + batch_size]
        a = model.with_camera(repeat_attrs(attrs, i, az.numel()), azimuth=az.to(attrs.azimuth.device))
        out = model.render(a).rgb
        for k in range(out.shape[0]):
            f = to_uint8(out[k])
            if input_rgb is not None:
                sep = np.full((f.shape[0], 2, 3), 255, np.uint8)
                f = np.concatenate([to_uint8(input_rgb), sep, f], axis=1)
            frames.append(f)
    return frames


@torch.no_grad()
def texture_swap_renders(model, attrs) -> torch.Tensor:
    """(K, K, 3, H, W): entry (i, j) renders the shape, camera and light of sample i with the
    texture of sample j (on white); the diagonal is the plain reconstruction."""
    k = attrs.azimuth.shape[0]
    ii = torch.arange(k).repeat_interleave(k)
    jj = torch.arange(k).repeat(k)
    a = select_attrs(attrs, ii)
    a = a.replace(texture=attrs.texture[jj.to(attrs.texture.device)])
    out = model.render(a).rgb
    return out.reshape(k, k, *out.shape[1:])


@torch.no_grad()
def texture_swap_grid(path, model, x: torch.Tensor, attrs, scale: int = 2) -> pathlib.Path:
    """The :func:`texture_swap_renders` table as a PNG: row i shape/camera/light of image i,
    column j texture of image j; the first row and column show the source inputs."""
    k = x.shape[0]
    out = texture_swap_renders(model, attrs).flatten(0, 1)
    cells: list[list[np.ndarray | None]] = [[None] + [_upscale(to_uint8(x[j, :3]), scale) for j in range(k)]]
    for i in range(k):
        row = [_upscale(to_uint8(x[i, :3]), scale)]
        row += [_upscale(to_uint8(out[i * k + j]), scale) for j in range(k)]
        cells.append(row)
    sheet = _labelled_grid(cells, ["texture ->"] + [f"shape {i}" for i in range(k)],
                           ["input"] + [f"tex {j}" for j in range(k)], label_w=70)
    return _save_png(sheet, path)


def camera_histograms(path, predicted: Mapping[str, Sequence[float]],
                      truth: Mapping[str, Sequence[float]] | None = None) -> pathlib.Path:
    """Histograms of predicted azimuth, elevation, distance, look-at x and y, and mean |δ|
    (keys ``azimuth``, ``elevation``, ``distance``, ``bias_x``, ``bias_y``, ``mean_abs_delta``),
    with the truth overlaid where ``truth`` has the same key."""

    panels = [("azimuth", "azimuth (deg)", np.arange(-180, 181, 15)),
              ("elevation", "elevation (deg)", 20), ("distance", "distance", 20),
              ("bias_x", "look-at x", 20), ("bias_y", "look-at y", 20),
              ("mean_abs_delta", "mean |δ|", 20)]
    fig, axes = plt.subplots(2, 3, figsize=(10, 5.5))
    n = len(next(iter(predicted.values()), []))
    for ax, (key, title, bins) in zip(axes.flat, panels):
        p = np.asarray(predicted.get(key, []), dtype=float)
        t = np.asarray(truth.get(key, []), dtype=float) if truth else np.zeros(0)
        if isinstance(bins, int):
            both = np.concatenate([p, t]) if t.size else p
            lo, hi = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
            if hi - lo < 1e-9:
                lo, hi = lo - 0.5 * max(abs(lo), 1e-3), hi + 0.5 * max(abs(hi), 1e-3)
            bins = np.linspace(lo, hi, bins + 1)
        if p.size:
            ax.hist(p, bins=bins, color="tab:blue", alpha=0.7, label="predicted")
        if t.size:
            ax.hist(t, bins=bins, color="tab:orange", alpha=0.5, label="truth")
        ax.set_title(title)
        if t.size:
            ax.legend(fontsize=7)
    fig.suptitle(f"CASL predictions on the held-out split (N={n})")
    fig.tight_layout()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=90)
    plt.close(fig)
    return path


#: Light of the template pictures: ambient plus a light from the upper right front.
_GREY_LIGHT = (2.0, 0.6, 0.8, 0.6, 0.0, 0.0, 0.0, 0.0, 0.0)


@torch.no_grad()
def _grey_views(renderer, verts: torch.Tensor, faces: torch.Tensor, face_uvs: torch.Tensor,
                azimuths=(0.0, 90.0), elevation: float = 10.0, distance: float = 3.2) -> np.ndarray:
    n = len(azimuths)
    h, w = renderer.image_size
    tex = torch.full((n, 3, 8, 8), 0.75)
    cam = look_at_camera(torch.tensor(azimuths, dtype=torch.float32), torch.full((n,), elevation),
                         torch.full((n,), distance))
    light = torch.tensor(_GREY_LIGHT, dtype=torch.float32)[None].expand(n, -1)
    out = renderer.render(verts[None].expand(n, -1, -1).float(), faces, face_uvs, tex, cam, light)
    imgs = [to_uint8(out.rgb[k]) for k in range(n)]
    sep = np.full((h, 2, 3), 255, np.uint8)
    return np.concatenate([x for im in imgs for x in (im, sep)][:-1], axis=1)


def template_files(run_dir) -> list[tuple[str, pathlib.Path]]:
    """(label, path) of the prototype snapshots of a run: ``templates/epoch_XXXX.obj`` in epoch
    order."""
    out = []
    for p in sorted(pathlib.Path(run_dir, "templates").glob("epoch_*.obj")):
        m = re.fullmatch(r"epoch_(\d+)", p.stem)
        if m:
            out.append((int(m.group(1)), p))
    return [(f"epoch {e}", p) for e, p in sorted(out)]


@torch.no_grad()
def template_evolution(path, run_dir, template_init: torch.Tensor, faces: torch.Tensor,
                       face_uvs: torch.Tensor, size: tuple[int, int] = (96, 192),
                       fps: float = 4.0) -> pathlib.Path | None:
    """GIF of the prototype: the initial template, then every snapshot the trainer wrote
    (front and side view, labelled with the epoch and the largest move from the start).

    Returns None when the run has no snapshots."""
    snaps = template_files(run_dir)
    if not snaps:
        return None
    w, h = size
    renderer = MeshRenderer((h, w))
    init = template_init.detach().cpu().float()
    frames = []
    font = _font(11)
    for label, verts in [("initial", init)] + [(lab, load_mesh(p).verts) for lab, p in snaps]:
        if verts.shape != init.shape:
            raise ValueError(f"template snapshot {label}: {verts.shape[0]} vertices, expected "
                             f"{init.shape[0]} like the model's template")
        img = _grey_views(renderer, verts, faces.cpu(), face_uvs.cpu())
        canvas = Image.new("RGB", (img.shape[1], img.shape[0] + 28), "white")
        canvas.paste(Image.fromarray(img), (0, 28))
        d = ImageDraw.Draw(canvas)
        move = float((verts - init).abs().max())
        d.text((2, 1), label, fill=(0, 0, 0), font=font)
        d.text((2, 14), f"max move {move:.4f}", fill=(0, 0, 0), font=font)
        frames.append(np.asarray(canvas))
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_gif(frames, path, fps=fps, scale=1)


@torch.no_grad()
def export_meshes(out_dir, model, attrs, names: Sequence[str]) -> list[pathlib.Path]:
    """Write each sample's textured mesh as ``<name>.obj`` (+ .mtl + .png) and ``<name>.glb``
    through :meth:`Reconstruction.export`."""
    out_dir = pathlib.Path(out_dir)
    verts = model.vertices(attrs).cpu()
    written = []
    for k, name in enumerate(names):
        cam = CameraParams(float(attrs.azimuth[k]), float(attrs.elevation[k]),
                           float(attrs.distance[k]), tuple(float(v) for v in attrs.bias[k]))
        rec = Reconstruction(verts[k], model.faces.cpu(), model.face_uvs.cpu(),
                             attrs.texture[k].cpu(), attrs.light[k].cpu(), cam, model.image_size,
                             _model=model)
        for suffix in (".obj", ".glb"):
            written.append(rec.export(out_dir / f"{name}{suffix}"))
    return written


def write_turntables(out_dir, model, x: torch.Tensor, attrs, names: Sequence[str]) -> list[pathlib.Path]:
    """One turntable GIF per sample (input on the left, azimuth −180..170 step 10)."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, name in enumerate(names):
        frames = turntable_frames(model, attrs, k, x[k, :3])
        paths.append(save_gif(frames, out_dir / f"{name}.gif", fps=10.0, scale=2))
    return paths


def chosen_indices(n: int, k: int) -> list[int]:
    """k indices spread evenly over range(n) (all of them when n <= k)."""
    if n <= 0 or k <= 0:
        return []
    if n <= k:
        return list(range(n))
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, k)})

