"""Ranked-results picture: size, frame colours, junk skipped, paths and arrays, atomic write."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mirror3d.metrics.reid_viz import (
    CORRECT_COLOR,
    QUERY_COLOR,
    WRONG_COLOR,
    GridLayout,
    ranked_results_grid,
)


def solid(color, h=20, w=10):
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[:] = color
    return img


# Gallery item j has the unique colour (10*j, 255 - 10*j, 77).
GALLERY_COLORS = [(10 * j, 255 - 10 * j, 77) for j in range(8)]
# pid / camera per gallery item.
G_PIDS = [1, 1, 2, -1, 1, 0, 3, 3]
G_CAMS = [0, 1, 1, 1, 2, 1, 0, 1]
# Queries: q0 pid 1 cam 0, q1 pid 3 cam 0, q2 pid 2 cam 5.
Q_PIDS = [1, 3, 2]
Q_CAMS = [0, 0, 5]
RANKED = np.array([
    [0, 1, 2, 3, 4, 5, 6, 7],  # q0: 0 junk (same pid+cam), 3 junk (pid -1)
    [6, 5, 7, 1, 0, 2, 3, 4],  # q1: 6 junk (same pid+cam)
    [3, 2, 0, 1, 4, 5, 6, 7],  # q2: 3 junk
])
# After junk removal, the first 3 shown per query, and whether each is correct (hand-worked).
EXPECTED = {
    0: [(1, True), (2, False), (4, True)],
    1: [(5, False), (7, True), (1, False)],
    2: [(2, True), (0, False), (1, False)],
}


def pixel(img, xy):
    return img.getpixel(xy)[:3]


@pytest.mark.parametrize("use_paths", [False, True])
def test_grid_size_frames_and_cells(tmp_path, use_paths):
    gallery = [solid(c) for c in GALLERY_COLORS]
    queries = [solid((5, 5, 200 + q)) for q in range(3)]
    if use_paths:
        paths = []
        for j, arr in enumerate(gallery):
            p = tmp_path / "imgs" / f"g{j}.png"
            p.parent.mkdir(exist_ok=True)
            Image.fromarray(arr).save(p)
            paths.append(str(p))
        gallery = paths
    layout = GridLayout()
    out = ranked_results_grid(queries, gallery, RANKED, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS,
                              tmp_path / "sub" / "grid.png", topk=3, layout=layout)
    assert out.is_file()
    assert [p.name for p in out.parent.iterdir()] == ["grid.png"]  # no temp file left over
    img = Image.open(out)
    assert img.format == "PNG"
    w, h = img.size
    assert (w, h) == (layout.pad + 4 * layout.col_step + layout.query_gap, layout.pad + 3 * layout.row_step)
    assert (w, h) == layout.image_size(3, 3)
    for row, q in enumerate(range(3)):
        x0, y0, x1, y1 = layout.frame_box(row, 0)
        assert pixel(img, (x0 + 1, y0 + 1)) == QUERY_COLOR
        assert pixel(img, ((x0 + x1) // 2, (y0 + y1) // 2)) == (5, 5, 200 + q)
        for col, (g, correct) in enumerate(EXPECTED[q], start=1):
            x0, y0, x1, y1 = layout.frame_box(row, col)
            color = CORRECT_COLOR if correct else WRONG_COLOR
            # Frame pixels on all four sides.
            for xy in [(x0 + 1, y0 + 1), (x1 - 2, (y0 + y1) // 2), ((x0 + x1) // 2, y1 - 2), (x0, y1 - 1)]:
                assert pixel(img, xy) == color, (q, col, xy)
            # The cell shows the expected gallery item (so junk was skipped).
            assert pixel(img, ((x0 + x1) // 2, (y0 + y1) // 2)) == GALLERY_COLORS[g], (q, col)
            # Some label text is drawn under the frame.
            strip = np.asarray(img.crop((x0, y1, x1, y1 + layout.label_h)).convert("L"))
            assert strip.min() < 128


def test_rows_follow_query_indices_and_short_rankings_leave_blank_cells(tmp_path):
    gallery = [solid(c) for c in GALLERY_COLORS]
    queries = [solid((5, 5, 200 + q)) for q in range(3)]
    ranked = np.array([[0, 1, 2], [6, 5, 7], [3, 2, 0]])  # q2: only two non-junk entries
    layout = GridLayout(cell_w=32, cell_h=48, border=3, pad=4, label_h=12, query_gap=6)
    out = ranked_results_grid(queries, gallery, ranked, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS,
                              tmp_path / "g.png", topk=3, query_indices=[2, 0], layout=layout)
    img = Image.open(out)
    assert img.size == layout.image_size(2, 3)
    # Row 0 is query 2.
    x0, y0, x1, y1 = layout.frame_box(0, 0)
    assert pixel(img, ((x0 + x1) // 2, (y0 + y1) // 2)) == (5, 5, 202)
    x0, y0, x1, y1 = layout.frame_box(0, 1)
    assert pixel(img, (x0 + 1, y0 + 1)) == CORRECT_COLOR
    x0, y0, x1, y1 = layout.frame_box(0, 2)
    assert pixel(img, (x0 + 1, y0 + 1)) == WRONG_COLOR
    x0, y0, x1, y1 = layout.frame_box(0, 3)  # nothing left to show
    assert pixel(img, (x0 + 1, y0 + 1)) == (255, 255, 255)
    # Row 1 is query 0: [junk, pos, neg].
    x0, y0, x1, y1 = layout.frame_box(1, 1)
    assert pixel(img, (x0 + 1, y0 + 1)) == CORRECT_COLOR
    assert pixel(img, ((x0 + x1) // 2, (y0 + y1) // 2)) == GALLERY_COLORS[1]


def test_bad_input(tmp_path):
    gallery = [solid(c) for c in GALLERY_COLORS]
    queries = [solid((0, 0, 0)) for _ in range(3)]
    args = (queries, gallery, RANKED, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, tmp_path / "x.png")
    with pytest.raises(ValueError, match="ranked_indices"):
        ranked_results_grid(queries, gallery, RANKED + 1, *args[3:])
    with pytest.raises(ValueError, match="gallery_pids"):
        ranked_results_grid(queries, gallery, RANKED, Q_PIDS, G_PIDS[:-1], Q_CAMS, G_CAMS, tmp_path / "x.png")
    with pytest.raises(ValueError, match="query_indices"):
        ranked_results_grid(*args, query_indices=[3])
    bad_gallery = list(gallery)
    bad_gallery[1] = np.zeros((4, 4), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"gallery_paths_or_images\[1\]"):
        ranked_results_grid(queries, bad_gallery, *args[2:])
    with pytest.raises(FileNotFoundError, match="nope.png"):
        ranked_results_grid([str(tmp_path / "nope.png")] * 3, gallery, *args[2:])
    assert not (tmp_path / "x.png").exists()
