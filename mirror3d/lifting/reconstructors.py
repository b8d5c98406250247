"""The reconstructors of the ``casl-*`` lifting modes, by name (``LiftConfig.reconstructor``).

- ``casl``: a trained CASL model, :func:`mirror3d.models.casl.load_casl` (Zheng et al. 2022,
  "3D Magic Mirror"), from ``LiftConfig.checkpoint``; ``LiftConfig.refine_steps`` N > 0 refines
  every image's prediction by N test-time steps (:mod:`mirror3d.models.casl.refine`);
- ``oracle-template`` / ``oracle-sphere``: a fixed mesh seen from the front for every image (the
  CASL template, or a 0.5-radius icosphere) — tests and benchmarks, no model needed;
- ``module:factory``: ``factory(checkpoint)`` from any importable module, returning an object
  with ``.reconstruct(image, mask)`` (:class:`mirror3d.lifting.visible.Reconstructor`); a
  factory taking a ``refine_steps`` argument gets it.

Only ``casl`` and factories that take it refine: ``refine_steps`` > 0 with any other
reconstructor is refused (it would silently do nothing).

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


def check_reconstructor(spec: str, checkpoint: str = "", refine_steps: int = 0) -> None:
    """Check that ``spec`` names a usable reconstructor without building it (driver side).

    Raises:
        ValueError: an unknown name, an unimportable factory, ``casl`` without checkpoint, or
            ``refine_steps`` > 0 for a reconstructor that does not refine.
        FileNotFoundError: the ``casl`` checkpoint does not exist.
    """
    if spec in ORACLES:
        _check_refine_steps(spec, refine_steps)
        return
    if spec == "casl":
        _check_refine_steps(spec, refine_steps)
        _check_checkpoint(checkpoint)
        return
    _check_refine_steps(spec, refine_steps, _import_factory(spec))


def build_reconstructor(spec: str, checkpoint: str = "", device: str = "cpu",
                        refine_steps: int = 0) -> Any:
    """The reconstructor named by ``spec`` (see the module docstring).

    ``oracle-template``: the CASL template (a normalised icosphere, 1.8 tall) seen from the front
    at distance 2.5 for every image; ``oracle-sphere``: a 0.5-radius icosphere likewise;
    ``casl``: ``load_casl(checkpoint, refine_steps=refine_steps)``; ``module:factory``:
    ``factory(checkpoint)`` (``device=`` and ``refine_steps=`` are passed to factories that
    take them).

    Raises:
        ValueError: as :func:`check_reconstructor`.
    """
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
