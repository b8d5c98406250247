"""Re-id training on Ray Train: OG-Net on point-cloud shards, or the 2D CNN baseline on images.

Recipe (reference/ognet.md §4): CE + circle loss (m 0.25, γ 64, L2-normalised features) and an
optional batch-hard triplet; class-balanced P×K sampling (so circle/triplet terms always see
positive pairs — the reference's weighted sampler rarely does); Adam amsgrad with weight decay,
cosine schedule to 0.01·lr, loss warm-up 0.1 → 1 over the first epochs; the point augmentations
of ognet.md §3.2; weight averaging over the last epochs with BN re-estimation. Checkpoints every
N epochs (model, averaged model, optimiser, scheduler, epoch, config), ``resume``, and a metrics
line per epoch. After training, rank 0 evaluates query vs gallery (Market protocol) and writes
``eval.json`` and a ranked-results picture.

Python API: ``train_reid(cfg) -> run_dir``; CLI: ``jobs/train_ognet.py`` / ``python -m mirror3d
train-reid``.
"""

from __future__ import annotations

import json
import logging
import math
import pathlib
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from mirror3d.utils.config import config_from_dict, config_to_dict, save_config

log = logging.getLogger(__name__)

__all__ = ["ReidDataConfig", "ReidModelConfig", "ReidOptimConfig", "RayConfig", "ReidTrainConfig",
           "train_reid", "load_reid_model", "smoke_config"]


# ------------------------------------------------------------------------------ configs
@dataclass
class ReidDataConfig:
    """Where the samples come from."""

    shards: str = field(default="data/lifted/flat", metadata={
        "help": "directory of point-cloud parquet shards (OG-Net input)"})
    images: str = field(default="data/synthpeople/Market-1501", metadata={
        "help": "Market-1501-layout tree (2D baseline input)"})
    num_points: int = field(default=1024, metadata={
        "range": (96, 1_000_000), "help": "points per sample after selection (density)"})
    slim: float = field(default=0.5, metadata={
        "range": (0.01, 1.0), "help": "fraction of a cloud's points kept before num_points"})
    image_size: tuple[int, int] = field(default=(64, 128), metadata={
        "range": (8, 4096), "help": "W,H of images for the 2D baseline"})
    short: Literal["error", "repeat"] = field(default="repeat", metadata={
        "help": "a cloud with fewer points than needed: error, or repeat its points"})


@dataclass
class ReidModelConfig:
    name: str = field(default="og-net-small", metadata={
        "help": "registry name: og-net | og-net-small | og-net-deep | cnn2d-small"})
    k: int = field(default=20, metadata={"range": (1, 128), "help": "kNN neighbours (OG-Net)"})
    init_points: int = field(default=768, metadata={
        "range": (8, 100_000), "help": "points after the first FPS level (OG-Net: 768)"})


@dataclass
class ReidOptimConfig:
    epochs: int = field(default=60, metadata={"range": (1, 100_000)})
    batch_size: int = field(default=36, metadata={"range": (2, 4096)})
    instances: int = field(default=4, metadata={
        "range": (1, 64), "help": "K images per identity in a P×K batch"})
    lr: float = field(default=1e-3, metadata={"range": (0.0, 10.0)})
    weight_decay: float = field(default=5e-4, metadata={"range": (0.0, 1.0)})
    warm_epochs: int = field(default=5, metadata={"range": (0, 100_000)})
    circle_weight: float = field(default=1.0, metadata={"range": (0.0, None)})
    circle_margin: float = field(default=0.25, metadata={"range": (0.0, 0.99)})
    circle_gamma: float = field(default=64.0, metadata={"range": (1e-3, None)})
    triplet_weight: float = field(default=0.0, metadata={"range": (0.0, None)})
    triplet_margin: float = field(default=0.3, metadata={"range": (0.0, None)})
    average_from: float = field(default=0.9, metadata={
        "range": (0.0, 1.0), "help": "weight averaging from this fraction of epochs (1 = off)"})
    checkpoint_every: int = field(default=10, metadata={"range": (1, 100_000)})
    max_minutes: float = field(default=0.0, metadata={
        "range": (0.0, None), "help": "stop after this wall time (0 = no limit); the cosine "
                                      "schedule then runs on the time fraction"})
    seed: int = 0


@dataclass
class RayConfig:
    num_workers: int = field(default=1, metadata={"range": (1, 4096)})
    use_gpu: bool = False
    cpus_per_worker: float = field(default=0.0, metadata={
        "range": (0.0, 1024.0), "help": "CPUs (= torch threads) per worker; 0 = auto: the cluster's "
                                        "CPUs shared among the workers, at most one node's"})
    max_failures: int = field(default=0, metadata={"range": (-1, 1000)})


