"""CASL training on Ray Train (reference/casl.md §0, §5–§7; DESIGN.md deviations).

One step: encode (the encoder loop freezes all groups but one), render the reconstruction on the
predicted background, re-render at a random azimuth (the GAN fake), render an interpolated
attribute set from the priors and re-encode it (IC), a WGAN-GP critic step, then the encoder
step on GAN + data + mesh regularisers + flip + IC, all × the warm-up factor. After each epoch:
weight averaging (last epochs), the prototype loop (every ``every`` epochs until averaging),
checkpoints, a metrics line. At the end BN statistics of the averaged model are re-estimated
and held-out mask IoU is measured.

Python API: ``train_casl(cfg) -> run_dir``; CLI: ``jobs/train_casl.py`` / ``python -m mirror3d
train-casl``.
"""

from __future__ import annotations

import copy
import json
import logging
import pathlib
import time
from dataclasses import dataclass, field

import torch

from mirror3d.utils.config import config_from_dict, config_to_dict, save_config
from mirror3d.models.casl.em import (EncoderLoop, EncoderLoopConfig, PrototypeLoop,
                                     PrototypeLoopConfig)
from mirror3d.models.casl.losses import CaslLossConfig
from mirror3d.models.casl.networks import CaslNetConfig
from mirror3d.platform.reid_trainer import RayConfig

log = logging.getLogger(__name__)

__all__ = ["CaslDataConfig", "CaslOptimConfig", "CaslTrainConfig", "train_casl", "smoke_config",
           "build_model", "train_loop_per_worker"]


@dataclass
class CaslDataConfig:
    root: str = field(default="data/synthpeople/Market-HQ", metadata={
        "help": "dataset root in the layout of data.reader"})
    reader: str = field(default="market_hq", metadata={
        "choices": ["market_hq", "atr", "cub", "folder"], "help": "reconstruction reader"})
    image_size: tuple[int, int] = field(default=(64, 128), metadata={
        "range": (8, 4096), "help": "W,H of inputs and renders"})
    aug: str = field(default="market", metadata={"choices": ["market", "atr", "cub", "none"]})
    bg: bool = field(default=True, metadata={"help": "keep real backgrounds (the reference's --bg)"})
    ratio_range: tuple[float, float] = field(default=(0.05, 0.64), metadata={
        "range": (0.0, 1.0), "help": "train on lo < foreground ratio < hi"})
    clean_range: tuple[float, float] = field(default=(0.18, 0.32), metadata={
        "range": (0.0, 1.0), "help": "the prototype loop's clean subset"})
    max_train: int = field(default=0, metadata={"range": (0, None), "help": "cap (0 = all)"})
    max_test: int = field(default=256, metadata={"range": (0, None), "help": "cap (0 = all)"})
    workers: int = field(default=0, metadata={"range": (0, 64), "help": "DataLoader workers"})


@dataclass
class CaslOptimConfig:
    epochs: int = field(default=30, metadata={"range": (1, 100_000)})
    batch_size: int = field(default=16, metadata={"range": (2, 4096)})
    lr: float = field(default=3e-4, metadata={"range": (0.0, 1.0)})
    beta1: float = field(default=0.95, metadata={"range": (0.0, 0.9999)})
    min_lr_ratio: float = field(default=0.01, metadata={"range": (0.0, 1.0)})
    average_last: float = field(default=0.2, metadata={
        "range": (0.0, 1.0), "help": "weight averaging over this final fraction of epochs"})
    bias_range: float = field(default=0.5, metadata={
        "range": (0.0, 1.0), "help": "look-at offset prior U[-b, b] of the IC sample"})
    gan: bool = field(default=True, metadata={"help": "WGAN-GP critic and generator terms"})
    checkpoint_every: int = field(default=5, metadata={"range": (1, 100_000)})
    max_minutes: float = field(default=0.0, metadata={
        "range": (0.0, None), "help": "stop after this wall time (0 = none); schedules then "
                                      "follow the time fraction"})
    seed: int = 0


