"""One CASL training step and its per-epoch pieces, as plain torch (no loop, no Ray).

CASL is the self-supervised reconstruction model of Zheng et al. 2022 ("3D Magic Mirror:
Clothing Reconstruction from a Single Image via a Causal Perspective", arXiv:2204.13096).
One step (:func:`casl_step`): encode (the encoder loop freezes all groups but one), render the
reconstruction on the predicted background, re-render at a random azimuth (the GAN fake),
render an interpolated attribute set from the priors and re-encode it (interpolation
consistency), a WGAN-GP critic step, then the encoder step on GAN + data + mesh regularisers +
flip + IC, all × the warm-up factor. Per epoch: :func:`prototype_update` (the prototype loop)
and, at the end of training, :func:`held_out_mask_iou`. The loop that runs them is
:func:`mirror3d.engine.casl_train.train_casl_loop` (docs/architecture.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from mirror3d.models.casl.discriminator import Discriminator
from mirror3d.models.casl.em import PrototypeLoop
from mirror3d.models.casl.losses import (CaslLossConfig, data_loss, flip_term, ic_loss,
                                         mesh_regularisers, soft_iou, wgan_d_loss, wgan_g_loss)
from mirror3d.models.casl.model import CaslModel, image_to_input
from mirror3d.models.casl.networks import CaslNetConfig, build_discriminator
from mirror3d.utils.config import config_from_dict

__all__ = ["CaslStepSettings", "casl_step", "casl_step_reference", "constant_parameters",
           "prototype_update", "held_out_mask_iou", "held_out_stats",
           "build_casl_model", "build_model"]


@dataclass(frozen=True)
class CaslStepSettings:
    """What one training step needs beyond the model and the batch.

    Attributes:
        loss: the loss weights.
        bias_range: look-at offset prior U[-b, b] of the interpolated (IC) sample.
        gan: run the WGAN-GP critic step and the generator term.
        bg: reconstruct on the predicted background (the reference's ``--bg``), else on white.
    """

    loss: CaslLossConfig = field(default_factory=CaslLossConfig)
    bias_range: float = 0.5
    gan: bool = True
    bg: bool = True


def casl_step(model: CaslModel, disc: Discriminator, opt_e: torch.optim.Optimizer,
              opt_d: torch.optim.Optimizer, x: torch.Tensor, settings: CaslStepSettings,
              frozen: set, warm: float, generator: torch.Generator | None = None,
              sync_grads: Callable[[Iterable[torch.nn.Parameter]], None] | None = None,
              camera: Mapping[str, torch.Tensor] | None = None) -> dict:
    """One CASL training step on a batch x (B, 4, H, W). Returns scalar metrics.

    ``camera``: the oracle-camera diagnostic (never self-supervised training): (B,) tensors
    ``azimuth, elevation, distance`` and (B, 2) ``bias`` that replace the camera encoder's
    prediction for the reconstruction (docs/casl-on-cpu.md).

    ``frozen``: the encoder groups that run without gradients this step (the encoder loop).
    ``warm``: the warm-up factor multiplying every loss. ``sync_grads(params)``, when given,
    runs before each optimiser step (the all-reduce of gradients across workers).

    Raises:
        FloatingPointError: the encoder loss is not finite (no optimiser step was taken for it).
    """
    return _step(model, disc, opt_e, opt_d, x, settings, frozen, warm, generator, sync_grads,
                 camera, constant_critic=True)


@contextlib.contextmanager
def constant_parameters(module: torch.nn.Module) -> Iterator[None]:
    """Ops recorded inside treat ``module``'s parameters as constants: a later backward
    computes no gradient for them (and skips the work), while gradients still flow through the
    module to its inputs. ``requires_grad`` is restored on exit."""
    params = [p for p in module.parameters() if p.requires_grad]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


@torch.no_grad()
def prototype_update(model: CaslModel, loop: PrototypeLoop, clean_loader, warm: float, device,
                     reduce_sum: Callable[[torch.Tensor], torch.Tensor] = _identity) -> dict:
    """One prototype-loop update of the template over the clean subset (eval mode).

    ``reduce_sum(t)`` sums a tensor over the data-parallel workers (identity in one process;
    the engine passes :func:`mirror3d.engine.runtime.all_reduce_sum`)."""
    was_training = model.training
    model.eval()
    v = model.template.shape[0]
    total = torch.zeros(v, 3, device=device)
    count = torch.zeros((), device=device)
    for batch in clean_loader:
        attrs = model.encode(batch["image"].to(device))
        s, n = loop.accumulate(attrs.delta, loop.cfg.collapse)
        total += s
        count += n
    total = reduce_sum(total)
    count = reduce_sum(count)
    model.train(was_training)
    upd = loop.compute_update(total, count, model.laplacian)
    if upd is None:
        return {"prototype_count": 0.0, "prototype_move": 0.0}
    new = loop.apply(model.template, upd, warm)
    move = (new - model.template).abs().max().item()
    model.template.copy_(new)
    return {"prototype_count": float(count), "prototype_move": move,
            "prototype_step": loop.step}


@torch.no_grad()
def held_out_mask_iou(model: CaslModel, loader, device) -> float:
    """Mean soft-silhouette IoU (%) of eval-mode reconstructions against the GT masks (the
    ``mask_iou`` of :func:`held_out_stats`); leaves the model in eval mode."""
    model.eval()
    return held_out_stats(model, loader, device)["mask_iou"]


def _wrap_deg(a: torch.Tensor) -> torch.Tensor:
    return (a + 180.0) % 360.0 - 180.0


@torch.no_grad()
def held_out_stats(model: CaslModel, loader, device, truth=None,
                   oracle_camera: bool = False) -> dict[str, float]:
    """A learning-curve point on held-out images (eval mode): ``mask_iou`` (%, soft IoU of the
    rendered silhouette vs the mask), ``distance_mean`` of the predicted cameras and, when
    ``truth`` (a :class:`mirror3d.data.synth.truth.CameraTruth`) is given, the camera errors
    against SynthPeople's true cameras: ``azimuth_err_median`` and its front/back-folded form
    ``azimuth_err_folded_median`` (degrees) and ``distance_rel_err`` (median |d − d*| / d*).
    With ``oracle_camera`` the silhouettes are rendered at the true cameras (the diagnostic of
    shape learning alone)."""
    was_training = model.training
    model.eval()
    ious, dist, az_err, az_fold, d_err = [], [], [], [], []
    for batch in loader:
        x = batch["image"].to(device)
        attrs = model.encode(x)
        shown = attrs
        if oracle_camera:
            shown = model.with_camera(attrs, **{k: v.to(device)
                                                for k, v in truth.cameras(batch["path"]).items()})
        out = model.render(shown)
        ious.append(soft_iou(out.soft_mask, x[:, 3]).cpu())
        dist.append(attrs.distance.cpu())
        if truth is not None:
            cam = truth.cameras(batch["path"])
            err = _wrap_deg(attrs.azimuth.cpu() - cam["azimuth"]).abs()
            az_err.append(err)
            az_fold.append(torch.minimum(err, 180.0 - err))
            d_err.append((attrs.distance.cpu() - cam["distance"]).abs() / cam["distance"])
    model.train(was_training)
    out = {"mask_iou": 100.0 * torch.cat(ious).mean().item() if ious else float("nan"),
           "distance_mean": torch.cat(dist).mean().item() if dist else float("nan")}
    if az_err:
        out.update(azimuth_err_median=torch.cat(az_err).median().item(),
                   azimuth_err_folded_median=torch.cat(az_fold).median().item(),
                   distance_rel_err=torch.cat(d_err).median().item())
    return out


# ------------------------------------------------------------------------------ reference
def casl_step_reference(model: CaslModel, disc: Discriminator, opt_e: torch.optim.Optimizer,
              opt_d: torch.optim.Optimizer, x: torch.Tensor, settings: CaslStepSettings,
              frozen: set, warm: float, generator: torch.Generator | None = None,
              sync_grads: Callable[[Iterable[torch.nn.Parameter]], None] | None = None,
              camera: Mapping[str, torch.Tensor] | None = None) -> dict:
    """The CASL step without issue #17's constant critic (same arguments and result as
    :func:`casl_step`): the generator term also computes the critic's weight gradients (then
    discarded). The reference the fast step is tested and benchmarked against
    (tests/models/casl/test_step.py, benchmarks/casl_step_curves.py)."""
    return _step(model, disc, opt_e, opt_d, x, settings, frozen, warm, generator, sync_grads,
                 camera, constant_critic=False)


def _step(model: CaslModel, disc: Discriminator, opt_e: torch.optim.Optimizer,
          opt_d: torch.optim.Optimizer, x: torch.Tensor, settings: CaslStepSettings,
          frozen: set, warm: float, generator: torch.Generator | None,
          sync_grads: Callable[[Iterable[torch.nn.Parameter]], None] | None,
          camera: Mapping[str, torch.Tensor] | None, constant_critic: bool) -> dict:
    """:func:`casl_step` (``constant_critic``: the generator term treats the critic's weights as
    constants, so the encoder step's backward skips their gradients) and
    :func:`casl_step_reference` (not: as before issue #17; the same values)."""
    lc = settings.loss
    rgb, mask = x[:, :3], x[:, 3]
    ae = model.encode(x, frozen)
    if camera is not None:
        ae = model.with_camera(ae, **{k: v.to(x.device) for k, v in camera.items()})
    rec = model.render(ae, with_background=settings.bg)
    parts: dict = {}

    # the interpolated sample, rendered and re-encoded with every encoder trainable
    ai = model.interpolate(ae, settings.bias_range, generator)
    xir = model.render(ai, with_background=settings.bg)
    aire = model.encode(image_to_input(xir.rgb, xir.soft_mask).detach())

    fake = None
    if settings.gan:
        ae90 = model.random_azimuth_view(ae, generator)
        x90 = model.render(ae90, with_background=settings.bg)
        fake = x90.image4
        d_loss, d_parts = wgan_d_loss(disc, x, fake, lc)
        opt_d.zero_grad(set_to_none=True)
        (warm * d_loss).backward()
        if sync_grads is not None:
            sync_grads(disc.parameters())
        opt_d.step()
        parts.update(d_parts)

    verts_e, verts_i = model.vertices(ae), model.vertices(ai)
    data, dparts = data_loss(rec.rgb, rec.soft_mask, rgb, mask, lc)
    regs = []
    for a, v in ((ae, verts_e), (ai, verts_i)):
        r, rparts = mesh_regularisers(a.delta, v, model.faces, model.laplacian, model.edge_faces,
                                      model.edges, model.template_init[:, 2], model.ratio, lc)
        regs.append(r)
    reg = sum(regs) / 2
    tz = model.template_init[:, 2]
    flip = sum(flip_term(a.delta, model.mirror_index, tz, lc) for a in (ae, ai, aire)) / 3
    ic, icparts = ic_loss(aire, ai, model.vertices(aire), verts_i, lc)
    gan_g = data * 0
    if fake is not None:
        with constant_parameters(disc) if constant_critic else contextlib.nullcontext():
            gan_g = wgan_g_loss(disc, fake, lc)
    loss = warm * (gan_g + data + reg + flip + ic)
    if not torch.isfinite(loss):
        raise FloatingPointError("non-finite CASL loss")
    opt_e.zero_grad(set_to_none=True)
    loss.backward()
    if sync_grads is not None:
        sync_grads(model.parameters())
    opt_e.step()

    with torch.no_grad():
        iou = soft_iou(rec.soft_mask, mask).mean()
    parts.update(dparts)
    parts.update(rparts)
    parts.update(icparts)
    parts.update(loss=loss.detach(), data=data.detach(), reg=reg.detach(), flip=flip.detach(),
                 ic=ic.detach(), gan_g=gan_g.detach(), train_mask_iou=iou)
    return {k: float(v) for k, v in parts.items()}


# ------------------------------------------------------------------------------ building
def _model_settings(cfg: Any) -> tuple[CaslNetConfig, tuple[int, int], float, float]:
    """(net, image size W,H, ellipsoid, sigma) of a CASL training config, given either as the
    config object (``mirror3d.engine.casl_train.CaslTrainConfig``) or as the plain dict saved
    in its checkpoints (``state["config"]``)."""
    if isinstance(cfg, Mapping):
        net = config_from_dict(CaslNetConfig, cfg.get("net") or {})
        data = cfg.get("data") or {}
        size = tuple(int(v) for v in data.get("image_size", (64, 128)))
        return net, size, float(cfg.get("ellipsoid", 2.0)), float(cfg.get("sigma", 7000.0))
    return cfg.net, tuple(cfg.data.image_size), cfg.ellipsoid, cfg.sigma


def build_casl_model(cfg: Any) -> CaslModel:
    """The :class:`CaslModel` of a training config (object or saved dict; see
    :func:`build_model`)."""
    net, size, ellipsoid, sigma = _model_settings(cfg)
    return CaslModel(net, size, ellipsoid, sigma)


def build_model(cfg: Any) -> tuple[CaslModel, Discriminator]:
    """The CASL model and its WGAN critic from a training config: its ``net`` section,
    ``data.image_size``, ``ellipsoid`` and ``sigma``. ``cfg`` is the config object or the
    plain dict a checkpoint holds (how inference rebuilds a model without the trainer)."""
    model = build_casl_model(cfg)
    return model, build_discriminator(model.net_cfg)
