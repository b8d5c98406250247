"""The reconstructors of the ``casl-*`` lifting modes, by name (``LiftConfig.reconstructor``).

- ``casl``: a trained CASL model, :func:`mirror3d.models.casl.load_casl` (Yang et al. 2022,
  "3D Magic Mirror"), from ``LiftConfig.checkpoint``;
- ``oracle-template`` / ``oracle-sphere``: a fixed mesh seen from the front for every image (the
  CASL template, or a 0.5-radius icosphere) — tests and benchmarks, no model needed;
- ``module:factory``: ``factory(checkpoint)`` from any importable module, returning an object
  with ``.reconstruct(image, mask)`` (:class:`mirror3d.lifting.visible.Reconstructor`).

:func:`check_reconstructor` checks a name on the driver without building anything, so a bad
name fails before any worker starts; :func:`build_reconstructor` builds it (once per worker).
"""

from __future__ import annotations

import importlib
import inspect
import pathlib
from typing import Any

import torch

from mirror3d.lifting.visible import MeshReconstruction, OracleReconstructor
from mirror3d.models.casl import load_casl
from mirror3d.render import ico_sphere, look_at_camera, template_mesh

__all__ = ["ORACLES", "check_reconstructor", "build_reconstructor"]

ORACLES = ("oracle-template", "oracle-sphere")


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
        raise ValueError(f"reconstructor: expected casl, oracle-template, oracle-sphere or "
                         f"'module:factory', got {spec!r}")
    module, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"reconstructor: cannot import {spec} ({e})") from None
    if not callable(factory):
        raise ValueError(f"reconstructor: {spec} is not callable")
    return factory


def check_reconstructor(spec: str, checkpoint: str = "") -> None:
    """Check that ``spec`` names a usable reconstructor without building it (driver side).

    Raises:
        ValueError: an unknown name, an unimportable factory, or ``casl`` without checkpoint.
        FileNotFoundError: the ``casl`` checkpoint does not exist.
    """
    if spec in ORACLES:
        return
    if spec == "casl":
        _check_checkpoint(checkpoint)
        return
    _import_factory(spec)


def build_reconstructor(spec: str, checkpoint: str = "", device: str = "cpu") -> Any:
    """The reconstructor named by ``spec`` (see the module docstring).

    ``oracle-template``: the CASL template (a normalised icosphere, 1.8 tall) seen from the front
    at distance 2.5 for every image; ``oracle-sphere``: a 0.5-radius icosphere likewise;
    ``casl``: ``load_casl(checkpoint)``; ``module:factory``: ``factory(checkpoint)``
    (``device=`` is passed to factories that take it).
    """
    if spec in ORACLES:
        return _oracle(spec, device)
    if spec == "casl":
        _check_checkpoint(checkpoint)
        return load_casl(checkpoint, device=device)
    factory = _import_factory(spec)
    kwargs = {}
    try:
        if "device" in inspect.signature(factory).parameters:
            kwargs["device"] = device
    except (TypeError, ValueError):
        pass
    rec = factory(*((checkpoint,) if checkpoint else ()), **kwargs)
    if not callable(getattr(rec, "reconstruct", None)):
        raise ValueError(f"reconstructor: {spec} returned {type(rec).__name__}, which has no "
                         f".reconstruct(image, mask)")
    return rec
