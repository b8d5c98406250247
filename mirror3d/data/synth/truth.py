"""SynthPeople's ground truth looked up by image: the camera each image was rendered from
(:class:`CameraTruth`, Market-HQ images) and the exact posed mesh and camera of any image of
either tree (:class:`SynthTruth`). Used to *score* reconstructions (``eval-casl``), by the
oracle-camera diagnostic of CASL training (docs/casl-on-cpu.md) and by the ``synth-truth``
lifting oracle (an upper bound that needs ground truth), never by self-supervised training."""

from __future__ import annotations

import os
import pathlib
from collections import OrderedDict

import numpy as np
import torch

from mirror3d.data.synth.body import PersonMesh, build_person
from mirror3d.data.synth.writer import load_recipes, read_ground_truth, synth_settings
from mirror3d.render.camera import Camera, look_at_camera

__all__ = ["find_synth_root", "CameraTruth", "SynthTruth"]


def find_synth_root(data_root: str | os.PathLike) -> pathlib.Path | None:
    """The SynthPeople root of a data root: the root itself or its parent when it holds
    ``gt/images.parquet`` (the CASL data root is usually ``<synth>/Market-HQ``, the re-id one
    ``<synth>/Market-1501``)."""
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


class SynthTruth:
    """Ground truth of a SynthPeople tree: the parquet row, the exact posed mesh and the camera of
    an image of either tree (Market-1501 JPEGs and Market-HQ PNGs).

    The mesh of an image is its person (``recipe_id``, rebuilt from ``gt/recipes.jsonl``) posed
    at the base pose plus the row's ``pose_jitter``; its camera is the look-at camera of the row
    (``azimuth``, ``elevation``, ``distance``, ``bx``, ``by``). Both are in the renderer's
    conventions: ``MeshRenderer(image_size).render(mesh, camera)`` draws the image's person
    where the image shows it (the generator rendered it so).

    Args:
        root: the SynthPeople root (holding ``gt/``); :meth:`find` takes a data root below it.
        cache_size: people (built meshes, ~1 MB each with their texture) kept in memory,
            least recently used first out; images in a dataset's sorted order share a person.
    Raises:
        FileNotFoundError: no ``gt/images.parquet`` or ``gt/recipes.jsonl`` under ``root``.
    """

    def __init__(self, root: str | os.PathLike, cache_size: int = 32) -> None:
        if cache_size < 1:
            raise ValueError(f"cache_size: expected an int >= 1, got {cache_size!r}")
        self.root = pathlib.Path(root).resolve()
        rows = read_ground_truth(self.root).to_pylist()
        self.rows = {r["path"]: r for r in rows}
        self.recipes = load_recipes(self.root)
        self.cache_size = int(cache_size)
        self._people: OrderedDict[int, PersonMesh] = OrderedDict()
        self._image_size: tuple[int, int] | None = None

    @classmethod
    def find(cls, data_root: str | os.PathLike, **kwargs) -> SynthTruth:
        """The ground truth of the SynthPeople tree ``data_root`` belongs to (the root itself or
        its parent, :func:`find_synth_root`).

        Raises:
            FileNotFoundError: ``data_root`` is not (inside) a SynthPeople tree.
        """
        root = find_synth_root(data_root)
        if root is None:
            raise FileNotFoundError(f"{data_root} is not inside a SynthPeople tree (no "
                                    f"gt/images.parquet in it or its parent)")
        return cls(root, **kwargs)

    @property
    def image_size(self) -> tuple[int, int]:
        """(W, H) the images were rendered at (the aspect of the true cameras)."""
        if self._image_size is None:
            w, h = synth_settings(self.root)["image_size"]
            self._image_size = (int(w), int(h))
        return self._image_size

    def row_for(self, image_path: str | os.PathLike) -> dict | None:
        """The ground-truth row of an image file (None when the image is not in the tree)."""
        try:
            rel = pathlib.Path(image_path).resolve().relative_to(self.root).as_posix()
        except ValueError:
            return None
        return self.rows.get(rel)

    def mesh(self, row: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(V, 3) float32 posed vertices (object frame) and (F, 3) int64 faces of a row's
        image."""
        rid = int(row["recipe_id"])
        person = self._people.get(rid)
        if person is None:
            if rid not in self.recipes:
                raise ValueError(f"ground truth: recipe {rid} of {row['path']} is missing from "
                                 f"{self.root}/gt/recipes.jsonl")
            person = self._people[rid] = build_person(self.recipes[rid])
            while len(self._people) > self.cache_size:
                self._people.popitem(last=False)
        else:
            self._people.move_to_end(rid)
        verts = person.posed(np.asarray(row["pose_jitter"], np.float32))[0]
        return verts, person.faces

    @staticmethod
    def camera(row: dict) -> Camera:
        """The row's look-at camera, batch 1, float32 (as the generator rendered it)."""
        return look_at_camera(torch.tensor([float(row["azimuth"])]),
                              torch.tensor([float(row["elevation"])]),
                              torch.tensor([float(row["distance"])]),
                              torch.tensor([[float(row["bx"]), float(row["by"])]]))
