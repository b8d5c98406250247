"""CASL losses (Zheng et al. 2022, "3D Magic Mirror", as in its reference code), every weight a
config value.

- data: L1 between render and input, both composited on white with the GT mask (only foreground
  pixels differ), plus 1 − soft IoU of the soft silhouette vs the GT mask; the sum × ``data`` (2).
- mesh regularisers on the predicted offsets δ and vertices (Laplacian, flatten, edge variance,
  deform, depth prior, z-mirror flip) from :mod:`mirror3d.render.losses`.
- interpolation consistency (IC): attributes re-encoded from a render of interpolated attributes
  against those attributes (detached): L1 on (cos, sin) of azimuth and elevation, distance, look-at
  bias, textures, 0.1·L1 on lights, chamfer on vertices.
- WGAN-GP on (RGB + mask): λ = 1e-4, gradient penalty weight 10.
- warm-up: every loss × a factor rising 0.01 → 1 over the first ``warm_epochs`` epochs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mirror3d.render.chamfer import chamfer_distance
from mirror3d.render.losses import (deform_loss, depth_prior_loss, edge_variance_loss,
                                    flatten_loss, laplacian_loss, z_mirror_flip_loss)

__all__ = ["CaslLossConfig", "warm_up_factor", "composite_on_white", "soft_iou", "data_loss",
           "mesh_regularisers", "flip_term", "ic_loss", "wgan_d_loss", "wgan_g_loss", "gradient_penalty"]


@dataclass
class CaslLossConfig:
    """Loss weights (Market defaults of the reference)."""

    data: float = field(default=2.0, metadata={"range": (0.0, None), "help": "lambda_data"})
    image: float = field(default=1.0, metadata={"range": (0.0, None)})
    iou: float = field(default=1.0, metadata={"range": (0.0, None)})
    reg: float = field(default=0.1, metadata={"range": (0.0, None),
                                              "help": "lambda_reg (× laplacian and flatten)"})
    laplacian: float = field(default=0.1, metadata={"range": (0.0, None)})
    flatten: float = field(default=0.02, metadata={"range": (0.0, None)})
    edge: float = field(default=0.001, metadata={"range": (0.0, None)})
    deform: float = field(default=0.1, metadata={"range": (0.0, None)})
    depth: float = field(default=0.15, metadata={"range": (0.0, None)})
    depth_kind: str = field(default="exp", metadata={"choices": ["exp", "quadratic"],
                                                     "help": "depthR (exp) or depthC (quadratic)"})
    depth_temp: float = field(default=2.0, metadata={"range": (0.0, None)})
    flip: float = field(default=0.1, metadata={"range": (0.0, None)})
    ic: float = field(default=1.0, metadata={"range": (0.0, None)})
    ic_light: float = field(default=0.1, metadata={"range": (0.0, None)})
    gan: float = field(default=1e-4, metadata={"range": (0.0, None)})
    gan_gp: float = field(default=10.0, metadata={"range": (0.0, None)})
    warm_epochs: float = field(default=40.0, metadata={"range": (0.0, None)})


def warm_up_factor(epoch: float, warm_epochs: float) -> float:
    """0.01 at epoch 0, rising linearly to 1 at ``warm_epochs`` (fractional epochs allowed)."""
    if warm_epochs <= 0:
        return 1.0
    return min(1.0, 0.01 + 0.99 * epoch / warm_epochs)


def composite_on_white(rgb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """rgb (B, 3, H, W), mask (B, H, W) or (B, 1, H, W) → rgb·m + (1 − m)."""
    m = mask if mask.dim() == 4 else mask[:, None]
    return rgb * m + (1.0 - m)


def soft_iou(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-image soft IoU Σab / Σ(a + b − ab). pred, target: (B, H, W). Returns (B,)."""
    inter = (pred * target).flatten(1).sum(1)
    union = (pred + target - pred * target).flatten(1).sum(1)
    return inter / (union + eps)