@dataclass
class ReidTrainConfig:
    """OG-Net / 2D-baseline re-id training."""

    data: ReidDataConfig = field(default_factory=ReidDataConfig)
    model: ReidModelConfig = field(default_factory=ReidModelConfig)
    optim: ReidOptimConfig = field(default_factory=ReidOptimConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    out_dir: str = field(default="runs/ognet", metadata={"help": "job directory"})
    name: str = field(default="", metadata={"help": "run name (default: a timestamp)"})
    resume: str = field(default="", metadata={"help": "checkpoint or run dir to resume from"})
    eval_batch_size: int = field(default=64, metadata={"range": (1, 65536)})
    ranked_queries: int = field(default=6, metadata={"range": (0, 1000)})

    def validate(self) -> None:
        if self.optim.batch_size % self.optim.instances:
            raise ValueError(f"optim.batch_size ({self.optim.batch_size}) must be a multiple of "
                             f"optim.instances ({self.optim.instances})")




def smoke_config(cfg: ReidTrainConfig) -> ReidTrainConfig:
    """The tiny settings of ``--smoke``: two short epochs, few points, small batches."""
    from mirror3d.utils.config import update_config

    return update_config(cfg, {"optim.epochs": 2, "optim.batch_size": 8, "optim.instances": 2,
                               "optim.warm_epochs": 1, "optim.checkpoint_every": 1,
                               "data.num_points": 256, "model.init_points": 64, "model.k": 8,
                               "eval_batch_size": 16, "ranked_queries": 2})


def is_image_model(name: str) -> bool:
    return name.startswith("cnn2d")


# ------------------------------------------------------------------------------ data
@dataclass
class ReidData:
    train: torch.utils.data.Dataset
    query: torch.utils.data.Dataset
    gallery: torch.utils.data.Dataset
    train_labels: np.ndarray
    num_classes: int
    query_meta: dict
    gallery_meta: dict


def _relabel(pids: np.ndarray) -> tuple[np.ndarray, int]:
    uniq = np.unique(pids)
    lut = {p: i for i, p in enumerate(uniq)}
    return np.array([lut[p] for p in pids], dtype=np.int64), len(uniq)


def load_reid_data(cfg: ReidTrainConfig) -> ReidData:
    """Build train/query/gallery datasets for the configured model kind."""
    from mirror3d.data.datasets import PointCloudDataset, ReidImageDataset

    if is_image_model(cfg.model.name):
        from mirror3d.data.readers import read_market1501

        records, _ = read_market1501(cfg.data.images)
        by = {s: [r for r in records if r.split == s] for s in ("train", "query", "gallery")}
        labels, n_cls = _relabel(np.array([r.pid for r in by["train"]]))
        size = tuple(cfg.data.image_size)
        train = ReidImageDataset(by["train"], image_size=size, train=True, seed=cfg.optim.seed)
        query = ReidImageDataset(by["query"], image_size=size, train=False)
        gallery = ReidImageDataset(by["gallery"], image_size=size, train=False)
        meta = {s: {"pid": np.array([r.pid for r in by[s]]),
                    "camid": np.array([r.camid for r in by[s]]),
                    "path": [str(r.path) for r in by[s]]} for s in ("query", "gallery")}
        return ReidData(train, query, gallery, labels, n_cls, meta["query"], meta["gallery"])

    from mirror3d.lifting.shards import read_shards

    samples = read_shards(cfg.data.shards)
    parts = {s: samples.select(samples.split == s) for s in ("train", "query", "gallery")}
    for s, p in parts.items():
        if len(p) == 0:
            raise ValueError(f"data.shards: no {s!r} samples in {cfg.data.shards}")
    labels, n_cls = _relabel(parts["train"].pid)
    kw = dict(num_points=cfg.data.num_points, slim=cfg.data.slim, short=cfg.data.short)
    train = PointCloudDataset(parts["train"].points, labels, parts["train"].camid, train=True,
                              seed=cfg.optim.seed, names=list(parts["train"].path), **kw)
    query = PointCloudDataset(parts["query"].points, parts["query"].pid, parts["query"].camid,
                              train=False, names=list(parts["query"].path), **kw)
    gallery = PointCloudDataset(parts["gallery"].points, parts["gallery"].pid,
                                parts["gallery"].camid, train=False,
                                names=list(parts["gallery"].path), **kw)
    meta = {s: {"pid": parts[s].pid, "camid": parts[s].camid, "path": list(parts[s].path)}
            for s in ("query", "gallery")}
    return ReidData(train, query, gallery, labels, n_cls, meta["query"], meta["gallery"])


class PKSampler(torch.utils.data.Sampler):
    """Class-balanced P×K batches, split across workers.

    Each epoch shuffles identities; every identity contributes K indices (with replacement when it
    has fewer than K images). Rank r takes every world-th batch, so workers see disjoint batches.
    """

    def __init__(self, labels: np.ndarray, batch_size: int, instances: int, seed: int = 0,
                 rank: int = 0, world: int = 1) -> None:
        self.labels = np.asarray(labels)
        self.k = instances
        self.p = batch_size // instances
        self.seed, self.rank, self.world = seed, rank, world
        self.epoch = 0
        self.by_class = [np.nonzero(self.labels == c)[0] for c in np.unique(self.labels)]
        if len(self.by_class) < self.p:
            raise ValueError(f"optim.batch_size/optim.instances = {self.p} identities per batch, "
                             f"but the training set has only {len(self.by_class)}")
        n_batches = len(self.labels) // batch_size
        self.batches_per_rank = max(1, n_batches // world)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        need = self.batches_per_rank * self.world
        out: list[np.ndarray] = []
        while len(out) < need:
            order = rng.permutation(len(self.by_class))
            for s in range(0, len(order) - self.p + 1, self.p):
                batch = []
                for c in order[s:s + self.p]:
                    idx = self.by_class[c]
                    batch.append(rng.choice(idx, self.k, replace=len(idx) < self.k))
                out.append(np.concatenate(batch))
                if len(out) == need:
                    break
        return out[self.rank::self.world]

    def __iter__(self):
        for b in self._batches():
            yield from b.tolist()

    def __len__(self) -> int:
        return self.batches_per_rank * self.p * self.k


def _unpack(batch, image_model: bool, device):
    if image_model:
        return (batch["image"].to(device),), batch
    pts = batch["points"].to(device)
    return (pts[..., :3].contiguous(), pts[..., 3:].contiguous()), batch


def batch_hard_triplet(features: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Batch-hard triplet loss on L2-normalised features (0 when no valid triplet)."""
    f = F.normalize(features, dim=1)
    d = torch.cdist(f, f)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=f.device)
    pos = (same & ~eye)
    if not pos.any() or same.all():
        return f.sum() * 0.0
    hardest_pos = torch.where(pos, d, torch.zeros_like(d)).amax(1)
    hardest_neg = torch.where(~same, d, torch.full_like(d, float("inf"))).amin(1)
    valid = pos.any(1) & (~same).any(1)
    return F.relu(hardest_pos - hardest_neg + margin)[valid].mean()


# ------------------------------------------------------------------------------ model
def build_model(cfg: ReidTrainConfig, num_classes: int) -> torch.nn.Module:
    from mirror3d.models.registry import create_model

    import mirror3d.models.ognet  # noqa: F401  (registers the models)

    if is_image_model(cfg.model.name):
        return create_model(cfg.model.name, num_classes=num_classes)
    return create_model(cfg.model.name, num_classes=num_classes, k=cfg.model.k,
                        init_points=cfg.model.init_points)


@torch.no_grad()
def extract_features(model: torch.nn.Module, dataset, image_model: bool, batch_size: int,
                     device=None) -> torch.Tensor:
    """Re-id features in eval mode. Points: L2norm(f(x) + f(1.1·xyz)), the OG-Net test-time
    scale augmentation (:func:`mirror3d.metrics.reid.extract_features`); images:
    L2norm(f(img) + f(flip(img))). Returns (N, 512) on CPU."""
    from mirror3d.metrics.reid import extract_features as point_features

    device = device or next(model.parameters()).device
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    if not image_model:
        batches = ((b["points"][..., :3].to(device), b["points"][..., 3:].to(device))
                   for b in loader)
        return point_features(lambda xyz, rgb: model(xyz, rgb).feature, batches).cpu()
    feats = []
    for batch in loader:
        img = batch["image"].to(device)
        f = model(img).feature + model(torch.flip(img, dims=[3])).feature
        feats.append(F.normalize(f, dim=1).cpu())
    return torch.cat(feats)


# ------------------------------------------------------------------------------ worker loop
def train_loop_per_worker(loop_config: dict) -> None:
    """Ray Train worker entry point (also callable directly with one process)."""
    from mirror3d.models.ognet.losses import circle_loss
    from mirror3d.platform import train as rt

    cfg: ReidTrainConfig = config_from_dict(ReidTrainConfig, loop_config["config"])
    run_dir = pathlib.Path(loop_config["run_dir"])
    rank, world_size = rt.world()
    device = rt.device()
    torch.manual_seed(cfg.optim.seed + rank)
    image_model = is_image_model(cfg.model.name)

    data = load_reid_data(cfg)
    model = build_model(cfg, data.num_classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr,
                           weight_decay=cfg.optim.weight_decay, amsgrad=True)
    averaged = None
    start_epoch = 0
    resume = loop_config.get("resume")
    if resume:
        state = rt.load_checkpoint(resume, "reid")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch = int(state["epoch"]) + 1
        if state.get("averaged") is not None:
            averaged = torch.optim.swa_utils.AveragedModel(model)
            averaged.load_state_dict(state["averaged"])
    ddp_model = model
    if world_size > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(model)

    sampler = PKSampler(data.train_labels, cfg.optim.batch_size, cfg.optim.instances,
                        cfg.optim.seed, rank, world_size)
    loader = torch.utils.data.DataLoader(data.train, batch_size=cfg.optim.batch_size,
                                         sampler=sampler, drop_last=True)
    epochs = cfg.optim.epochs
    clock = rt.TrainingClock(epochs, cfg.optim.max_minutes)
    base_lr = cfg.optim.lr
    warm_iters = max(1, cfg.optim.warm_epochs * len(loader))
    avg_start = int(math.floor(cfg.optim.average_from * epochs))

    it = start_epoch * len(loader)
    last_epoch = start_epoch - 1
    for epoch in range(start_epoch, epochs):
        lr = base_lr * clock.cosine(epoch, 0.01)
        for g in opt.param_groups:
            g["lr"] = lr
        sampler.set_epoch(epoch)
        ddp_model.train()
        tot = {"loss": 0.0, "ce": 0.0, "circle": 0.0, "triplet": 0.0, "acc": 0.0}
        n = 0
        t0 = time.time()
        for batch in loader:
            inputs, raw = _unpack(batch, image_model, device)
            labels = raw["label" if image_model else "pid"].to(device)
            out = ddp_model(*inputs)
            ce = F.cross_entropy(out.logits, labels)
            circ = circle_loss(out.feature, labels, cfg.optim.circle_margin,
                               cfg.optim.circle_gamma) if cfg.optim.circle_weight else ce * 0
            trip = batch_hard_triplet(out.feature, labels, cfg.optim.triplet_margin) \
                if cfg.optim.triplet_weight else ce * 0
            warm = min(1.0, 0.1 + 0.9 * it / warm_iters) if cfg.optim.warm_epochs else 1.0
            loss = warm * (ce + cfg.optim.circle_weight * circ / labels.shape[0]
                           + cfg.optim.triplet_weight * trip)
            if not torch.isfinite(loss):
                raise rt.non_finite_loss("re-id", epoch, it, run_dir, resume)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            it += 1
            n += 1
            tot["loss"] += loss.item()
            tot["ce"] += ce.item()
            tot["circle"] += circ.item()
            tot["triplet"] += trip.item()
            tot["acc"] += (out.logits.argmax(1) == labels).float().mean().item()
            if clock.out_of_time_all(device):  # the budget ends between steps, not epochs
                break
        if cfg.optim.average_from < 1.0 and (epoch >= avg_start
                                             or clock.progress(epoch + 1) >= cfg.optim.average_from):
            if averaged is None:
                averaged = torch.optim.swa_utils.AveragedModel(model)
            else:
                averaged.update_parameters(model)
        stop = clock.out_of_time_all(device)
        final = stop or epoch == epochs - 1
        metrics = {k: v / max(n, 1) for k, v in tot.items()}
        metrics.update(epoch=epoch, lr=lr, steps=n, torch_threads=torch.get_num_threads(),
                       epoch_seconds=time.time() - t0, elapsed_seconds=clock.elapsed())
        if rank == 0:
            from mirror3d.utils.rundir import append_metrics
            append_metrics(run_dir, metrics)
        want_ckpt = final or (epoch + 1) % cfg.optim.checkpoint_every == 0

        def state(epoch=epoch, metrics=metrics):
            return {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                    "averaged": averaged.state_dict() if averaged is not None else None,
                    "num_classes": data.num_classes, "config": config_to_dict(cfg),
                    "metrics": metrics}

        rt.report(metrics, state if want_ckpt else None, "reid", run_dir, epoch)
        last_epoch = epoch
        if stop:
            break

    if rank == 0:
        final_model = model
        if averaged is not None:
            final_model = averaged.module
            rt.reestimate_bn(final_model, loader,
                             lambda b: final_model(*_unpack(b, image_model, device)[0]))
            rt.save_checkpoint(run_dir / "model_final.pt", "reid",
                               {"model": final_model.state_dict(), "epoch": last_epoch,
                                "num_classes": data.num_classes, "config": config_to_dict(cfg),
                                "averaged": None, "optimizer": None})
        else:
            rt.save_checkpoint(run_dir / "model_final.pt", "reid",
                               {"model": model.state_dict(), "epoch": last_epoch,
                                "num_classes": data.num_classes, "config": config_to_dict(cfg),
                                "averaged": None, "optimizer": None})
        evaluate_model(final_model, data, cfg, run_dir, image_model)


def evaluate_model(model, data: ReidData, cfg: ReidTrainConfig, run_dir: pathlib.Path,
                   image_model: bool) -> dict:
    """Query vs gallery evaluation; writes ``eval.json`` and ``ranked.png`` into ``run_dir``."""
    from mirror3d.metrics.reid import evaluate

    qf = extract_features(model, data.query, image_model, cfg.eval_batch_size)
    gf = extract_features(model, data.gallery, image_model, cfg.eval_batch_size)
    res = evaluate(qf, gf, data.query_meta["pid"], data.gallery_meta["pid"],
                   data.query_meta["camid"], data.gallery_meta["camid"], topk=10)
    out = {"model": cfg.model.name, "rank1": float(res["cmc"][0]), "rank5": float(res["cmc"][4]),
           "rank10": float(res["cmc"][9]), "map_trapezoid": float(res["map_trapezoid"]),
           "map_mean_precision": float(res["map_mean_precision"]),
           "num_queries": int(len(qf)), "num_gallery": int(len(gf)),
           "num_queries_without_positive": int(res.get("num_queries_without_positive", 0))}
    (run_dir / "eval.json").write_text(json.dumps(out, indent=2))
    if cfg.ranked_queries:
        try:
            _ranked_picture(qf, gf, data, cfg, run_dir)
        except Exception as exc:  # a picture must not lose the numbers
            log.warning("ranked-results picture failed: %s", exc)
    return out


def _ranked_picture(qf, gf, data: ReidData, cfg: ReidTrainConfig, run_dir: pathlib.Path) -> None:
    from mirror3d.metrics.reid import rank_gallery
    from mirror3d.metrics.reid_viz import ranked_results_grid

    n = min(cfg.ranked_queries, len(qf))
    order = rank_gallery(qf[:n], gf, k=min(len(gf), 30))
    qm, gm = data.query_meta, data.gallery_meta
    ranked_results_grid(list(qm["path"][:n]), list(gm["path"]), order[:n], qm["pid"][:n],
                        gm["pid"], qm["camid"][:n], gm["camid"], run_dir / "ranked.png", topk=10)


# ------------------------------------------------------------------------------ driver
def train_reid(cfg: ReidTrainConfig) -> pathlib.Path:
    """Train (through Ray Train) and evaluate. Returns the run directory."""
    from mirror3d.platform import train as rt
    from mirror3d.utils.rundir import default_run_name

    from mirror3d.utils.config import update_config

    # workers run in their own directories: ship absolute data paths
    cfg = update_config(cfg, {"data.shards": str(pathlib.Path(cfg.data.shards).resolve()),
                              "data.images": str(pathlib.Path(cfg.data.images).resolve())})
    load_reid_data(cfg)  # fail fast on bad data, before a run directory or Ray exists
    name = cfg.name or default_run_name()
    run_dir = (pathlib.Path(cfg.out_dir) / name).resolve()
    resume = rt.resolve_resume(cfg.resume, "reid")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    loop_config = {"config": config_to_dict(cfg), "run_dir": str(run_dir),
                   "resume": resume}
    rt.fit(train_loop_per_worker, loop_config, run_dir=run_dir,
           scaling=rt.ScalingSpec(cfg.ray.num_workers, cfg.ray.use_gpu, cfg.ray.cpus_per_worker),
           max_failures=cfg.ray.max_failures)
    return run_dir


def load_reid_model(path: str | pathlib.Path, device="cpu") -> tuple[torch.nn.Module, ReidTrainConfig]:
    """A trained model (eval mode) and its config from a run directory or checkpoint file."""
    from mirror3d.platform import train as rt

    p = pathlib.Path(path)
    if p.is_dir() and (p / "model_final.pt").exists():
        p = p / "model_final.pt"
    state = rt.load_checkpoint(p, "reid")
    cfg = config_from_dict(ReidTrainConfig, state["config"])
    model = build_model(cfg, int(state["num_classes"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg
