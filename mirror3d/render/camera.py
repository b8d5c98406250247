"""Look-at perspective camera with the CASL / DIB-R conventions.

CASL is Zheng et al. 2022 ("3D Magic Mirror", arXiv:2204.13096); the camera below is the one its
public code hands to the DIB-R renderer (Chen et al. 2019, §3).

- Camera position (d·cosE·sinA, d·sinE, d·cosE·cosA), angles in degrees, looking at (bx, by, 0),
  up +y. Camera axes: z = normalise(position − look_at), x = normalise(up × z), y = z × x.
- A world point p (row vector) goes to camera space as p_c = (p − position) · R, R = [x y z]
  (columns). The camera looks along −z.
- Projection: x_ndc = p0·x_c / (−z_c), y_ndc = p1·y_c / (−z_c) with p1 = 1/tan(fovy/2) = 2.5
  (fovy = 2·atan(1/2.5) ≈ 43.6°) and p0 = p1 / aspect, aspect = W/H.
- Pixel centres: x = (2j + 1 − W)/W, y = (H − 2i − 1)/H, so row 0 is the top of the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["Camera", "look_at_camera", "FOVY_DEG", "projection_vector", "ndc_to_pixel",
           "pixel_centers_ndc"]

#: Vertical field of view of the CASL camera, 2·atan(1/2.5) ≈ 43.60°.
FOVY_DEG: float = math.degrees(2.0 * math.atan(1.0 / 2.5))


def projection_vector(aspect: float, fovy_deg: float = FOVY_DEG) -> tuple[float, float, float]:
    """kaolin's ``generate_perspective_projection`` vector [1/(tan(fovy/2)·aspect), 1/tan(fovy/2), −1].

    Market (aspect 0.5) → [5, 2.5, −1]; CUB (1) → [2.5, 2.5, −1]; ATR (0.6) → [4.167, 2.5, −1].
    """
    if not (aspect > 0 and math.isfinite(aspect)):
        raise ValueError(f"aspect: expected a finite value > 0 (W/H), got {aspect!r}")
    p1 = 1.0 / math.tan(math.radians(fovy_deg) / 2.0)
    return (p1 / aspect, p1, -1.0)


def _as_batch(x, name: str, batch: int | None, device, dtype) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=dtype, device=device)
    if t.dim() == 0:
        t = t.reshape(1)
    if t.dim() != 1:
        raise ValueError(f"{name}: expected a scalar or a (B,) tensor, got shape {tuple(t.shape)}")
    if batch is not None and t.shape[0] not in (1, batch):
        raise ValueError(f"{name}: expected batch size 1 or {batch}, got {t.shape[0]}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: expected finite values, got {t.tolist()}")
    return t


@dataclass
class Camera:
    """A batch of look-at cameras. All fields are tensors with leading batch dimension B.

    Attributes:
        azimuth: (B,) degrees.  elevation: (B,) degrees.  distance: (B,).
        bias: (B, 2) look-at point (bx, by) on the z = 0 plane.
        rotation: (B, 3, 3) R with columns the camera axes x, y, z in world coordinates.
        position: (B, 3) camera centre in world coordinates.
    """

    azimuth: torch.Tensor
    elevation: torch.Tensor
    distance: torch.Tensor
    bias: torch.Tensor
    rotation: torch.Tensor
    position: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.position.shape[0]

    def to(self, *args, **kwargs) -> "Camera":
        return Camera(*(getattr(self, f).to(*args, **kwargs) for f in
                        ("azimuth", "elevation", "distance", "bias", "rotation", "position")))

    def __getitem__(self, idx) -> "Camera":
        """Select cameras of the batch (an int keeps a batch of one)."""
        if isinstance(idx, int):
            idx = slice(idx, idx + 1) if idx != -1 else slice(-1, None)
        return Camera(*(getattr(self, f)[idx] for f in
                        ("azimuth", "elevation", "distance", "bias", "rotation", "position")))

    def world_to_camera(self, points: torch.Tensor) -> torch.Tensor:
        """points: (B, N, 3) world → (B, N, 3) camera space (camera looks along −z)."""
        return torch.bmm(points - self.position[:, None, :], self.rotation)

    def camera_to_world(self, points: torch.Tensor) -> torch.Tensor:
        """points: (B, N, 3) camera space → (B, N, 3) world."""
        return torch.bmm(points, self.rotation.transpose(1, 2)) + self.position[:, None, :]

    def project(self, points: torch.Tensor, aspect: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Perspective projection.

        Args:
            points: (B, N, 3) world coordinates.
            aspect: image width / height.
        Returns:
            ndc: (B, N, 2) normalised device coordinates (x right, y up).
            depth: (B, N) distance along the viewing axis, −z_c (positive in front).
        """
        p0, p1, _ = projection_vector(aspect)
        pc = self.world_to_camera(points)
        depth = -pc[..., 2]
        safe = torch.where(depth.abs() < 1e-8, torch.full_like(depth, 1e-8), depth)
        ndc = torch.stack([p0 * pc[..., 0] / safe, p1 * pc[..., 1] / safe], dim=-1)
        return ndc, depth

    def pixel_rays(self, image_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """World-space rays through the pixel centres.

        Returns:
            origins: (B, H·W, 3) and directions: (B, H·W, 3) (unit), row-major pixel order.
        """
        h, w = image_size
        p0, p1, _ = projection_vector(w / h)
        ys, xs = pixel_centers_ndc(image_size, device=self.position.device,
                                   dtype=self.position.dtype)
        d = torch.stack([xs / p0, ys / p1, -torch.ones_like(xs)], dim=-1).reshape(1, -1, 3)
        d = d.expand(self.batch_size, -1, -1)
        dirs = torch.bmm(d, self.rotation.transpose(1, 2))
        dirs = dirs / dirs.norm(dim=-1, keepdim=True)
        return self.position[:, None, :].expand_as(dirs), dirs


def pixel_centers_ndc(image_size: tuple[int, int], device=None, dtype=torch.float32):
    """NDC coordinates of pixel centres: ys (H, W) and xs (H, W); row 0 is y ≈ +1 (top)."""
    h, w = image_size
    i = torch.arange(h, device=device, dtype=dtype)
    j = torch.arange(w, device=device, dtype=dtype)
    ys = (h - 2 * i - 1) / h
    xs = (2 * j + 1 - w) / w
    return ys[:, None].expand(h, w), xs[None, :].expand(h, w)


def ndc_to_pixel(ndc: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """(…, 2) NDC (x, y) → (…, 2) continuous pixel coordinates (column j, row i) of centres."""
    h, w = image_size
    j = (ndc[..., 0] * w + w - 1) / 2.0
    i = (h - 1 - ndc[..., 1] * h) / 2.0
    return torch.stack([j, i], dim=-1)


def look_at_camera(
    azimuth,
    elevation,
    distance,
    bias=None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Camera:
    """Build a batch of CASL look-at cameras.

    Args:
        azimuth: (B,) or scalar, degrees; 0 looks at the front (+z side) of the object.
        elevation: (B,) or scalar, degrees; positive raises the camera.
        distance: (B,) or scalar, > 0.
        bias: (B, 2) or (2,) look-at point (bx, by) on z = 0; default (0, 0).
    Returns:
        Camera with batch size B (scalars broadcast). Differentiable in every argument.
    """
    ref = next((t for t in (azimuth, elevation, distance, bias) if isinstance(t, torch.Tensor)),
               None)
    if dtype is None:
        dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    if device is None and ref is not None:
        device = ref.device
    a = _as_batch(azimuth, "azimuth", None, device, dtype)
    e = _as_batch(elevation, "elevation", None, device, dtype)
    d = _as_batch(distance, "distance", None, device, dtype)
    batch = max(a.shape[0], e.shape[0], d.shape[0])
    if bias is None:
        b = torch.zeros(batch, 2, device=device, dtype=dtype)
    else:
        b = torch.as_tensor(bias, device=device, dtype=dtype)
        if b.dim() == 1:
            b = b[None]
        if b.dim() != 2 or b.shape[-1] != 2:
            raise ValueError(f"bias: expected shape (B, 2) or (2,), got {tuple(b.shape)}")
        if not torch.isfinite(b).all():
            raise ValueError("bias: expected finite values")
        batch = max(batch, b.shape[0])
    for name, t in (("azimuth", a), ("elevation", e), ("distance", d), ("bias", b)):
        if t.shape[0] not in (1, batch):
            raise ValueError(f"{name}: expected batch size 1 or {batch}, got {t.shape[0]}")
    a, e, d = a.expand(batch), e.expand(batch), d.expand(batch)
    b = b.expand(batch, 2)
    if (d <= 0).any():
        raise ValueError(f"distance: expected values > 0, got {d.tolist()}")

    ar, er = torch.deg2rad(a), torch.deg2rad(e)
    position = torch.stack(
        [d * torch.cos(er) * torch.sin(ar), d * torch.sin(er), d * torch.cos(er) * torch.cos(ar)],
        dim=-1,
    )
    at = torch.cat([b, torch.zeros(batch, 1, device=b.device, dtype=dtype)], dim=-1)
    z = position - at
    z = z / z.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    up = torch.tensor([0.0, 1.0, 0.0], device=z.device, dtype=dtype).expand_as(z)
    x = torch.cross(up, z, dim=-1)
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    y = torch.cross(z, x, dim=-1)
    rotation = torch.stack([x, y, z], dim=-1)
    return Camera(a, e, d, b, rotation, position)