@dataclass
class CaslTrainConfig:
    """CASL training (defaults: the small CPU model on SynthPeople's Market-HQ tree)."""

    data: CaslDataConfig = field(default_factory=CaslDataConfig)
    # from-scratch shape backbone: full lr (the reference's 0.05× was for a pretrained HRNet)
    net: CaslNetConfig = field(default_factory=lambda: CaslNetConfig(shape_backbone_lr_scale=1.0))
    loss: CaslLossConfig = field(default_factory=lambda: CaslLossConfig(warm_epochs=4.0))
    encoder_loop: EncoderLoopConfig = field(default_factory=EncoderLoopConfig)
    prototype: PrototypeLoopConfig = field(default_factory=PrototypeLoopConfig)
    optim: CaslOptimConfig = field(default_factory=CaslOptimConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    ellipsoid: float = field(default=2.0, metadata={"range": (1e-3, None)})
    sigma: float = field(default=7000.0, metadata={"range": (1e-3, None)})
    out_dir: str = field(default="runs/casl", metadata={"help": "job directory"})
    name: str = field(default="", metadata={"help": "run name (default: a timestamp)"})
    resume: str = field(default="", metadata={"help": "checkpoint or run dir to resume from"})




def smoke_config(cfg: CaslTrainConfig) -> CaslTrainConfig:
    from mirror3d.utils.config import update_config

    return update_config(cfg, {"optim.epochs": 2, "optim.batch_size": 4,
                               "optim.checkpoint_every": 1, "data.image_size": (32, 64),
                               "data.max_train": 16, "data.max_test": 8, "loss.warm_epochs": 1.0,
                               "prototype.every": 1})


def build_model(cfg: CaslTrainConfig):
    from mirror3d.models.casl.model import CaslModel
    from mirror3d.models.casl.networks import build_discriminator

    model = CaslModel(cfg.net, tuple(cfg.data.image_size), cfg.ellipsoid, cfg.sigma)
    return model, build_discriminator(cfg.net)


# ------------------------------------------------------------------------------ data
def _records(cfg: CaslTrainConfig):
    from mirror3d.data.readers import read_recon

    records, _ = read_recon(cfg.data.reader, cfg.data.root)
    train = [r for r in records if r.split in ("train", "all")]
    test = [r for r in records if r.split == "test"] or train[-max(1, len(train) // 10):]
    if not train:
        raise ValueError(f"data.root: no training images under {cfg.data.root}")
    if cfg.data.max_train:
        train = train[: cfg.data.max_train]
    if cfg.data.max_test:
        test = test[: cfg.data.max_test]
    return train, test


def load_casl_data(cfg: CaslTrainConfig):
    """(train, clean, test) datasets."""
    from mirror3d.data.datasets import ReconstructionDataset

    train_r, test_r = _records(cfg)
    size = tuple(cfg.data.image_size)
    aug = None if cfg.data.aug == "none" else cfg.data.aug
    train = ReconstructionDataset(train_r, size, aug=aug, bg=cfg.data.bg,
                                  ratio_range=tuple(cfg.data.ratio_range), seed=cfg.optim.seed)
    if len(train) < cfg.optim.batch_size:
        raise ValueError(f"data: {len(train)} training images after the foreground-ratio filter "
                         f"{tuple(cfg.data.ratio_range)}, fewer than optim.batch_size "
                         f"{cfg.optim.batch_size}")
    clean = ReconstructionDataset(train_r, size, aug=aug, bg=cfg.data.bg,
                                  ratio_range=tuple(cfg.data.clean_range), train=False)
    test = ReconstructionDataset(test_r, size, aug=aug, bg=cfg.data.bg, train=False)
    return train, clean, test


# ------------------------------------------------------------------------------ one step
def casl_step(model, disc, opt_e, opt_d, x: torch.Tensor, cfg: CaslTrainConfig, frozen: set,
              warm: float, generator=None, sync_grads=None) -> dict:
    """One CASL training step on a batch x (B, 4, H, W). Returns scalar metrics.

    ``sync_grads(params)``, when given, runs before each optimiser step (the all-reduce of
    gradients across workers)."""
    from mirror3d.models.casl.losses import (data_loss, flip_term, ic_loss, mesh_regularisers,
                                             wgan_d_loss, wgan_g_loss)
    from mirror3d.models.casl.model import image_to_input

    lc = cfg.loss
    rgb, mask = x[:, :3], x[:, 3]
    ae = model.encode(x, frozen)
    rec = model.render(ae, with_background=cfg.data.bg)
    parts: dict = {}

    # the interpolated sample, rendered and re-encoded with every encoder trainable
    ai = model.interpolate(ae, cfg.optim.bias_range, generator)
    xir = model.render(ai, with_background=cfg.data.bg)
    aire = model.encode(image_to_input(xir.rgb, xir.soft_mask).detach())

    fake = None
    if cfg.optim.gan:
        ae90 = model.random_azimuth_view(ae, generator)
        x90 = model.render(ae90, with_background=cfg.data.bg)
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
    gan_g = wgan_g_loss(disc, fake, lc) if fake is not None else data * 0
    loss = warm * (gan_g + data + reg + flip + ic)
    if not torch.isfinite(loss):
        raise FloatingPointError("non-finite CASL loss")
    opt_e.zero_grad(set_to_none=True)
    loss.backward()
    if sync_grads is not None:
        sync_grads(model.parameters())
    opt_e.step()
    from mirror3d.models.casl.losses import soft_iou

    with torch.no_grad():
        iou = soft_iou(rec.soft_mask, mask).mean()
    parts.update(dparts)
    parts.update(rparts)
    parts.update(icparts)
    parts.update(loss=loss.detach(), data=data.detach(), reg=reg.detach(), flip=flip.detach(),
                 ic=ic.detach(), gan_g=gan_g.detach(), train_mask_iou=iou)
    return {k: float(v) for k, v in parts.items()}


@torch.no_grad()
def prototype_update(model, loop: PrototypeLoop, clean_loader, warm: float, device) -> dict:
    """One prototype-loop update over the clean subset (eval mode); all-reduced under DDP."""
    from mirror3d.platform.train import all_reduce_sum

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
    total = all_reduce_sum(total)
    count = all_reduce_sum(count)
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
def held_out_mask_iou(model, loader, device) -> float:
    """Mean soft-silhouette IoU (%) of eval-mode reconstructions against the GT masks."""
    from mirror3d.models.casl.losses import soft_iou

    model.eval()
    vals = []
    for batch in loader:
        x = batch["image"].to(device)
        attrs = model.encode(x)
        out = model.render(attrs)
        vals.append(soft_iou(out.soft_mask, x[:, 3]))
    return 100.0 * torch.cat(vals).mean().item() if vals else float("nan")


# ------------------------------------------------------------------------------ worker loop
def train_loop_per_worker(loop_config: dict) -> None:
    from mirror3d.platform import train as rt
    from mirror3d.utils.rundir import append_metrics

    cfg: CaslTrainConfig = config_from_dict(CaslTrainConfig, loop_config["config"])
    run_dir = pathlib.Path(loop_config["run_dir"])
    rank, world_size = rt.world()
    device = rt.device()
    torch.manual_seed(cfg.optim.seed + rank)
    gen = torch.Generator().manual_seed(cfg.optim.seed * 1000 + rank)

    train_ds, clean_ds, test_ds = load_casl_data(cfg)
    model, disc = build_model(cfg)
    model, disc = model.to(device), disc.to(device)
    groups = model.encoder.param_groups()
    opt_e = torch.optim.Adam([{"params": g["params"], "lr": cfg.optim.lr * g["lr_scale"],
                               "lr_scale": g["lr_scale"]} for g in groups],
                             lr=cfg.optim.lr, betas=(cfg.optim.beta1, 0.999), amsgrad=True)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.optim.lr, betas=(cfg.optim.beta1, 0.999),
                             amsgrad=True)
    proto = PrototypeLoop(cfg.prototype)
    enc_loop = EncoderLoop(cfg.encoder_loop.schedule)
    averaged = None
    start_epoch, step = 0, 0
    if loop_config.get("resume"):
        state = rt.load_checkpoint(loop_config["resume"], "casl")
        model.load_state_dict(state["model"])
        disc.load_state_dict(state["disc"])
        opt_e.load_state_dict(state["opt_e"])
        opt_d.load_state_dict(state["opt_d"])
        proto.load_state_dict(state["prototype"])
        start_epoch, step = int(state["epoch"]) + 1, int(state["step"])
        if state.get("averaged") is not None:
            averaged = torch.optim.swa_utils.AveragedModel(model, use_buffers=False)
            averaged.load_state_dict(state["averaged"])

    sampler = None
    if world_size > 1:
        sampler = torch.utils.data.DistributedSampler(train_ds, world_size, rank, shuffle=True,
                                                      seed=cfg.optim.seed)
    loader = torch.utils.data.DataLoader(train_ds, batch_size=cfg.optim.batch_size,
                                         shuffle=sampler is None, sampler=sampler, drop_last=True,
                                         num_workers=cfg.data.workers,
                                         generator=torch.Generator().manual_seed(cfg.optim.seed))
    clean_sampler = (torch.utils.data.DistributedSampler(clean_ds, world_size, rank, shuffle=False)
                     if world_size > 1 else None)
    clean_loader = torch.utils.data.DataLoader(clean_ds, batch_size=cfg.optim.batch_size,
                                               sampler=clean_sampler, num_workers=cfg.data.workers)
    test_loader = torch.utils.data.DataLoader(test_ds, batch_size=cfg.optim.batch_size)
    sync = None
    if world_size > 1:
        # Data-parallel as DDP does it: equal initial parameters, gradients averaged across
        # workers before every optimiser step. (DDP's module wrapper does not fit the step's
        # several encoder/critic passes per backward, so the all-reduce is explicit.)
        for p in list(model.parameters()) + list(disc.parameters()) + list(model.buffers()):
            torch.distributed.broadcast(p.data, 0)
        sync = _all_reduce_grads

    epochs = cfg.optim.epochs
    clock = rt.TrainingClock(epochs, cfg.optim.max_minutes)
    avg_from = epochs - max(1, int(round(cfg.optim.average_last * epochs))) \
        if cfg.optim.average_last > 0 else epochs + 1

    last_epoch = start_epoch - 1
    for epoch in range(start_epoch, epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        train_ds.set_epoch(epoch)
        lr_factor = clock.cosine(epoch, cfg.optim.min_lr_ratio)
        for g in opt_e.param_groups:
            g["lr"] = cfg.optim.lr * g.get("lr_scale", 1.0) * lr_factor
        for g in opt_d.param_groups:
            g["lr"] = cfg.optim.lr * lr_factor
        model.train()
        disc.train()
        sums: dict = {}
        n = 0
        t0 = time.time()
        for i, batch in enumerate(loader):
            warm = _warm(cfg, clock, epoch + i / max(1, len(loader)))
            x = batch["image"].to(device)
            try:
                m = casl_step(model, disc, opt_e, opt_d, x, cfg, enc_loop.frozen(step), warm,
                              gen, sync)
            except FloatingPointError:
                raise rt.non_finite_loss("CASL", epoch, step, run_dir,
                                         loop_config.get("resume")) from None
            step += 1
            n += 1
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + v
            if clock.out_of_time_all(device):  # the budget ends between steps, not epochs
                break
        metrics = {k: v / max(n, 1) for k, v in sums.items()}
        averaging = epoch >= avg_from or (cfg.optim.average_last > 0 and
                                          clock.progress(epoch + 1) >= 1.0 - cfg.optim.average_last)
        if averaging:
            if averaged is None:
                averaged = torch.optim.swa_utils.AveragedModel(model, use_buffers=False)
            else:
                averaged.update_parameters(model)
        warm_now = _warm(cfg, clock, epoch + 1)
        if proto.due(epoch, averaging):
            metrics.update(prototype_update(model, proto, clean_loader, warm_now, device))
            if rank == 0:
                from mirror3d.render.mesh_io import export_mesh
                export_mesh(run_dir / "templates" / f"epoch_{epoch:04d}.obj",
                            model.template.cpu(), model.faces.cpu(), model.face_uvs.cpu(), None)
        stop = clock.out_of_time_all(device)
        final = stop or epoch == epochs - 1
        metrics.update(epoch=epoch, steps=n, lr_factor=lr_factor, warm=warm_now,
                       epoch_seconds=time.time() - t0, elapsed_seconds=clock.elapsed())
        if rank == 0:
            append_metrics(run_dir, metrics)
        want = final or (epoch + 1) % cfg.optim.checkpoint_every == 0

        def state(epoch=epoch, step=step, metrics=metrics):
            return {"model": model.state_dict(), "disc": disc.state_dict(),
                    "opt_e": opt_e.state_dict(), "opt_d": opt_d.state_dict(),
                    "prototype": proto.state_dict(), "epoch": epoch, "step": step,
                    "averaged": averaged.state_dict() if averaged is not None else None,
                    "config": config_to_dict(cfg), "metrics": metrics}

        rt.report(metrics, state if want else None, "casl", run_dir, epoch)
        last_epoch = epoch
        if stop:
            break

    if rank == 0:
        final_model = model
        if averaged is not None:
            final_model = copy.deepcopy(model)
            final_model.load_state_dict(averaged.module.state_dict())
            final_model.template.copy_(model.template)
            rt.reestimate_bn(final_model, loader,
                             lambda b: final_model.encode(b["image"].to(device)), 30)
        iou = held_out_mask_iou(final_model, test_loader, device)
        rt.save_checkpoint(run_dir / "model_final.pt", "casl",
                           {"model": final_model.state_dict(), "epoch": last_epoch, "step": step,
                            "config": config_to_dict(cfg), "disc": None, "opt_e": None,
                            "opt_d": None, "prototype": proto.state_dict(), "averaged": None,
                            "metrics": {"held_out_mask_iou": iou}})
        from mirror3d.render.mesh_io import export_mesh
        export_mesh(run_dir / "template_final.obj", model.template.cpu(), model.faces.cpu(),
                    model.face_uvs.cpu(), None)
        (run_dir / "train_summary.json").write_text(json.dumps(
            {"held_out_mask_iou": iou, "epochs_run": last_epoch + 1, "steps": step,
             "minutes": clock.elapsed() / 60.0, "template_updates": proto.updates},
            indent=2))


def _warm(cfg: CaslTrainConfig, clock, epoch_f: float) -> float:
    """Warm-up factor by fractional epoch (or by the time fraction under a budget)."""
    from mirror3d.models.casl.losses import warm_up_factor

    return warm_up_factor(max(epoch_f, clock.progress(epoch_f) * clock.epochs), cfg.loss.warm_epochs)


def _all_reduce_grads(params) -> None:
    """Average gradients over workers. Which parameters have a gradient depends only on the
    step's phase, the same on every worker, so those without one are skipped everywhere."""
    ws = torch.distributed.get_world_size()
    for p in params:
        if p.grad is None:
            continue
        torch.distributed.all_reduce(p.grad)
        p.grad /= ws


# ------------------------------------------------------------------------------ driver
def train_casl(cfg: CaslTrainConfig) -> pathlib.Path:
    """Train through Ray Train; returns the run directory."""
    from mirror3d.platform import train as rt
    from mirror3d.utils.rundir import default_run_name

    from mirror3d.utils.config import update_config

    # workers run in their own directories: ship an absolute data path
    cfg = update_config(cfg, {"data.root": str(pathlib.Path(cfg.data.root).resolve())})
    load_casl_data(cfg)  # fail fast on bad data, before a run directory or Ray exists
    resume = rt.resolve_resume(cfg.resume, "casl")
    run_dir = (pathlib.Path(cfg.out_dir) / (cfg.name or default_run_name())).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    loop_config = {"config": config_to_dict(cfg), "run_dir": str(run_dir),
                   "resume": resume}
    rt.fit(train_loop_per_worker, loop_config, run_dir=run_dir,
           scaling=rt.ScalingSpec(cfg.ray.num_workers, cfg.ray.use_gpu, cfg.ray.cpus_per_worker),
           max_failures=cfg.ray.max_failures)
    return run_dir
