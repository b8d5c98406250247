"""The demo's reconstruction service: one photo (+ optional mask or box) → a textured 3D person,
its predicted camera and light, renders from the input view and around it.

Plain Python over a trained CASL run (Zheng et al. 2022, "3D Magic Mirror: Clothing
Reconstruction from a Single Image via a Causal Perspective", arXiv:2204.13096), loaded once with
:func:`mirror3d.models.casl.load_casl`; optional test-time refinement is
:meth:`mirror3d.models.casl.CaslPredictor.reconstruct`'s ``refine_steps``. The Ray Serve
deployment (:mod:`mirror3d.serve_apps`) wraps :class:`ReconstructService`; the REST API keeps
the meshes in a :class:`MeshStore`.

Example::

    svc = ReconstructService("runs/pipeline/cpu-default/casl")
    res = svc.reconstruct(decode_upload(open("person.jpg", "rb").read()))
    res.summary()["camera"]            # {"azimuth": ..., "elevation": ..., ...}
    open("person.glb", "wb").write(res.glb)
    side = svc.novel_view(res.id, 90)  # (H, W, 3) uint8, the input view turned by 90°
"""

from __future__ import annotations

import io
import math
import os
import pathlib
import re
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch

from mirror3d.engine.demo_inputs import (InputError, UploadLimits, decode_mask_upload,
                                         image_input, resolve_mask)
from mirror3d.models.casl import MaskError, load_casl
from mirror3d.models.casl.inference import CameraParams, Reconstruction
from mirror3d.render.turntable import render_turntable
from mirror3d.utils.files import atomic_write
from mirror3d.utils.pictures import save_gif

__all__ = ["ReconstructResult", "ReconstructService", "MeshStore", "MESH_ID"]

#: A reconstruction id: uuid4 hex (also the only file names a :class:`MeshStore` serves).
MESH_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class ReconstructResult:
    """One reconstruction, ready for JSON and for the viewer.

    Attributes:
        id: uuid4 hex; :meth:`ReconstructService.novel_view` finds the mesh by it.
        camera: ``{"azimuth", "elevation" (degrees), "distance", "bias": [bx, by]}``.
        light: 9 spherical-harmonics coefficients.
        num_vertices, num_faces: of the mesh.
        glb: the textured mesh (binary glTF, UVs + PNG texture embedded).
        input_view: (h, w, 3) uint8, the mesh rendered on white from the predicted camera at the
            model's input size (w, h).
        turntable: frames (h, w, 3) uint8 at azimuths 0, 360/n, … (predicted elevation and
            distance, centred); empty when not asked for.
        mask: (H, W) bool, the mask used, at the uploaded image's size.
        mask_source: ``"upload"`` | ``"box"`` | ``"estimate"``.
        refine_steps: test-time refinement steps run.
        seconds: wall time of :meth:`ReconstructService.reconstruct`.
        image_size: (w, h) the model saw.
        view_state: the mesh, texture, light and camera as ``.npz`` bytes (plain arrays, no
            pickle): :meth:`ReconstructService.render_state` renders it from any view in any
            process that loaded the same run (the REST API keeps it beside the GLB, so a novel
            view does not depend on which replica made the mesh).
    """

    id: str
    camera: dict
    light: list[float]
    num_vertices: int
    num_faces: int
    glb: bytes = field(repr=False)
    input_view: np.ndarray = field(repr=False)
    turntable: list[np.ndarray] = field(repr=False)
    mask: np.ndarray = field(repr=False)
    mask_source: str
    refine_steps: int
    seconds: float
    image_size: tuple[int, int]
    view_state: bytes = field(default=b"", repr=False)

    def summary(self) -> dict:
        """The JSON-able part (no arrays, no bytes)."""
        return {"id": self.id, "camera": dict(self.camera), "light": list(self.light),
                "num_vertices": self.num_vertices, "num_faces": self.num_faces,
                "mask_source": self.mask_source,
                "mask_fraction": round(float(self.mask.mean()), 4),
                "refine_steps": self.refine_steps, "seconds": round(self.seconds, 4),
                "image_size": list(self.image_size), "glb_bytes": len(self.glb)}


class ReconstructService:
    """A CASL run loaded once, reconstructing uploaded photos.

    Args:
        run_dir: a CASL run directory (its ``model_final.pt``) or checkpoint file.
        device: torch device.
        turntable_frames: frames of :attr:`ReconstructResult.turntable`.
        max_refine_steps: the largest ``refine_steps`` a request may ask for.
        cache_size: recent reconstructions kept for :meth:`novel_view` (least recently used
            dropped first).
        limits: caps of uploads given as bytes.

    Raises:
        FileNotFoundError, mirror3d.utils.checkpoint.CheckpointError: see
            :func:`mirror3d.models.casl.load_casl`.
    """

    def __init__(self, run_dir: str | os.PathLike, device: str = "cpu", turntable_frames: int = 8,
                 max_refine_steps: int = 200, cache_size: int = 64,
                 limits: UploadLimits = UploadLimits()) -> None:
        for name, v, lo in (("turntable_frames", turntable_frames, 1),
                            ("max_refine_steps", max_refine_steps, 0),
                            ("cache_size", cache_size, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name}: expected an int >= {lo}, got {v!r}")
        self.run_dir = pathlib.Path(run_dir)
        self.predictor = load_casl(run_dir, device=device)
        self.turntable_frames = turntable_frames
        self.max_refine_steps = max_refine_steps
        self.cache_size = cache_size
        self.limits = limits
        self._cache: OrderedDict[str, Reconstruction] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def image_size(self) -> tuple[int, int]:
        """(w, h) of the model's input and renders."""
        return tuple(self.predictor.image_size)

    def _refine_steps(self, steps) -> int:
        if isinstance(steps, str):
            try:
                steps = int(steps.strip())
            except ValueError:
                raise InputError(f"refine_steps: expected an integer, got {steps!r}") from None
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) \
                or not 0 <= steps <= self.max_refine_steps:
            raise InputError(f"refine_steps: expected an integer in [0, {self.max_refine_steps}], "
                             f"got {steps!r}")
        return int(steps)

    def reconstruct(self, image, mask=None, box=None, refine_steps: int = 0,
                    turntable: bool = True, seed: int = 0) -> ReconstructResult:
        """Reconstruct one photo.

        Args:
            image: (H, W, 3) uint8 RGB, or the uploaded file's bytes (:func:`decode_upload`).
            mask: (H, W) bool / 0-1 / 0-255 mask, the uploaded mask's bytes
                (:func:`decode_mask_upload`), or None.
            box: ``"x0,y0,x1,y1"`` or four numbers: GrabCut from this box when there is no mask.
            refine_steps: test-time refinement steps, 0..``max_refine_steps``.
            turntable: render :attr:`turntable_frames` frames.
            seed: GrabCut and refinement seed.

        Returns:
            :class:`ReconstructResult`; the reconstruction is cached for :meth:`novel_view`.

        Raises:
            InputError: bad image / mask / box / steps, or a mask with no foreground pixel left
                at the model's input size.
        """
        t0 = time.perf_counter()
        steps = self._refine_steps(refine_steps)
        image = image_input(image, self.limits)
        if isinstance(mask, (bytes, bytearray, memoryview)):
            mask = decode_mask_upload(mask, image.shape[:2], self.limits)
        used, source = resolve_mask(image, mask, box, seed)
        try:
            rec = self.predictor.reconstruct(image, used, refine_steps=steps, seed=seed)
        except MaskError as e:
            raise InputError(str(e)) from None
        input_view = rec.render()
        frames = self._turntable(rec) if turntable else []
        rid = uuid.uuid4().hex
        with self._lock:
            self._cache[rid] = rec
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        c = rec.camera
        camera = {"azimuth": c.azimuth, "elevation": c.elevation, "distance": c.distance,
                  "bias": [float(b) for b in c.bias]}
        return ReconstructResult(
            id=rid, camera=camera, light=[float(v) for v in rec.light.tolist()],
            num_vertices=int(rec.vertices.shape[0]), num_faces=int(rec.faces.shape[0]),
            glb=self._glb(rec), input_view=input_view, turntable=frames, mask=used,
            mask_source=source, refine_steps=steps, seconds=time.perf_counter() - t0,
            image_size=self.image_size, view_state=_view_state(rec))

    def _turntable(self, rec: Reconstruction) -> list[np.ndarray]:
        c = rec.camera
        return render_turntable(rec.vertices, rec.faces, rec.face_uvs, rec.texture, rec.light,
                                self.predictor.model.renderer, frames=self.turntable_frames,
                                elevation=c.elevation, distance=c.distance, progress=False)

    @staticmethod
    def _glb(rec: Reconstruction) -> bytes:
        with tempfile.TemporaryDirectory(prefix="mirror3d-glb-") as tmp:
            return rec.export(pathlib.Path(tmp) / "mesh.glb").read_bytes()

    def novel_view(self, id: str, azimuth_deg: float, elevation_deg: float | None = None
                   ) -> np.ndarray:
        """A cached reconstruction rendered from another view.

        Args:
            id: :attr:`ReconstructResult.id` of a recent reconstruction.
            azimuth_deg: degrees added to the predicted azimuth (0: the input view, 180: the
                back).
            elevation_deg: the camera's elevation in degrees (None: the predicted one).

        Returns:
            (h, w, 3) uint8 render on white.

        Raises:
            KeyError: an unknown id (never made, or dropped from the cache).
            InputError: a non-finite angle, or an elevation outside [-89, 89].
        """
        with self._lock:
            rec = self._cache.get(str(id))
            if rec is None:
                raise KeyError(f"reconstruction {id!r}: unknown or expired (the service keeps "
                               f"the last {self.cache_size}); reconstruct the image again")
            self._cache.move_to_end(str(id))
        return _render_turned(rec, azimuth_deg, elevation_deg)

    def render_state(self, state: bytes, azimuth_deg: float, elevation_deg: float | None = None
                     ) -> np.ndarray:
        """:attr:`ReconstructResult.view_state` rendered from another view, as
        :meth:`novel_view` (same arguments and image), without this service's cache.

        Raises:
            InputError: state bytes that are not a view state of this model (another run's
                mesh size, a damaged file), or bad angles as :meth:`novel_view`.
        """
        return _render_turned(self._from_state(state), azimuth_deg, elevation_deg)

    def _from_state(self, state: bytes) -> Reconstruction:
        try:
            with np.load(io.BytesIO(bytes(state)), allow_pickle=False) as z:
                arrays = {k: z[k] for k in _STATE_KEYS}
        except (OSError, ValueError, KeyError, EOFError) as e:
            raise InputError(f"view state: not a reconstruction's view state ({e})") from None
        cam = arrays["camera"].astype(float)
        v, f, uv, tex = (arrays["vertices"], arrays["faces"], arrays["face_uvs"],
                         arrays["texture"])
        if (cam.shape != (5,) or v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3
                or uv.shape != (f.shape[0], 3, 2) or tex.ndim != 3 or tex.shape[0] != 3
                or arrays["light"].shape != (9,)
                or (f.size and not 0 <= int(f.min()) <= int(f.max()) < v.shape[0])):
            raise InputError("view state: arrays of the wrong shapes for a reconstruction")
        device = next(self.predictor.model.parameters()).device
        t = {k: torch.from_numpy(np.ascontiguousarray(a)).to(device) for k, a in arrays.items()}
        return Reconstruction(
            vertices=t["vertices"].float(), faces=t["faces"].long(),
            face_uvs=t["face_uvs"].float(), texture=t["texture"].float(),
            light=t["light"].float(),
            camera=CameraParams(float(cam[0]), float(cam[1]), float(cam[2]),
                                (float(cam[3]), float(cam[4]))),
            image_size=self.image_size, _model=self.predictor.model)

    def turntable_gif(self, result: ReconstructResult, fps: float = 8.0, scale: int = 2) -> bytes:
        """The result's turntable as a looping GIF (frames upscaled ``scale``×, nearest).

        Raises:
            ValueError: the result has no turntable frames.
        """
        if not result.turntable:
            raise ValueError("turntable: the result has no frames (reconstruct with "
                             "turntable=True)")
        with tempfile.TemporaryDirectory(prefix="mirror3d-gif-") as tmp:
            return save_gif(result.turntable, pathlib.Path(tmp) / "t.gif", fps=fps,
                            scale=scale).read_bytes()


_STATE_KEYS = ("vertices", "faces", "face_uvs", "texture", "light", "camera")


def _view_state(rec: Reconstruction) -> bytes:
    """``rec`` as ``.npz`` bytes of :data:`_STATE_KEYS` (camera: azimuth, elevation, distance,
    bias x, bias y)."""
    c = rec.camera
    buf = io.BytesIO()
    np.savez(buf, vertices=rec.vertices.detach().cpu().numpy().astype(np.float32),
             faces=rec.faces.detach().cpu().numpy().astype(np.int64),
             face_uvs=rec.face_uvs.detach().cpu().numpy().astype(np.float32),
             texture=rec.texture.detach().cpu().numpy().astype(np.float32),
             light=rec.light.detach().cpu().numpy().astype(np.float32),
             camera=np.array([c.azimuth, c.elevation, c.distance, *c.bias], dtype=np.float64))
    return buf.getvalue()


def _render_turned(rec: Reconstruction, azimuth_deg, elevation_deg) -> np.ndarray:
    """``rec`` rendered with ``azimuth_deg`` added to its azimuth and, if given, the absolute
    ``elevation_deg`` (checked: finite, within [-89, 89])."""
    try:
        az = float(azimuth_deg)
        el = None if elevation_deg is None else float(elevation_deg)
    except (TypeError, ValueError):
        raise InputError(f"azimuth/elevation: expected numbers, got {azimuth_deg!r}, "
                         f"{elevation_deg!r}") from None
    if not math.isfinite(az) or (el is not None and not math.isfinite(el)):
        raise InputError(f"azimuth/elevation: expected finite degrees, got {az}, {el}")
    if el is not None and not -89.0 <= el <= 89.0:
        raise InputError(f"elevation: expected degrees in [-89, 89], got {el:g}")
    return rec.render(azimuth=rec.camera.azimuth + az, elevation=el)


