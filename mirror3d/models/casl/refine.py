"""Test-time refinement of one image's CASL attributes (beyond the papers).

CASL (Zheng et al. 2022, "3D Magic Mirror", arXiv:2204.13096) reconstructs an image with one
forward pass of its encoders. :func:`refine_attributes` continues from that prediction and
optimises the attributes of the image itself — not the network — with the self-supervised
losses the training uses on the reconstruction:

- the data loss (:func:`mirror3d.models.casl.losses.data_loss`: masked L1 of the render against
  the input, both on white with the GT mask, + 1 − soft IoU of the soft silhouette);
- the mesh regularisers (:func:`~mirror3d.models.casl.losses.mesh_regularisers`: Laplacian,
  flatten, edge variance, deform, depth prior) and the z-mirror flip term
  (:func:`~mirror3d.models.casl.losses.flip_term`) of the refined offsets;

weighted by the model's own loss config (the checkpoint's ``loss`` section). The training's
other terms need a batch or a critic (interpolation consistency, WGAN) and are left out.

What is optimised (:data:`REFINABLE`; :data:`DEFAULT_REFINED` by default):

- ``delta``: the shape offsets, re-centred (mean over vertices 0) as the shape encoder does;
- ``distance``, ``elevation``: through the encoder's own sigmoid onto
  ``net.distance_range`` / ``net.elevation_range``, so they stay inside the ranges;
- ``bias``: the look-at offset through tanh, inside (−1, 1)²;
- ``texture``: the UV image through a sigmoid (stays in [0, 1]); the texture map's lower half
  remains the vertical flip of the upper half (the texture encoder's front/back symmetry);
- ``light``: through the light encoder's tanh·scale + offset, inside its range;
- ``azimuth`` (not by default): a free angle in degrees. A silhouette barely tells a view from
  its mirror (front/back), so a local descent on the azimuth mostly trades off against the
  offsets; the azimuth the camera encoder learned from the whole training set is kept.

The background is kept (it only shows where the render leaves the GT mask uncovered).

Every attribute is written as ``value₀ + f(z₀ + u) − f(z₀)`` with ``u`` the optimised tensor,
starting at 0, so step 0 reproduces the network's prediction bit for bit. Adam on the ``u``
tensors only; the network weights take no part. Each image of a batch is refined independently
(its loss has its own parameters; Adam is element-wise), the best-so-far attributes of each image
are returned: the returned loss is never above the network prediction's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mirror3d.models.casl.encoders import LIGHT_OFFSET, LIGHT_SCALE
from mirror3d.models.casl.losses import (CaslLossConfig, data_loss, flip_term, mesh_regularisers,
                                         soft_iou)
from mirror3d.models.casl.model import CaslModel
from mirror3d.models.casl.networks import CaslAttributes

__all__ = ["REFINABLE", "DEFAULT_REFINED", "LR_SCALE", "RefineHistory", "refinement_loss",
           "refine_attributes"]

#: Attributes :func:`refine_attributes` can optimise.
REFINABLE = ("delta", "distance", "elevation", "bias", "azimuth", "texture", "light")
#: Those it optimises by default (the azimuth is kept: see the module docstring).
DEFAULT_REFINED = ("delta", "distance", "elevation", "bias", "texture", "light")
#: Learning-rate factor of each attribute's ``u`` (× ``lr``): ``u`` of the azimuth is in degrees,
#: the others in the pre-activation units of their encoder heads.
LR_SCALE = {"delta": 1.0, "distance": 5.0, "elevation": 5.0, "bias": 2.0, "azimuth": 100.0,
            "texture": 10.0, "light": 5.0}

_EPS = 1e-4


@dataclass
class RefineHistory:
    """What one refinement did (T = steps taken, B = images).

    Attributes:
        loss: (T + 1, B) the refinement loss before each step and after the last one; row 0
            is the network's prediction.
        mask_iou: (T + 1, B) soft IoU of the soft silhouette against the mask, same rows.
        best_step: (B,) the row whose attributes were returned (0 = the prediction itself).
    """

    loss: torch.Tensor
    mask_iou: torch.Tensor
    best_step: torch.Tensor

    @property
    def steps(self) -> int:
        return self.loss.shape[0] - 1

    @property
    def best_loss(self) -> torch.Tensor:
        """(B,) the loss of the returned attributes (≤ row 0)."""
        return self.loss.gather(0, self.best_step[None])[0]


def refinement_loss(model: CaslModel, x: torch.Tensor, attrs: CaslAttributes,
                    loss: CaslLossConfig, bg: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-image loss :func:`refine_attributes` minimises, and the soft IoU.

    Args:
        x: (B, 4, H, W) RGB + mask input.  attrs: the attributes of x.
        loss: the loss weights.  bg: render on the predicted background (the training's
            ``data.bg``), else on white.
    Returns:
        loss (B,) = data + mesh regularisers + flip of each image on its own, and soft IoU (B,).
    """
    rgb, mask = x[:, :3], x[:, 3]
    rec = model.render(attrs, with_background=bg)
    verts = model.vertices(attrs)
    tz = model.template_init[:, 2]
    per = []
    for i in range(x.shape[0]):
        s = slice(i, i + 1)
        data, _ = data_loss(rec.rgb[s], rec.soft_mask[s], rgb[s], mask[s], loss)
        reg, _ = mesh_regularisers(attrs.delta[s], verts[s], model.faces, model.laplacian,
                                   model.edge_faces, model.edges, tz, model.ratio, loss)
        flip = flip_term(attrs.delta[s], model.mirror_index, tz, loss)
        per.append(data + reg + flip)
    return torch.stack(per), soft_iou(rec.soft_mask, mask)


def _logit(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(_EPS, 1.0 - _EPS)
    return torch.log(p) - torch.log1p(-p)


def _atanh(t: torch.Tensor) -> torch.Tensor:
    return torch.atanh(t.clamp(-1.0 + _EPS, 1.0 - _EPS))


class _Parametrisation:
    """value = value₀ + f(z₀ + u) − f(z₀) for every refined attribute (exact at u = 0)."""

    def __init__(self, model: CaslModel, attrs: CaslAttributes, names: tuple[str, ...]) -> None:
        self.a = attrs.detach()
        self.names = names
        cfg = model.net_cfg
        a = self.a
        self.ranges = {"distance": tuple(cfg.distance_range), "elevation": tuple(cfg.elevation_range)}
        self.z: dict[str, torch.Tensor] = {}
        for name in ("distance", "elevation"):
            lo, hi = self.ranges[name]
            self.z[name] = _logit((a[name] - lo) / (hi - lo))
        self.z["bias"] = _atanh(a.bias)
        self.th = a.texture.shape[2] // 2
        self.z["texture"] = _logit(a.texture[:, :, :self.th])
        scale = torch.tensor(LIGHT_SCALE, dtype=a.light.dtype, device=a.light.device)
        offset = torch.tensor(LIGHT_OFFSET, dtype=a.light.dtype, device=a.light.device)
        self.light_scale = scale
        self.z["light"] = _atanh((a.light - offset) / scale)
        shapes = {"delta": a.delta, "distance": a.distance, "elevation": a.elevation,
                  "bias": a.bias, "azimuth": a.azimuth, "texture": self.z["texture"],
                  "light": a.light}
        self.u = {n: torch.zeros_like(shapes[n], requires_grad=True) for n in names}

    def assemble(self, u: dict[str, torch.Tensor]) -> CaslAttributes:
        a, z = self.a, self.z
        ch: dict[str, torch.Tensor] = {}
        if "delta" in u:
            d = u["delta"]
            ch["delta"] = a.delta + (d - d.mean(dim=1, keepdim=True))
        for name in ("distance", "elevation"):
            if name in u:
                lo, hi = self.ranges[name]
                ch[name] = a[name] + (torch.sigmoid(z[name] + u[name]) - torch.sigmoid(z[name])) * (hi - lo)
        if "bias" in u:
            ch["bias"] = a.bias + (torch.tanh(z["bias"] + u["bias"]) - torch.tanh(z["bias"]))
        if "azimuth" in u:
            ch["azimuth"] = a.azimuth + u["azimuth"]
        if "texture" in u:
            top = torch.sigmoid(z["texture"] + u["texture"]) - torch.sigmoid(z["texture"])
            ch["texture"] = a.texture + torch.cat([top, top.flip(2)], dim=2)
        if "light" in u:
            ch["light"] = a.light + (torch.tanh(z["light"] + u["light"])
                                     - torch.tanh(z["light"])) * self.light_scale
        return a.replace(**ch)

    def finish(self, model: CaslModel, u: dict[str, torch.Tensor]) -> CaslAttributes:
        """The attributes of ``u`` with the azimuth wrapped to [−180, 180) and the (cos, sin)
        fields matching the angles."""
        with torch.no_grad():
            out = self.assemble(u)
            if "azimuth" in u or "elevation" in u:
                az = torch.remainder(out.azimuth + 180.0, 360.0) - 180.0
                out = model.with_camera(out, azimuth=az, elevation=out.elevation)
        return out.detach()


def refine_attributes(model: CaslModel, x: torch.Tensor, attrs: CaslAttributes, steps: int,
                      lr: float = 0.01, seed: int = 0, loss: CaslLossConfig | None = None,
                      bg: bool = False, params: tuple[str, ...] | list[str] = DEFAULT_REFINED
                      ) -> tuple[CaslAttributes, RefineHistory]:
    """Refine the attributes of each image of x by ``steps`` Adam steps (module docstring).

    Args:
        model: the CASL model (its weights are not touched; any mode).
        x: (B, 4, H, W) the encoder input (RGB + mask at the model's size).
        attrs: the network's prediction for x (``model.encode(x)``).
        steps: Adam steps (0: ``attrs`` come back unchanged).
        lr: base learning rate (× :data:`LR_SCALE` per attribute).
        seed: seeds the torch RNG inside the refinement (forked: the caller's RNG state is left
            alone); the losses draw nothing at random, so the result is a pure function of the
            inputs (and the thread count).
        loss: the loss weights (the checkpoint's ``loss`` section; default CaslLossConfig()).
        bg: render on the predicted background (the model's ``data.bg``), else on white.
        params: the attributes to optimise, a subset of :data:`REFINABLE`.
    Returns:
        The refined attributes (detached; per image the best-so-far of every step, so its loss
        is ≤ the prediction's) and the :class:`RefineHistory`. A non-finite loss stops the
        refinement at that step.
    Raises:
        ValueError: negative steps, a non-positive lr, an unknown attribute name.
    """
    if isinstance(steps, bool) or int(steps) != steps or steps < 0:
        raise ValueError(f"steps: expected an int >= 0, got {steps!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr: expected a finite value > 0, got {lr!r}")
    names = tuple(dict.fromkeys(params))
    bad = [n for n in names if n not in REFINABLE]
    if bad or not names:
        raise ValueError(f"params: expected a non-empty subset of {REFINABLE}, got {list(params)}")
    loss = loss if loss is not None else CaslLossConfig()
    steps = int(steps)
    x = x.detach()
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(seed)
        par = _Parametrisation(model, attrs, names)
        opt = torch.optim.Adam([{"params": [par.u[n]], "lr": lr * LR_SCALE[n]} for n in names])
        losses, ious = [], []
        best_loss = best_step = None
        best_u = {n: t.detach().clone() for n, t in par.u.items()}
        for t in range(steps + 1):
            with torch.set_grad_enabled(t < steps):
                cur = par.assemble(par.u)
                per, iou = refinement_loss(model, x, cur, loss, bg)
            val = per.detach()
            if not torch.isfinite(val).all():
                break
            losses.append(val)
            ious.append(iou.detach())
            if best_loss is None:
                best_loss, best_step = val.clone(), torch.zeros_like(val, dtype=torch.long)
            else:
                better = val < best_loss
                best_loss = torch.where(better, val, best_loss)
                best_step = torch.where(better, torch.full_like(best_step, t), best_step)
                for n, u in par.u.items():
                    sel = better.reshape(-1, *([1] * (u.dim() - 1)))
                    best_u[n] = torch.where(sel, u.detach(), best_u[n])
            if t == steps:
                break
            opt.zero_grad(set_to_none=True)
            per.sum().backward()
            opt.step()
    if not losses or bool((best_step == 0).all()):
        out = attrs
    else:
        out = par.finish(model, best_u)
        keep = best_step == 0  # images whose prediction stayed best: exactly the prediction
        if bool(keep.any()):
            out = CaslAttributes(**{k: torch.where(keep.reshape(-1, *([1] * (v.dim() - 1))),
                                                   attrs[k].detach(), v) for k, v in out.items()})
    if not losses:  # the prediction itself is not finite
        nan = torch.full((1, x.shape[0]), float("nan"))
        return attrs, RefineHistory(nan, nan.clone(), torch.zeros(x.shape[0], dtype=torch.long))
    return out, RefineHistory(torch.stack(losses).cpu(), torch.stack(ious).cpu(),
                              best_step.cpu())
