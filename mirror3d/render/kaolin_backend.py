"""Optional kaolin DIB-R rasteriser for CUDA tensors.

PyPI's ``kaolin`` is an empty placeholder whose import raises, and kaolin's rasteriser is CUDA-only,
so this backend is used only when ``import kaolin`` works *and* the tensors are on CUDA (see
:class:`mirror3d.render.MeshRenderer`, ``backend="auto"``). It produces the same
:class:`~mirror3d.render.rasterize.Fragments` as the PyTorch rasteriser: kaolin interpolates
one-hot corner features (giving barycentrics, with kaolin's gradients) and 1/depth; the soft
silhouette stays ours (kaolin's kernel truncates it, see ``soft_silhouette.py``).
"""

from __future__ import annotations

import functools
import logging

import torch

from mirror3d.render.rasterize import Fragments

log = logging.getLogger(__name__)

__all__ = ["available", "rasterize"]


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """True when kaolin's DIB-R rasteriser imports (checked once, logged once)."""
    try:
        from kaolin.render.mesh import dibr_rasterization  # noqa: F401  (optional: real kaolin + CUDA only)
    except Exception as exc:  # the PyPI placeholder raises on import
        log.debug("kaolin backend unavailable: %s", exc)
        return False
    return True


def rasterize(face_ndc: torch.Tensor, face_depth: torch.Tensor, valid: torch.Tensor,
              image_size: tuple[int, int]) -> Fragments:
    """kaolin ``dibr_rasterization`` → :class:`Fragments` (same contract as
    :func:`mirror3d.render.rasterize.rasterize`).

    Args:
        face_ndc: (B, F, 3, 2).  face_depth: (B, F, 3) positive depth.  valid: (B, F) bool.
    """
    from kaolin.render.mesh import dibr_rasterization  # optional: only where kaolin and CUDA exist

    h, w = image_size
    bsz, n_faces = face_ndc.shape[:2]
    eye = torch.eye(3, device=face_ndc.device, dtype=face_ndc.dtype)
    feats = torch.cat([eye.expand(bsz, n_faces, 3, 3), (1.0 / face_depth)[..., None]], dim=-1)
    # kaolin culls faces whose normal z is negative: pass +1 for drawable faces, −1 otherwise.
    normal_z = torch.where(valid, torch.ones_like(face_depth[..., 0]),
                           -torch.ones_like(face_depth[..., 0]))
    interp, _soft, face_idx = dibr_rasterization(h, w, -face_depth, face_ndc, feats, normal_z)
    face_index = face_idx.long()
    covered = face_index >= 0
    bary = interp[..., :3] * covered[..., None]
    inv_depth = interp[..., 3]
    depth = torch.where(covered, 1.0 / inv_depth.clamp_min(1e-12), torch.zeros_like(inv_depth))
    return Fragments(face_index, bary, depth, covered.to(face_ndc.dtype))