class MeshStore:
    """GLB files by reconstruction id in one directory, for ``GET /api/meshes/{id}.glb``.

    Only ids matching :data:`MESH_ID` (32 lowercase hex digits) are accepted, so a request can
    never name another file. Beyond ``max_items`` files the oldest (by the time they were put)
    are deleted. Several processes (Serve replicas) may share the directory: files are written
    atomically and the eviction looks at the directory, not at this object's memory.

    Args:
        directory: created if missing.
        max_items: files kept.
        suffix: the files' suffix: ``.glb`` for meshes; the REST API also keeps turntables
            (``.gif``) and view states (``.npz``) this way. It tells a browser the file's type.
    """

    def __init__(self, directory: str | os.PathLike, max_items: int = 256,
                 suffix: str = ".glb") -> None:
        if not re.fullmatch(r"\.[a-z0-9]+", str(suffix)):
            raise ValueError(f"suffix: expected a file suffix like '.glb', got {suffix!r}")
        self.SUFFIX = suffix
        if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1:
            raise ValueError(f"max_items: expected an int >= 1, got {max_items!r}")
        self.directory = pathlib.Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_items = max_items
        self._lock = threading.Lock()

    def _file(self, id: str) -> pathlib.Path:
        if not isinstance(id, str) or not MESH_ID.match(id):
            raise KeyError(f"mesh id {id!r}: expected 32 lowercase hex digits")
        return self.directory / f"{id}{self.SUFFIX}"

    def put(self, id: str, data: bytes) -> pathlib.Path:
        """Store ``data`` under ``id`` (replacing it), then delete the oldest files beyond
        ``max_items``. Returns the file.

        Raises:
            KeyError: a malformed id.
        """
        path = self._file(id)
        with self._lock:
            atomic_write(path, bytes(data))
            now = time.time_ns()  # fine-grained: files put in one clock tick keep their order
            os.utime(path, ns=(now, now))
            self._evict()
        return path

    def _evict(self) -> None:
        files = []
        for p in self.directory.glob(f"*{self.SUFFIX}"):
            if MESH_ID.match(p.stem):
                try:
                    files.append((p.stat().st_mtime_ns, p.name, p))
                except FileNotFoundError:  # another replica evicted it just now
                    pass
        files.sort()
        for _, _, p in files[:max(0, len(files) - self.max_items)]:
            p.unlink(missing_ok=True)

    def path(self, id: str) -> pathlib.Path:
        """The file of ``id``.

        Raises:
            KeyError: a malformed id, or no such mesh (never stored, or evicted).
        """
        p = self._file(id)
        if not p.is_file():
            raise KeyError(f"mesh {id}: not found (unknown id, or evicted)")
        return p

    def get(self, id: str) -> bytes:
        """The bytes of ``id`` (KeyError as :meth:`path`)."""
        try:
            return self.path(id).read_bytes()
        except FileNotFoundError:
            raise KeyError(f"mesh {id}: not found (unknown id, or evicted)") from None

    def __contains__(self, id: object) -> bool:
        try:
            self.path(id)  # type: ignore[arg-type]
        except KeyError:
            return False
        return True

    def __len__(self) -> int:
        return sum(1 for p in self.directory.glob(f"*{self.SUFFIX}") if MESH_ID.match(p.stem))
