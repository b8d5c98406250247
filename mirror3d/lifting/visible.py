"""Visible-part lifting: the camera-facing surface of a reconstructed mesh, coloured by the photo.

This is the OG-Net paper's "3D visible part" input (Table I), and with the background pixels
added at the body's mean depth its best input, "3D visible part + 2D background" (Zheng et al. 2021, OG-Net, Table I).

Given a reconstruction of one image — mesh vertices in the object frame, faces, and the camera
that sees the object as in the photo — :func:`visible_surface_points`

1. samples points uniformly on the mesh surface
   (:func:`~mirror3d.render.mesh.sample_points_on_faces`, reproducible with a ``torch.Generator``);
2. projects them with the camera into the image (H×W of the photo) and takes the *nearest*
   pixel (the pixel whose square contains the projection);
3. z-tests them against the rasterised mesh: a point is kept when its face is drawable
   (front-facing, in front of the near plane), its pixel is covered, and its view depth is at
   most ``depth_tol`` behind the visible surface. The visible surface depth is evaluated *at the
   point's own screen position* on the plane of the face that owns the pixel (perspective-correct
   1/depth interpolation, extrapolated by at most a pixel), so points on the visible face pass
   exactly and a pixel colours only the nearest surface. (Compared with the depth at the pixel
   centre, this keeps grazing points near the silhouette: on the CASL template at 128×64, 99.8 %
   of the front-facing samples on covered pixels pass with the default tolerance 0.02, against
   99.2 % for the pixel-centre depth; a convex mesh hides nothing, so all should pass);
4. drops points outside the image or outside the foreground mask, and colours the rest with the
   nearest pixel's colour.

:func:`background_points` places the background pixels (mask == 0) on the plane of constant view
depth equal to the mean depth of the body points (the pixel ray unprojected to that depth in the
camera frame), then transforms them into the object frame.

The reconstruction model is pluggable: anything with ``reconstruct(image, mask)`` returning an
object with ``vertices`` (V, 3), ``faces`` (F, 3) int64 and ``camera`` works
(:class:`Reconstructor`). The camera is a batch-of-one :class:`~mirror3d.render.Camera`, or
look-at parameters (``azimuth``, ``elevation``, ``distance``, ``bias``, as CASL's
``CameraParams``). An optional ``image_size`` (W, H) — the input size the model saw — fixes the
camera's aspect ratio; the projection then maps NDC to the photo's pixels, so a photo of another
size (same framing) still lines up. ``mirror3d.models.casl.load_casl`` returns such a model;
:class:`OracleReconstructor` returns fixed meshes (tests, benchmarks); the ``synth-truth``
reconstructor (:mod:`mirror3d.lifting.reconstructors`) returns each SynthPeople image's true mesh
and camera — an oracle that needs ground truth, the upper bound of what a reconstruction can give
(a reconstructor that looks the image up by its file sets ``needs_path`` and is called as
``reconstruct(image, mask, path=...)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from mirror3d.lifting.flat import image_to_rgb
from mirror3d.render.camera import (
    Camera,
    look_at_camera,
    ndc_to_pixel,
    pixel_centers_ndc,
    projection_vector,
)
from mirror3d.render.mesh import check_mesh, sample_points_on_faces
from mirror3d.render.rasterize import NEAR_DEPTH, barycentric, drawable_faces, rasterize

__all__ = [
    "Reconstruction",
    "Reconstructor",
    "MeshReconstruction",
    "OracleReconstructor",
    "VisiblePoints",
    "as_mesh_reconstruction",
    "check_image_mask",
    "check_reconstruction",
    "visible_surface_points",
    "background_points",
    "lift_visible",
]


# --------------------------------------------------------------------------------------------
# the reconstruction interface
# --------------------------------------------------------------------------------------------


@runtime_checkable
class Reconstruction(Protocol):
    """One reconstructed object.

    Attributes:
        vertices: (V, 3) float tensor, object frame.
        faces: (F, 3) int64, counter-clockwise seen from outside.
        camera: :class:`~mirror3d.render.Camera` with batch size 1, in the object frame (or an
            object with look-at ``azimuth``, ``elevation``, ``distance``, ``bias``).
        image_size: optional (W, H) of the model's input; its W/H is the camera's aspect.
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    camera: Camera


@runtime_checkable
class Reconstructor(Protocol):
    """A single-image reconstruction model (e.g. CASL, ``mirror3d.models.casl.load_casl``).

    One that looks images up by file instead (the ``synth-truth`` oracle) has a true
    ``needs_path`` attribute and takes ``reconstruct(image, mask, path=...)``."""

    def reconstruct(self, image: np.ndarray, mask: np.ndarray) -> Reconstruction:
        """image: (H, W, 3) uint8; mask: (H, W) bool foreground → a :class:`Reconstruction`."""
        ...


