"""3D-truth metrics of single-image reconstruction on SynthPeople (mirror3d's own protocol).

Where the true mesh and camera of an image are known (SynthPeople), a reconstruction is
compared to them three ways:

- :func:`chamfer_l2_normalised`: Chamfer-L2 between surface samples of the predicted and the
  true mesh, **each mesh in its own camera frame** — the prediction placed by its predicted
  camera, the truth by the true camera — so the viewing direction (azimuth, elevation) counts
  as it does in the image. By default each mesh is then centred on its own bounding-box
  centre (``centre=True``): the depth of a monocular reconstruction is ambiguous, and without
  it the distance error swamps the shape (``centre=False`` keeps the placement). Both point
  sets are divided by the diagonal of the axis-aligned bounding box of the *true* mesh in its
  camera frame (unit-diagonal normalisation; the prediction's own size still counts). The baseline
  reported next to it (the README's results table) — the initial template under the same
  protocol — is the initial template placed with the **true** camera
  (:func:`template_baseline_chamfer`), i.e. what a perfect camera with no shape learning would
  score.
- :func:`camera_errors`: |Δazimuth| wrapped to [0°, 180°], |Δelevation| in degrees, and the
  relative distance error |Δd| / d_true; with medians and means.
- :func:`novel_view_mask_iou`: both meshes (object frames) rendered at the true azimuth + 90°
  with the true camera otherwise (elevation, distance, look-at), hard silhouettes compared by
  IoU.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from mirror3d.metrics.image import mask_iou
from mirror3d.render.camera import Camera, look_at_camera
from mirror3d.render.chamfer import chamfer_distance
from mirror3d.render.mesh import check_mesh, sample_points_on_faces

__all__ = [
    "to_camera_frame",
    "chamfer_l2_normalised",
    "template_baseline_chamfer",
    "azimuth_difference",
    "CameraErrors",
    "camera_errors",
    "rotated_camera",
    "novel_view_mask_iou",
]


def _check_camera(camera, batch: int, name: str) -> None:
    if not isinstance(camera, Camera):
        raise ValueError(f"{name}: expected a mirror3d.render.Camera, got {type(camera).__name__}")
    if camera.batch_size != batch:
        raise ValueError(f"{name}: expected a batch of {batch} cameras, got {camera.batch_size}")


def to_camera_frame(verts: torch.Tensor, camera: Camera) -> torch.Tensor:
    """World (object-frame) vertices (B, V, 3) → the camera frame of ``camera`` (B cameras):
    p_c = (p − position)·R; the camera looks along −z, +y is image-up."""
    _check_camera(camera, verts.shape[0], "camera")
    return camera.to(device=verts.device, dtype=verts.dtype).world_to_camera(verts)


def _check_verts(verts, faces, name: str) -> None:
    if not isinstance(verts, torch.Tensor) or verts.dim() != 3 or verts.shape[-1] != 3:
        raise ValueError(f"{name}_verts: expected a (B, V, 3) tensor, got "
                         f"{tuple(verts.shape) if isinstance(verts, torch.Tensor) else type(verts).__name__}")
    if not verts.is_floating_point() or not bool(torch.isfinite(verts).all()):
        raise ValueError(f"{name}_verts: expected finite floating-point coordinates")
    check_mesh(verts, faces)


def chamfer_l2_normalised(pred_verts: torch.Tensor, pred_faces: torch.Tensor,
                          gt_verts: torch.Tensor, gt_faces: torch.Tensor, n_points: int = 10000,
                          seed: int = 0, pred_camera: Camera | None = None,
                          gt_camera: Camera | None = None, centre: bool = True) -> torch.Tensor:
    """Normalised squared-L2 Chamfer distance between two surfaces, each in its camera frame.

    1. Frames: if ``pred_camera`` / ``gt_camera`` is given, that mesh's vertices are taken as
       object-frame coordinates and moved into the camera's frame (:func:`to_camera_frame`);
       if it is None they are used as given (already in the frame to compare in).
    2. With ``centre`` (default) each mesh is translated so that the centre of its vertices'
       axis-aligned bounding box is the origin (translation removed; rotation and size kept).
    3. ``n_points`` points are drawn uniformly on each surface (area-weighted faces), each mesh
       with a fresh ``torch.Generator`` seeded ``seed`` (identical meshes give identical
       samples, so exactly 0).
    4. Both point sets are divided by s = the diagonal of the axis-aligned bounding box of the
       **true** vertices in the compared frame, so the true mesh has unit diagonal.
    5. Chamfer-L2 in pytorch3d's "mean/mean" form: mean over predicted points of the squared
       distance to the nearest true point plus the same from the true side.

    Args:
        pred_verts: (B, Vp, 3).  pred_faces: (Fp, 3).
        gt_verts: (B, Vg, 3).  gt_faces: (Fg, 3).
    Returns:
        (B,) distances (units: squared GT diagonals).
    """
    _check_verts(pred_verts, pred_faces, "pred")
    _check_verts(gt_verts, gt_faces, "gt")
    b = pred_verts.shape[0]
    if gt_verts.shape[0] != b:
        raise ValueError(f"pred_verts, gt_verts: expected one batch size, got {b} and {gt_verts.shape[0]}")
    if int(n_points) != n_points or n_points < 1:
        raise ValueError(f"n_points: expected an int >= 1, got {n_points!r}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed: expected an int >= 0, got {seed!r}")
    dtype = torch.promote_types(pred_verts.dtype, gt_verts.dtype)
    pv, gv = pred_verts.detach().to(dtype), gt_verts.detach().to(gt_verts.device, dtype)
    if pred_camera is not None:
        pv = to_camera_frame(pv, pred_camera)
    if gt_camera is not None:
        gv = to_camera_frame(gv, gt_camera)
    if centre:
        pv = pv - 0.5 * (pv.amax(dim=1, keepdim=True) + pv.amin(dim=1, keepdim=True))
        gv = gv - 0.5 * (gv.amax(dim=1, keepdim=True) + gv.amin(dim=1, keepdim=True))
    diag = (gv.amax(dim=1) - gv.amin(dim=1)).norm(dim=-1)  # (B,)
    if not bool((diag > 0).all()):
        raise ValueError("gt_verts: a true mesh has a zero-size bounding box")

    def sample(v, f):
        g = torch.Generator(device=v.device).manual_seed(int(seed))
        return sample_points_on_faces(v, f.to(v.device), int(n_points), generator=g)

    pp = sample(pv, pred_faces) / diag[:, None, None].to(pv.device)
    gp = sample(gv, gt_faces) / diag[:, None, None]
    return chamfer_distance(pp, gp.to(pp.device), reduction="none")


def template_baseline_chamfer(template: torch.Tensor, template_faces: torch.Tensor,
                              gt_verts: torch.Tensor, gt_faces: torch.Tensor, gt_camera: Camera,
                              n_points: int = 10000, seed: int = 0, centre: bool = True) -> torch.Tensor:
    """The baseline of :func:`chamfer_l2_normalised`: a fixed ``template`` (V, 3), e.g. the
    initial CASL icosphere, placed with the **true** camera, against the true meshes.

    Returns:
        (B,) distances.
    """
    if not isinstance(template, torch.Tensor) or template.dim() != 2 or template.shape[-1] != 3:
        got = tuple(template.shape) if isinstance(template, torch.Tensor) else type(template).__name__
        raise ValueError(f"template: expected a (V, 3) tensor, got {got}")
    b = gt_verts.shape[0]
    t = template.to(gt_verts)[None].expand(b, -1, -1)
    return chamfer_l2_normalised(t, template_faces, gt_verts, gt_faces, n_points, seed,
                                 pred_camera=gt_camera, gt_camera=gt_camera, centre=centre)


# --------------------------------------------------------------------------------------------
# camera
# --------------------------------------------------------------------------------------------
def azimuth_difference(a, b) -> torch.Tensor:
    """|a − b| for angles in degrees, wrapped to [0°, 180°] (350° vs 10° → 20°)."""
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    d = torch.remainder(a - b, 360.0)
    return torch.minimum(d, 360.0 - d)


def _field(src, key: str) -> torch.Tensor:
    if isinstance(src, Mapping):
        if key not in src:
            raise ValueError(f"camera: missing {key!r}")
        v = src[key]
    elif hasattr(src, key):
        v = getattr(src, key)
    else:
        raise ValueError(f"camera: expected a mapping or object with {key!r}, got {type(src).__name__}")
    t = torch.as_tensor(v.detach().cpu() if isinstance(v, torch.Tensor) else v, dtype=torch.float64)
    t = t.reshape(-1)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{key}: expected finite values")
    return t


@dataclass
class CameraErrors:
    """Per-image camera errors (all (B,) float64).

    Attributes:
        azimuth: |Δazimuth| in degrees, in [0, 180].
        elevation: |Δelevation| in degrees.
        distance_rel: |d_pred − d_true| / d_true.
    """

    azimuth: torch.Tensor
    elevation: torch.Tensor
    distance_rel: torch.Tensor

    def summary(self) -> dict[str, float]:
        """Medians and means (the median azimuth error is the headline: front/back flips make
        the mean large)."""
        out: dict[str, float] = {"n": int(self.azimuth.numel())}
        for name, unit, t in (("azimuth", "_deg", self.azimuth), ("elevation", "_deg", self.elevation),
                              ("distance_rel", "", self.distance_rel)):
            out[f"{name}_median{unit}"] = float(t.median()) if t.numel() else float("nan")
            out[f"{name}_mean{unit}"] = float(t.mean()) if t.numel() else float("nan")
        return out


def camera_errors(pred, gt) -> CameraErrors:
    """Camera errors of predictions against the truth.

    Args:
        pred, gt: anything with ``azimuth``, ``elevation`` (degrees) and ``distance`` as
            attributes or keys, each (B,) or scalar (a :class:`Camera`, CASL attributes, a dict
            of ground-truth columns).
    """
    pa, pe, pd = (_field(pred, k) for k in ("azimuth", "elevation", "distance"))
    ga, ge, gd = (_field(gt, k) for k in ("azimuth", "elevation", "distance"))
    n = {t.numel() for t in (pa, pe, pd, ga, ge, gd)}
    if len(n) != 1:
        raise ValueError(f"pred, gt: expected one batch size for every camera field, got sizes {sorted(n)}")
    if bool((gd <= 0).any()):
        raise ValueError("gt: expected distances > 0")
    return CameraErrors(azimuth_difference(pa, ga), (pe - ge).abs(), (pd - gd).abs() / gd)


def rotated_camera(camera: Camera, azimuth_offset: float) -> Camera:
    """``camera`` with ``azimuth_offset`` degrees added to its azimuth (wrapped to [−180, 180))
    and everything else kept."""
    az = torch.remainder(camera.azimuth + float(azimuth_offset) + 180.0, 360.0) - 180.0
    return look_at_camera(az, camera.elevation, camera.distance, camera.bias)


def novel_view_mask_iou(pred_verts: torch.Tensor, pred_faces: torch.Tensor, gt_verts: torch.Tensor,
                        gt_faces: torch.Tensor, gt_camera: Camera, renderer,
                        azimuth_offset: float = 90.0) -> torch.Tensor:
    """Silhouette IoU of prediction and truth seen from a side the input did not show.

    Both meshes are in their object frames; both are rendered (hard coverage, no soft edge)
    with ``gt_camera`` turned by ``azimuth_offset`` degrees (:func:`rotated_camera`).

    Args:
        pred_verts: (B, Vp, 3).  pred_faces: (Fp, 3).  gt_verts: (B, Vg, 3).  gt_faces: (Fg, 3).
        gt_camera: the true cameras (B).  renderer: a :class:`~mirror3d.render.MeshRenderer`.
    Returns:
        (B,) IoU in [0, 1] (1 when both silhouettes are empty).
    """
    _check_verts(pred_verts, pred_faces, "pred")
    _check_verts(gt_verts, gt_faces, "gt")
    if gt_verts.shape[0] != pred_verts.shape[0]:
        raise ValueError(f"pred_verts, gt_verts: expected one batch size, got {pred_verts.shape[0]} "
                         f"and {gt_verts.shape[0]}")
    _check_camera(gt_camera, gt_verts.shape[0], "gt_camera")
    cam = rotated_camera(gt_camera, azimuth_offset)
    a = renderer.silhouette(pred_verts.detach(), pred_faces, cam.to(device=pred_verts.device))
    b = renderer.silhouette(gt_verts.detach().to(pred_verts), gt_faces, cam.to(device=pred_verts.device))
    return mask_iou((a > 0.5).float(), (b > 0.5).float())
