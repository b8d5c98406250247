"""How hard is a re-id split? The raw-pixel nearest-neighbour floor.

Every image becomes a feature by itself: resized to a small size (default 32×64, W×H,
bilinear), RGB (or grayscale) in [0, 1], flattened and L2-normalised; queries are ranked against
the gallery by cosine similarity and scored with the Market-1501 protocol
(:func:`mirror3d.metrics.reid.evaluate`). Any learned model should beat this number.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import numpy as np
from PIL import Image

from mirror3d.data.readers.reid import read_market1501
from mirror3d.metrics.reid import evaluate

__all__ = ["raw_pixel_features", "raw_pixel_floor"]


def raw_pixel_features(paths: list[str], size: tuple[int, int] = (32, 64), color: bool = True) -> np.ndarray:
    """(N, D) float32 L2-normalised raw-pixel features; ``size`` is (W, H)."""
    w, h = size
    if w < 1 or h < 1:
        raise ValueError(f"size: expected (W, H) >= 1, got {size}")
    mode = "RGB" if color else "L"
    feats = np.empty((len(paths), w * h * (3 if color else 1)), np.float32)
    for i, p in enumerate(paths):
        with Image.open(p) as img:
            arr = np.asarray(img.convert(mode).resize((w, h), Image.BILINEAR), np.float32) / 255.0
        feats[i] = arr.reshape(-1)
    norm = np.linalg.norm(feats, axis=1, keepdims=True)
    return feats / np.maximum(norm, 1e-12)


def raw_pixel_floor(root: str | os.PathLike, size: tuple[int, int] = (32, 64),
                    color: bool = True) -> dict[str, Any]:
    """Raw-pixel nearest neighbour on a Market-1501 tree's query / gallery split.

    Args:
        root: a SynthPeople directory (holding ``Market-1501/``) or a Market-1501 root.
        size: (W, H) the images are resized to.  color: RGB (True) or grayscale.
    Returns:
        dict: rank1, rank5, rank10, map_trapezoid, map_mean_precision (fractions),
        num_queries, num_gallery, num_valid_queries, feature (a description).
    """
    root = pathlib.Path(root)
    market = root / "Market-1501" if (root / "Market-1501").is_dir() else root
    records, _ = read_market1501(market)
    query = [r for r in records if r.split == "query"]
    gallery = [r for r in records if r.split == "gallery"]
    if not query or not gallery:
        raise ValueError(f"root: {market} has {len(query)} query and {len(gallery)} gallery images; "
                         "expected both to be non-empty")
    qf = raw_pixel_features([r.path for r in query], size, color)
    gf = raw_pixel_features([r.path for r in gallery], size, color)
    res = evaluate(qf, gf, [r.pid for r in query], [r.pid for r in gallery],
                   [r.camid for r in query], [r.camid for r in gallery], topk=10)
    return {
        "rank1": float(res["rank1"]), "rank5": float(res["rank5"]), "rank10": float(res["rank10"]),
        "map_trapezoid": float(res["map_trapezoid"]),
        "map_mean_precision": float(res["map_mean_precision"]),
        "num_queries": len(query), "num_gallery": len(gallery),
        "num_valid_queries": int(res["num_valid_queries"]),
        "feature": f"raw pixels {size[0]}x{size[1]} {'RGB' if color else 'gray'}, L2-normalised, cosine",
    }