def data_loss(render_rgb: torch.Tensor, render_soft: torch.Tensor, image_rgb: torch.Tensor,
              gt_mask: torch.Tensor, cfg: CaslLossConfig) -> tuple[torch.Tensor, dict]:
    """Foreground L1 (both on white with the GT mask) + (1 − soft IoU), × ``cfg.data``.

    Args:
        render_rgb: (B, 3, H, W).  render_soft: (B, H, W).  image_rgb: (B, 3, H, W) in [0, 1].
        gt_mask: (B, H, W) binary.
    """
    a = composite_on_white(render_rgb, gt_mask)
    b = composite_on_white(image_rgb, gt_mask)
    l1 = (a - b).abs().mean()
    iou = 1.0 - soft_iou(render_soft, gt_mask).mean()
    total = cfg.data * (cfg.image * l1 + cfg.iou * iou)
    return total, {"l1": l1.detach(), "mask_iou_loss": iou.detach()}


def mesh_regularisers(delta: torch.Tensor, verts: torch.Tensor, faces: torch.Tensor,
                      laplacian: torch.Tensor, edge_faces: torch.Tensor, edges: torch.Tensor,
                      template_z_sign: torch.Tensor, ratio: float, cfg: CaslLossConfig
                      ) -> tuple[torch.Tensor, dict]:
    """Weighted sum of the mesh regularisers of one attribute set (normalised as the reference code does).

    Laplacian and flatten × ``reg``; edge, deform and depth are not (as the reference). The
    z-mirror flip term is separate (:func:`flip_term`): the reference averages it over one more
    attribute set than the others.
    """
    terms = {
        "laplacian": cfg.reg * cfg.laplacian * laplacian_loss(delta, laplacian),
        "flatten": cfg.reg * cfg.flatten * flatten_loss(verts, faces, edge_faces),
        "edge": cfg.edge * edge_variance_loss(verts, faces, edges),
        "deform": cfg.deform * deform_loss(delta),
        "depth": cfg.depth * depth_prior_loss(verts, template_z_sign, ratio, cfg.depth_kind,
                                              cfg.depth_temp),
    }
    return sum(terms.values()), {k: v.detach() for k, v in terms.items()}


def flip_term(delta: torch.Tensor, mirror_index: torch.Tensor, template_z: torch.Tensor,
              cfg: CaslLossConfig) -> torch.Tensor:
    """``flip`` × the front/back (z-mirror) symmetry of the offsets."""
    return cfg.flip * z_mirror_flip_loss(delta, mirror_index, template_z)


def ic_loss(re: dict, target: dict, verts_re: torch.Tensor, verts_target: torch.Tensor,
            cfg: CaslLossConfig) -> tuple[torch.Tensor, dict]:
    """Interpolation consistency between re-encoded attributes ``re`` and the rendered
    (detached) attributes ``target``; both dict-like with azimuth_cs, elevation_cs (B, 2),
    distance (B,), bias (B, 2), texture (B, 3, 2H, W), light (B, 9)."""
    def l1(a, b):
        return (a - b.detach()).abs().mean()

    terms = {
        "ic_azimuth": l1(re["azimuth_cs"], target["azimuth_cs"]),
        "ic_elevation": l1(re["elevation_cs"], target["elevation_cs"]),
        "ic_distance": l1(re["distance"], target["distance"]),
        "ic_bias": l1(re["bias"], target["bias"]),
        "ic_shape": chamfer_distance(verts_re, verts_target.detach()),
        "ic_texture": l1(re["texture"], target["texture"]),
        "ic_light": cfg.ic_light * l1(re["light"], target["light"]),
    }
    return cfg.ic * sum(terms.values()), {k: v.detach() for k, v in terms.items()}


def gradient_penalty(disc: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """(‖∇D(x̂)‖₂ − 1)² averaged, x̂ = α·real + (1 − α)·fake with one α per sample."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    x = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    out = disc(x)
    grad, = torch.autograd.grad(out.sum(), x, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()


def wgan_d_loss(disc: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor,
                cfg: CaslLossConfig) -> tuple[torch.Tensor, dict]:
    """λ·[mean D(fake) − mean D(real)] + gp·λ·GP (fake is detached here)."""
    fake = fake.detach()
    d_real, d_fake = disc(real).mean(), disc(fake).mean()
    gp = gradient_penalty(disc, real, fake)
    loss = cfg.gan * (d_fake - d_real) + cfg.gan_gp * cfg.gan * gp
    return loss, {"d_real": d_real.detach(), "d_fake": d_fake.detach(), "gp": gp.detach()}


def wgan_g_loss(disc: torch.nn.Module, fake: torch.Tensor, cfg: CaslLossConfig) -> torch.Tensor:
    """−λ·mean D(fake)."""
    return -cfg.gan * disc(fake).mean()