@dataclass
class MeshReconstruction:
    """A plain :class:`Reconstruction`: vertices (V, 3), faces (F, 3) int64, camera (batch 1),
    and optionally the (W, H) whose aspect the camera uses (None: the photo's)."""

    vertices: torch.Tensor
    faces: torch.Tensor
    camera: Camera
    image_size: tuple[int, int] | None = None


class OracleReconstructor:
    """A :class:`Reconstructor` that returns given meshes instead of predicting them.

    Args:
        mesh: the reconstruction returned for every image (e.g. a sphere, or the CASL template
            with a fixed camera).
        per_image: reconstructions by key; :meth:`reconstruct` called with ``key=`` returns
            ``per_image[key]`` (falling back to ``mesh``; a missing key without ``mesh`` is an
            error).
    """

    def __init__(self, mesh: Reconstruction | None = None,
                 per_image: Mapping[str, Reconstruction] | None = None) -> None:
        if mesh is None and not per_image:
            raise ValueError("mesh: expected a reconstruction or a non-empty per_image mapping")
        for name, rec in [("mesh", mesh)] + [(f"per_image[{k!r}]", v) for k, v in
                                              (per_image or {}).items()]:
            if rec is not None:
                check_reconstruction(rec, name)
        self.mesh = mesh
        self.per_image = dict(per_image or {})
        self.calls = 0

    def reconstruct(self, image: np.ndarray, mask: np.ndarray | None = None,
                    key: str | None = None) -> Reconstruction:
        self.calls += 1
        if key is not None and key in self.per_image:
            return self.per_image[key]
        if self.mesh is None:
            raise ValueError(f"key: no reconstruction for {key!r} and no default mesh")
        return self.mesh


_LOOK_AT = ("azimuth", "elevation", "distance", "bias")


def as_mesh_reconstruction(recon, name: str = "reconstruction") -> MeshReconstruction:
    """Check a :class:`Reconstruction` and return it as a :class:`MeshReconstruction` whose
    camera is a batch-of-one :class:`~mirror3d.render.Camera` on the vertices' device and dtype.

    Raises:
        ValueError: missing attributes, a bad mesh (shapes, dtypes, NaN, indices), a camera that
            is neither a batch-of-one Camera nor look-at parameters, or a bad ``image_size``.
    """
    for attr in ("vertices", "faces", "camera"):
        if not hasattr(recon, attr):
            raise ValueError(f"{name}: expected an object with .vertices, .faces and .camera; "
                             f"{type(recon).__name__} has no .{attr}")
    verts, faces, cam = recon.vertices, recon.faces, recon.camera
    check_mesh(verts, faces, f"{name}.vertices", f"{name}.faces", batched=False)
    if faces.dtype != torch.int64:
        raise ValueError(f"{name}.faces: expected dtype int64, got {faces.dtype}")
    if faces.shape[0] == 0:
        raise ValueError(f"{name}.faces: expected at least one face")
    if not isinstance(cam, Camera):
        if not all(hasattr(cam, a) for a in _LOOK_AT):
            raise ValueError(f"{name}.camera: expected a mirror3d.render.Camera or look-at "
                             f"parameters {_LOOK_AT}, got {type(cam).__name__}")
        try:
            cam = look_at_camera(torch.as_tensor(cam.azimuth, dtype=torch.float64).reshape(1),
                                 torch.as_tensor(cam.elevation, dtype=torch.float64).reshape(1),
                                 torch.as_tensor(cam.distance, dtype=torch.float64).reshape(1),
                                 torch.as_tensor(cam.bias, dtype=torch.float64).reshape(1, 2))
        except (TypeError, RuntimeError) as e:
            raise ValueError(f"{name}.camera: bad look-at parameters ({e})") from None
    if cam.batch_size != 1:
        raise ValueError(f"{name}.camera: expected batch size 1, got {cam.batch_size}")
    size = getattr(recon, "image_size", None)
    if size is not None:
        try:
            w, h = (int(v) for v in size)
        except (TypeError, ValueError):
            raise ValueError(f"{name}.image_size: expected (W, H), got {size!r}") from None
        if w <= 0 or h <= 0:
            raise ValueError(f"{name}.image_size: expected (W, H) > 0, got {size!r}")
        size = (w, h)
    return MeshReconstruction(verts, faces, cam.to(device=verts.device, dtype=verts.dtype), size)


