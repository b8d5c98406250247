"""SynthPeople's ground truth looked up by image: the camera each Market-HQ image was rendered
from. Used only to *score* reconstructions and by the oracle-camera diagnostic of CASL training
(docs/casl-on-cpu.md), never by self-supervised training."""

from __future__ import annotations

import os
import pathlib

import torch

from mirror3d.data.synth.writer import read_ground_truth

__all__ = ["find_synth_root", "CameraTruth"]


def find_synth_root(data_root: str | os.PathLike) -> pathlib.Path | None:
    """The SynthPeople root of a data root: the root itself or its parent when it holds
    ``gt/images.parquet`` (the CASL data root is usually ``<synth>/Market-HQ``)."""
    p = pathlib.Path(data_root).resolve()
    for cand in (p, p.parent):
        if (cand / "gt" / "images.parquet").is_file():
            return cand
    return None


class CameraTruth:
    """The true camera of every Market-HQ image of a SynthPeople tree.

    ``cameras(paths)`` → dict of (B,) tensors ``azimuth, elevation, distance`` (degrees, units)
    and (B, 2) ``bias`` (look-at x, y), in the renderer's conventions.

    Raises:
        FileNotFoundError: ``data_root`` is not (inside) a SynthPeople tree.
        KeyError: an image that the ground truth does not list.
    """

    def __init__(self, data_root: str | os.PathLike) -> None:
        root = find_synth_root(data_root)
        if root is None:
            raise FileNotFoundError(f"data.root: {data_root} is not inside a SynthPeople tree "
                                    f"(no gt/images.parquet beside it)")
        self.root = root
        rows = read_ground_truth(root).to_pylist()
        self._by_path = {str((root / r["path"]).resolve()): (
            float(r["azimuth"]), float(r["elevation"]), float(r["distance"]),
            float(r["bx"]), float(r["by"])) for r in rows if r.get("tree") == "market_hq"}

    def __contains__(self, path: str) -> bool:
        return str(pathlib.Path(path).resolve()) in self._by_path

    def cameras(self, paths) -> dict[str, torch.Tensor]:
        vals = []
        for p in paths:
            key = str(pathlib.Path(p).resolve())
            if key not in self._by_path:
                raise KeyError(f"{p}: not an image of the SynthPeople tree {self.root}")
            vals.append(self._by_path[key])
        t = torch.tensor(vals, dtype=torch.float32).reshape(-1, 5)
        return {"azimuth": t[:, 0], "elevation": t[:, 1], "distance": t[:, 2], "bias": t[:, 3:5]}
