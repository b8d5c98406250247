"""The reconstructors of the ``casl-*`` lifting modes, by name (``LiftConfig.reconstructor``).

- ``casl``: a trained CASL model, :func:`mirror3d.models.casl.load_casl` (Zheng et al. 2022,
  "3D Magic Mirror"), from ``LiftConfig.checkpoint``; ``LiftConfig.refine_steps`` N > 0 refines
  every image's prediction by N test-time steps (:mod:`mirror3d.models.casl.refine`);
- ``synth-truth``: an **oracle that needs ground truth**, not a method: every image of a
  SynthPeople tree gets its *true* mesh (its person posed with the image's pose jitter) and
  *true* camera, from the tree's ``gt/`` tables (:class:`mirror3d.data.synth.truth.SynthTruth`).
  Lifting with it shows what the ``casl-*`` modes give when the mesh is right: an upper bound
  for CASL (the pipeline reports it as such). The tree is found from the dataset root (the root
  or its parent holds ``gt/images.parquet``); an image the ground truth does not list is an
  error naming the image, never a fallback;
- ``oracle-template`` / ``oracle-sphere``: a fixed mesh seen from the front for every image (the
  CASL template, or a 0.5-radius icosphere) — tests and benchmarks, no model needed;
- ``module:factory``: ``factory(checkpoint)`` from any importable module, returning an object
  with ``.reconstruct(image, mask)`` (:class:`mirror3d.lifting.visible.Reconstructor`); a
  factory taking a ``refine_steps`` argument gets it.

Only ``casl`` and factories that take it refine: ``refine_steps`` > 0 with any other
reconstructor is refused (it would silently do nothing); likewise a checkpoint given to
``synth-truth``.

:func:`check_reconstructor` checks a name on the driver without building a model (for
``synth-truth``: that the dataset is a SynthPeople tree and, given the images, that the ground
truth lists every one), so a bad name fails before any worker starts; :func:`build_reconstructor`
builds it (once per worker).
"""

from __future__ import annotations

import importlib
import inspect
import os
import pathlib
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from mirror3d.data.synth.truth import SynthTruth
from mirror3d.lifting.visible import MeshReconstruction, OracleReconstructor
from mirror3d.models.casl import load_casl
from mirror3d.render import ico_sphere, look_at_camera, template_mesh

__all__ = ["ORACLES", "SYNTH_TRUTH", "SynthTruthReconstructor", "check_reconstructor",
           "build_reconstructor"]

ORACLES = ("oracle-template", "oracle-sphere")
#: The reconstructor that returns each SynthPeople image's true mesh and camera (ground truth).
SYNTH_TRUTH = "synth-truth"


class SynthTruthReconstructor:
    """The ``synth-truth`` oracle: each image's true mesh and camera (needs ground truth).

    ``reconstruct(image, mask, path=...)`` returns a
    :class:`~mirror3d.lifting.visible.MeshReconstruction` like CASL's: vertices (V, 3) float32
    in the person's object frame, faces (F, 3) int64, the true look-at camera (batch 1) and the
    (W, H) the tree was rendered at as ``image_size`` (the camera's aspect, so an image resized
    for lifting still lines up). The image and mask are not looked at: the image is found by its
    ``path`` (``needs_path``: :func:`mirror3d.lifting.modes.lift_image` passes it).

    Args:
        truth: the tree's ground truth (:meth:`SynthTruth.find` from a dataset root).
        device: where the meshes are placed.
    """

    #: lifting passes the image's file path to :meth:`reconstruct`
    needs_path = True

    def __init__(self, truth: SynthTruth, device: str = "cpu") -> None:
        self.truth = truth
        self.device = device
        self.calls = 0

    def reconstruct(self, image: np.ndarray, mask: np.ndarray | None = None,
                    path: str | os.PathLike | None = None) -> MeshReconstruction:
        """The true mesh and camera of the image at ``path``.

        Raises:
            ValueError: no ``path``, or an image the tree's ground truth does not list.
        """
        if path is None:
            raise ValueError(f"{SYNTH_TRUTH}: the true mesh is looked up by the image's file; "
                             f"reconstruct needs path=")
        row = self.truth.row_for(path)
        if row is None:
            raise ValueError(f"{SYNTH_TRUTH}: {path} has no ground truth in "
                             f"{self.truth.root}/gt/images.parquet (not an image of this "
                             f"SynthPeople tree)")
        self.calls += 1
        verts, faces = self.truth.mesh(row)
        cam = self.truth.camera(row).to(device=self.device)
        return MeshReconstruction(verts.to(self.device), faces.to(self.device), cam,
                                  self.truth.image_size)


def _oracle(kind: str, device: str) -> OracleReconstructor:
    if kind == "oracle-template":
        verts, faces, _ = template_mesh(device=device)
    else:
        verts, faces = ico_sphere(3, 0.5, device=device)
    cam = look_at_camera(0.0, 0.0, 2.5, device=device, dtype=torch.float32)
    return OracleReconstructor(MeshReconstruction(verts.float(), faces.long(), cam))


def _check_checkpoint(checkpoint: str) -> None:
    if not checkpoint:
        raise ValueError("checkpoint: the casl reconstructor needs a CASL checkpoint path")
    if not pathlib.Path(checkpoint).exists():
        raise FileNotFoundError(f"checkpoint: {checkpoint} does not exist")