def check_reconstruction(recon, name: str = "reconstruction") -> None:
    """Raise ``ValueError`` unless ``recon`` is a usable :class:`Reconstruction`."""
    as_mesh_reconstruction(recon, name)


def _aspect(recon: MeshReconstruction, h: int, w: int) -> float:
    """W/H of the model input when the reconstruction names it, else of the photo."""
    return recon.image_size[0] / recon.image_size[1] if recon.image_size else w / h


def check_image_mask(image: np.ndarray, mask: np.ndarray | None,
                     mask_required: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate an (H, W, 3) uint8 image and an (H, W) mask.

    Returns:
        rgb: (H, W, 3) float32 in [0, 1]; mask: (H, W) bool or None.
    """
    img = np.asarray(image)
    rgb = image_to_rgb(img)
    if mask is None:
        if mask_required:
            raise ValueError("mask: this lifting mode needs a foreground mask, got None")
        return rgb, None
    m = np.asarray(mask)
    if m.shape != img.shape[:2]:
        raise ValueError(f"mask: expected shape {img.shape[:2]} like the image, got {m.shape}")
    if m.dtype != bool:
        if not np.isin(m, (0, 1)).all():
            raise ValueError("mask: expected bool or 0/1 values")
        m = m.astype(bool)
    return rgb, m


# --------------------------------------------------------------------------------------------
# visibility
# --------------------------------------------------------------------------------------------


@dataclass
class VisiblePoints:
    """Visible, coloured surface points of one image.

    Attributes:
        xyz: (M, 3) object frame.  rgb: (M, 3) in [0, 1].
        depth: (M,) view depth (distance along the camera's viewing axis).
        pixel: (M, 2) int64 (row, column) of the nearest pixel.
        num_sampled: surface samples drawn before the visibility test.
    """

    xyz: torch.Tensor
    rgb: torch.Tensor
    depth: torch.Tensor
    pixel: torch.Tensor
    num_sampled: int


def visible_surface_points(
    recon: Reconstruction,
    image: np.ndarray,
    mask: np.ndarray | None,
    num_samples: int,
    generator: torch.Generator | None = None,
    depth_tol: float = 0.02,
) -> VisiblePoints:
    """Sample the mesh surface and keep the points the camera sees inside the mask.

    Args:
        recon: vertices (V, 3), faces (F, 3), camera (batch 1), object frame.
        image: (H, W, 3) uint8 (or float in [0, 1]); visibility is resolved on its pixel grid.
        mask: (H, W) bool foreground; None keeps points on any pixel.
        num_samples: surface points drawn (area-weighted) before the visibility test.
        generator: ``torch.Generator`` on the vertices' device, for reproducible draws.
        depth_tol: how far (view depth, object units) a point may lie behind the visible surface
            at its screen position and still count as visible.
    Returns:
        :class:`VisiblePoints` (colour of the nearest pixel).
    """
    recon = as_mesh_reconstruction(recon)
    rgb_np, m = check_image_mask(image, mask, mask_required=False)
    if not depth_tol >= 0:
        raise ValueError(f"depth_tol: expected a value >= 0, got {depth_tol!r}")
    h, w = rgb_np.shape[:2]
    aspect = _aspect(recon, h, w)
    verts, faces, camera = recon.vertices[None], recon.faces, recon.camera
    dev, dt = verts.device, verts.dtype
    with torch.no_grad():
        vert_ndc, vert_depth = camera.project(verts, aspect)  # (1, V, 2), (1, V)
        face_ndc, face_depth = vert_ndc[:, faces], vert_depth[:, faces]  # (1, F, 3, 2), (1, F, 3)
        valid = drawable_faces(face_ndc, face_depth)
        frags = rasterize(face_ndc, face_depth, (h, w), valid)
        pts, fidx, _ = sample_points_on_faces(verts, faces, num_samples, generator=generator,
                                              return_faces=True)
        ndc, depth = camera.project(pts, aspect)  # (1, N, 2), (1, N)
        ndc, depth, pts, fidx = ndc[0], depth[0], pts[0], fidx[0]
        jc_ic = ndc_to_pixel(ndc, (h, w))
        col = torch.floor(jc_ic[:, 0] + 0.5).long()
        row = torch.floor(jc_ic[:, 1] + 0.5).long()
        keep = (depth > NEAR_DEPTH) & valid[0][fidx]
        keep &= (col >= 0) & (col < w) & (row >= 0) & (row < h)
        row_c, col_c = row.clamp(0, h - 1), col.clamp(0, w - 1)
        owner = frags.face_index[0, row_c, col_c]
        keep &= owner >= 0
        if m is not None:
            keep &= torch.as_tensor(m, device=dev)[row_c, col_c]
        # visible-surface depth at each point's own screen position, on the owner face's plane
        owner_c = owner.clamp_min(0)
        wts = barycentric(ndc, face_ndc[0, owner_c])  # (N, 3)
        inv = (wts / face_depth[0, owner_c]).sum(-1)
        surface = 1.0 / torch.where(inv > 0, inv, torch.full_like(inv, 1e-12))
        keep &= depth <= surface + depth_tol
        image_t = torch.as_tensor(rgb_np, device=dev, dtype=dt)
        rgb = image_t[row_c[keep], col_c[keep]]
    return VisiblePoints(pts[keep], rgb, depth[keep], torch.stack([row[keep], col[keep]], -1),
                         int(num_samples))


def background_points(
    camera: Camera,
    image: np.ndarray,
    mask: np.ndarray,
    depth: float,
    aspect: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Background pixels (mask == 0) on the plane of view depth ``depth``, in the object frame.

    Args:
        camera: batch-of-one camera (its device and dtype are used).
        image: (H, W, 3) uint8 or float in [0, 1].  mask: (H, W) bool foreground.
        depth: view depth of the plane (> 0), e.g. the mean depth of the body points.
        aspect: the camera's W/H (default: the image's).
    Returns:
        xyz: (K, 3) object frame and rgb: (K, 3) in [0, 1], K = number of background pixels,
        row-major pixel order.
    """
    rgb_np, m = check_image_mask(image, mask, mask_required=True)
    if not isinstance(camera, Camera) or camera.batch_size != 1:
        raise ValueError("camera: expected a mirror3d.render.Camera with batch size 1")
    if not (np.isfinite(depth) and depth > 0):
        raise ValueError(f"depth: expected a finite value > 0, got {depth!r}")
    h, w = m.shape
    dev, dt = camera.position.device, camera.position.dtype
    p0, p1, _ = projection_vector(w / h if aspect is None else aspect)
    ys, xs = pixel_centers_ndc((h, w), device=dev, dtype=dt)
    bg = ~torch.as_tensor(m, device=dev)
    d = float(depth)
    cam_pts = torch.stack([xs[bg] / p0 * d, ys[bg] / p1 * d,
                           torch.full_like(xs[bg], -d)], dim=-1)
    xyz = camera.camera_to_world(cam_pts[None])[0]
    rgb = torch.as_tensor(rgb_np, device=dev, dtype=dt)[bg]
    return xyz, rgb


def lift_visible(
    image: np.ndarray,
    mask: np.ndarray,
    recon: Reconstruction,
    num_samples: int,
    generator: torch.Generator | None = None,
    depth_tol: float = 0.02,
    background: bool = False,
    frame: str = "object",
) -> np.ndarray:
    """Visible coloured surface points, optionally plus the background at the mean body depth.

    Args:
        image: (H, W, 3) uint8.  mask: (H, W) bool foreground (required).
        recon: the image's reconstruction.  num_samples: surface samples drawn.
        background: add the background pixels (``casl-visible+bg``).
        frame: ``"object"``: the mesh's frame, which turns with the predicted azimuth relative to
            the image (a person keeps one frame whichever way the camera saw them), so the
            background plane of ``casl-visible+bg`` faces a different way in every image;
            ``"camera"``: the predicted camera's frame (x right, y up, −z forward: what the image
            shows, as an SMPL fit returned by HMR, the OG-Net paper's lifting), where that plane
            always faces +z.
    Returns:
        (M, 6) float32 [x, y, z, r, g, b], body points first (sample order), then background
        pixels (row-major).
    Raises:
        ValueError: bad inputs; with ``background``, no visible body point (no mean depth).
    """
    if frame not in ("object", "camera"):
        raise ValueError(f"frame: expected 'object' or 'camera', got {frame!r}")
    _, m = check_image_mask(image, mask, mask_required=True)
    recon = as_mesh_reconstruction(recon)
    vis = visible_surface_points(recon, image, m, num_samples, generator, depth_tol)
    xyz, rgb = vis.xyz, vis.rgb
    if background:
        if vis.depth.numel() == 0:
            raise ValueError("no visible body point: the background has no mean depth")
        bxyz, brgb = background_points(recon.camera, image, m, float(vis.depth.mean()),
                                       _aspect(recon, *m.shape))
        xyz, rgb = torch.cat([xyz, bxyz]), torch.cat([rgb, brgb])
    if frame == "camera":
        xyz = recon.camera.world_to_camera(xyz[None])[0]
    return torch.cat([xyz, rgb], dim=1).cpu().numpy().astype(np.float32)
