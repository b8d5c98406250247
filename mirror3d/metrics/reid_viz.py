"""Ranked re-id results as a picture: one row per query, its image then its top-k matches.

Gallery items are framed green when correct (same pid, other camera) and red when wrong; junk
(pid -1, or the query's pid in the query's camera) is skipped exactly as in
:func:`mirror3d.metrics.reid.evaluate`. Under each image: the rank (1-based) and the pid.

The layout is fixed by :class:`GridLayout`, so the picture size and every cell position are
known (:meth:`GridLayout.image_size`, :meth:`GridLayout.frame_box`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["GridLayout", "ranked_results_grid", "CORRECT_COLOR", "WRONG_COLOR", "QUERY_COLOR"]

CORRECT_COLOR = (0, 170, 0)
WRONG_COLOR = (220, 0, 0)
QUERY_COLOR = (40, 40, 40)
BACKGROUND = (255, 255, 255)
TEXT_COLOR = (0, 0, 0)


@dataclass(frozen=True)
class GridLayout:
    """Pixel geometry of the grid.

    A cell is a frame ``border`` px wide around a ``cell_w`` x ``cell_h`` image, with a
    ``label_h`` px text strip below; cells are separated by ``pad`` px, and the query column by
    an extra ``query_gap`` px.
    """

    cell_w: int = 64
    cell_h: int = 128
    border: int = 4
    pad: int = 6
    label_h: int = 14
    query_gap: int = 10

    @property
    def col_step(self) -> int:
        return self.cell_w + 2 * self.border + self.pad

    @property
    def row_step(self) -> int:
        return self.cell_h + 2 * self.border + self.label_h + self.pad

    def image_size(self, num_rows: int, topk: int) -> tuple[int, int]:
        """(width, height) of a grid with ``num_rows`` queries and ``topk`` matches each."""
        width = self.pad + (topk + 1) * self.col_step + self.query_gap
        height = self.pad + num_rows * self.row_step
        return width, height

    def frame_box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), end-exclusive, of the frame of a cell; col 0 is the query."""
        x0 = self.pad + col * self.col_step + (self.query_gap if col > 0 else 0)
        y0 = self.pad + row * self.row_step
        return x0, y0, x0 + self.cell_w + 2 * self.border, y0 + self.cell_h + 2 * self.border


def _load_image(item: Any, name: str) -> Image.Image:
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        if not path.is_file():
            raise FileNotFoundError(f"{name}: image file not found: {path}")
        with Image.open(path) as im:
            return im.convert("RGB")
    a = np.asarray(item)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise ValueError(f"{name}: expected a path or an (H, W, 3) uint8 array, got shape {a.shape}, dtype {a.dtype}")
    return Image.fromarray(np.ascontiguousarray(a))


def _fit(img: Image.Image, w: int, h: int) -> Image.Image:
    """Resize keeping the aspect ratio, centred on a white w x h canvas."""
    scale = min(w / img.width, h / img.height)
    nw, nh = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    canvas = Image.new("RGB", (w, h), BACKGROUND)
    canvas.paste(img.resize((nw, nh), Image.BILINEAR), ((w - nw) // 2, (h - nh) // 2))
    return canvas


def _labels(x: Any, name: str, length: int) -> np.ndarray:
    a = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)
    if a.ndim != 1 or a.shape[0] != length or a.dtype.kind not in "iu":
        raise ValueError(f"{name}: expected {length} integer labels, got shape {a.shape}, dtype {a.dtype}")
    return a.astype(np.int64)


def ranked_results_grid(
    query_paths_or_images: Sequence[Any],
    gallery_paths_or_images: Sequence[Any],
    ranked_indices: Any,
    query_pids: Any,
    gallery_pids: Any,
    query_camids: Any,
    gallery_camids: Any,
    out_path: str | os.PathLike,
    topk: int = 10,
    query_indices: Sequence[int] | None = None,
    layout: GridLayout = GridLayout(),
) -> Path:
    """Write a PNG with one row per chosen query: the query, then its top-k non-junk matches.

    Args:
        query_paths_or_images: Q images (paths, PIL images or (H, W, 3) uint8 arrays). For
            point clouds pass rendered pictures.
        gallery_paths_or_images: G images (same kinds); only the shown ones are loaded.
        ranked_indices: (Q, L) gallery indices, best first (e.g.
            :func:`mirror3d.metrics.reid.rank_gallery`). Junk is skipped, so L should exceed
            ``topk`` by the number of junk items expected; a row with fewer than ``topk``
            non-junk entries leaves the remaining cells blank.
        query_pids, query_camids: (Q,) integers. gallery_pids, gallery_camids: (G,) integers.
        out_path: PNG to write (parent directories are created). Written to a temporary file
            in the same directory, then renamed, so readers never see a partial file.
        topk: matches shown per query.
        query_indices: which queries get a row, in order (default: all Q).
        layout: pixel geometry; the image is ``layout.image_size(rows, topk)``.

    Returns:
        The written path.
    """
    n_q, n_g = len(query_paths_or_images), len(gallery_paths_or_images)
    if isinstance(topk, bool) or not isinstance(topk, (int, np.integer)) or topk < 1:
        raise ValueError(f"topk: expected a positive integer, got {topk!r}")
    ranked = np.asarray(ranked_indices.detach().cpu() if hasattr(ranked_indices, "detach") else ranked_indices)
    if ranked.ndim != 2 or ranked.shape[0] != n_q or ranked.dtype.kind not in "iu":
        raise ValueError(
            f"ranked_indices: expected a ({n_q}, L) integer array, got shape {ranked.shape}, dtype {ranked.dtype}"
        )
    if ranked.size and (ranked.min() < 0 or ranked.max() >= n_g):
        raise ValueError(f"ranked_indices: gallery indices must be in [0, {n_g})")
    q_pids = _labels(query_pids, "query_pids", n_q)
    q_cams = _labels(query_camids, "query_camids", n_q)
    g_pids = _labels(gallery_pids, "gallery_pids", n_g)
    g_cams = _labels(gallery_camids, "gallery_camids", n_g)
    rows = list(range(n_q)) if query_indices is None else [int(q) for q in query_indices]
    if not rows:
        raise ValueError("query_indices: no query selected")
    for q in rows:
        if not 0 <= q < n_q:
            raise ValueError(f"query_indices: {q} is out of range [0, {n_q})")

    width, height = layout.image_size(len(rows), topk)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    b = layout.border

    def put(row: int, col: int, img: Image.Image, color: tuple[int, int, int], label: str) -> None:
        x0, y0, x1, y1 = layout.frame_box(row, col)
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=color)
        canvas.paste(_fit(img, layout.cell_w, layout.cell_h), (x0 + b, y0 + b))
        draw.text((x0 + 1, y1 + 1), label, fill=TEXT_COLOR, font=font)

    for r, q in enumerate(rows):
        put(r, 0, _load_image(query_paths_or_images[q], f"query_paths_or_images[{q}]"), QUERY_COLOR,
            f"query id {q_pids[q]}")
        shown = 0
        for j in ranked[q]:
            if shown == topk:
                break
            gp, gc = g_pids[j], g_cams[j]
            if gp == -1 or (gp == q_pids[q] and gc == q_cams[q]):
                continue  # junk, as in the metric
            shown += 1
            correct = gp == q_pids[q]
            put(r, shown, _load_image(gallery_paths_or_images[j], f"gallery_paths_or_images[{j}]"),
                CORRECT_COLOR if correct else WRONG_COLOR, f"#{shown} id {gp}")

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            canvas.save(fh, format="PNG")
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return out