def _import_factory(spec: str) -> Any:
    if ":" not in spec:
        raise ValueError(f"reconstructor: expected casl, {SYNTH_TRUTH}, oracle-template, "
                         f"oracle-sphere or 'module:factory', got {spec!r}")
    module, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"reconstructor: cannot import {spec} ({e})") from None
    if not callable(factory):
        raise ValueError(f"reconstructor: {spec} is not callable")
    return factory


def _takes(factory: Any, name: str) -> bool:
    try:
        return name in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def _check_refine_steps(spec: str, refine_steps: int, factory: Any = None) -> None:
    if isinstance(refine_steps, bool) or not isinstance(refine_steps, int) or refine_steps < 0:
        raise ValueError(f"refine_steps: expected an int >= 0, got {refine_steps!r}")
    if refine_steps > 0 and spec != "casl" and not (factory is not None
                                                    and _takes(factory, "refine_steps")):
        raise ValueError(f"refine_steps: {refine_steps} asks for test-time refinement, which "
                         f"reconstructor {spec!r} does not do (casl, or a factory taking "
                         f"refine_steps); set refine_steps 0")


def _synth_truth(checkpoint: str, root: str | os.PathLike | None) -> SynthTruth:
    if checkpoint:
        raise ValueError(f"checkpoint: {SYNTH_TRUTH} reads the SynthPeople ground truth and takes "
                         f"no checkpoint, got {checkpoint!r}; set checkpoint ''")
    if root is None:
        raise ValueError(f"root: {SYNTH_TRUTH} needs the dataset root (inside a SynthPeople tree)")
    try:
        return SynthTruth.find(root)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"root: {SYNTH_TRUTH} needs SynthPeople ground truth: {e}") from None


def check_reconstructor(spec: str, checkpoint: str = "", refine_steps: int = 0,
                        root: str | os.PathLike | None = None,
                        paths: Iterable[str | os.PathLike] = ()) -> None:
    """Check that ``spec`` names a usable reconstructor without building it (driver side).

    Args:
        root: the dataset root (``synth-truth`` finds its SynthPeople tree from it).
        paths: the images to be lifted (``synth-truth``: each must be in the ground truth).
    Raises:
        ValueError: an unknown name, an unimportable factory, ``casl`` without checkpoint,
            ``refine_steps`` > 0 for a reconstructor that does not refine, or ``synth-truth``
            with a checkpoint or with images the ground truth does not list (named).
        FileNotFoundError: the ``casl`` checkpoint does not exist; ``synth-truth`` and a root
            outside a SynthPeople tree.
    """
    if spec == SYNTH_TRUTH:
        _check_refine_steps(spec, refine_steps)
        truth = _synth_truth(checkpoint, root)
        missing = [str(p) for p in paths if truth.row_for(p) is None]
        if missing:
            raise ValueError(f"{SYNTH_TRUTH}: {len(missing)} image(s) have no ground truth in "
                             f"{truth.root}/gt/images.parquet, e.g. {missing[0]}")
        return
    if spec in ORACLES:
        _check_refine_steps(spec, refine_steps)
        return
    if spec == "casl":
        _check_refine_steps(spec, refine_steps)
        _check_checkpoint(checkpoint)
        return
    _check_refine_steps(spec, refine_steps, _import_factory(spec))


def build_reconstructor(spec: str, checkpoint: str = "", device: str = "cpu",
                        refine_steps: int = 0, root: str | os.PathLike | None = None) -> Any:
    """The reconstructor named by ``spec`` (see the module docstring).

    ``oracle-template``: the CASL template (a normalised icosphere, 1.8 tall) seen from the front
    at distance 2.5 for every image; ``oracle-sphere``: a 0.5-radius icosphere likewise;
    ``synth-truth``: :class:`SynthTruthReconstructor` on the SynthPeople tree of the dataset
    ``root``; ``casl``: ``load_casl(checkpoint, refine_steps=refine_steps)``;
    ``module:factory``: ``factory(checkpoint)`` (``device=`` and ``refine_steps=`` are passed to
    factories that take them).

    Raises:
        ValueError, FileNotFoundError: as :func:`check_reconstructor`.
    """
    if spec == SYNTH_TRUTH:
        _check_refine_steps(spec, refine_steps)
        return SynthTruthReconstructor(_synth_truth(checkpoint, root), device)
    if spec in ORACLES:
        _check_refine_steps(spec, refine_steps)
        return _oracle(spec, device)
    if spec == "casl":
        _check_refine_steps(spec, refine_steps)
        _check_checkpoint(checkpoint)
        return load_casl(checkpoint, device=device, refine_steps=refine_steps)
    factory = _import_factory(spec)
    _check_refine_steps(spec, refine_steps, factory)
    kwargs: dict[str, Any] = {}
    if _takes(factory, "device"):
        kwargs["device"] = device
    if _takes(factory, "refine_steps"):
        kwargs["refine_steps"] = refine_steps
    rec = factory(*((checkpoint,) if checkpoint else ()), **kwargs)
    if not callable(getattr(rec, "reconstruct", None)):
        raise ValueError(f"reconstructor: {spec} returned {type(rec).__name__}, which has no "
                         f".reconstruct(image, mask)")
    return rec
