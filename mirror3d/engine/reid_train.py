"""Re-id training and evaluation in one process: OG-Net on point-cloud shards, or the 2D CNN
baseline on images (no Ray here).

Recipe, after OG-Net's public training code (Zheng et al. 2022, "Parameter-Efficient Person
Re-identification in the 3D Space", IEEE TNNLS; github.com/layumi/person-reid-3d): cross-entropy
+ circle loss (Sun et al. 2020; m 0.25, γ 64, L2-normalised features) and an optional batch-hard
triplet loss (Hermans et al. 2017); class-balanced P×K batches
(:class:`mirror3d.data.samplers.PKSampler`, so the pair losses always see positive pairs — the
reference's weighted sampler rarely gives them); Adam with amsgrad and weight decay, a cosine
schedule down to 0.01·lr, a loss warm-up 0.1 → 1 over the first epochs; the point augmentations
of :class:`mirror3d.data.transforms.PointCloudAugment`; weight averaging over the last epochs
with BN re-estimation.

:func:`train_reid_loop` runs the epochs: one metrics line (``metrics.jsonl``) and one progress
line per epoch, a checkpoint every N epochs (model, averaged model, optimiser, epoch, config,
every rank's random state: :mod:`mirror3d.engine.rng_state`; the learning rate follows from the
epoch and the clock), resume from one (a start drops the metrics lines an earlier attempt logged
after its start point: every epoch is logged once). At the end rank 0 writes
``model_final.pt``, evaluates query vs gallery under the Market-1501 protocol
(:mod:`mirror3d.metrics.reid`), also at the test point densities ``eval_densities`` (OG-Net
Fig. 8; :func:`evaluate_model`), and writes ``eval.json`` and the ranked-results picture
``ranked.png``. Rank 0 logs the run to MLflow (the ``tracking`` section,
:mod:`mirror3d.engine.tracking`).

It runs the same in a test or a debugger and inside a Ray Train worker
(:func:`mirror3d.platform.reid.train_reid` is the Ray driver; docs/architecture.md). Under
``torch.distributed`` (world size > 1) the model is wrapped in DDP and every rank takes its own
share of the P×K batches.

What a model takes (points or images) comes from its registry entry
(:func:`mirror3d.models.registry.model_info`), never from its name.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pathlib
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from mirror3d.data.datasets import PointCloudDataset, ReidImageDataset, sample_generator
from mirror3d.data.readers import read_market1501
from mirror3d.data.samplers import PKSampler
from mirror3d.engine.progress import PROGRESS_FILE, EpochProgress
from mirror3d.engine.rng_state import gather_rng_states, restore_rng_states
from mirror3d.engine.runtime import (ReportFn, TrainingClock, default_device, non_finite_loss,
                                     reestimate_bn)
from mirror3d.engine.scaling import RayConfig
from mirror3d.engine.tracking import RunTracker, TrackingConfig, run_tracked
from mirror3d.lifting.shards import read_shards
from mirror3d.metrics.reid import evaluate, rank_gallery, scale_tta_features
from mirror3d.metrics.reid_viz import ranked_results_grid
from mirror3d.models.ognet.losses import batch_hard_triplet, circle_loss
from mirror3d.models.registry import create_model, model_info
from mirror3d.utils.checkpoint import (CHECKPOINT_FILE, load_checkpoint, load_model_checkpoint,
                                       save_checkpoint)
from mirror3d.utils.config import config_from_dict, config_to_dict
from mirror3d.utils.files import atomic_write
from mirror3d.utils.rundir import (append_metrics, counts_line, overwrite_field, resume_field,
                                   run_name_field, trim_metrics, write_skipped)

log = logging.getLogger(__name__)

__all__ = ["KIND", "ReidDataConfig", "ReidModelConfig", "ReidOptimConfig", "ReidTrainConfig",
           "ReidData", "ReportFn", "ThinnedPoints", "density_points", "input_kind",
           "load_reid_data", "build_model", "embed_dataset", "evaluate_model", "train_reid_loop",
           "load_reid_model"]

#: the checkpoint kind of re-id runs (``format: mirror3d/reid``)
KIND = "reid"


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
        "range": (0.01, 1.0), "help": "fraction of a cloud's points kept; unused while "
                                      "num_points is set (always, here)"})
    image_size: tuple[int, int] = field(default=(64, 128), metadata={
        "range": (8, 4096), "help": "W,H of images for the 2D baseline"})
    short: Literal["error", "repeat"] = field(default="repeat", metadata={
        "help": "a cloud with fewer points than needed: error, or repeat its points"})


@dataclass
class ReidModelConfig:
    name: str = field(default="og-net-small", metadata={
        "help": "registry name: og-net | og-net-small | og-net-deep | cnn2d-small"})
    k: int = field(default=20, metadata={
        "range": (1, 128), "help": "kNN neighbours, self included (OG-Net; 1 = each graph conv "
                                   "a per-point linear layer, its Fig. 7)"})
    init_points: int = field(default=768, metadata={
        "range": (8, 100_000), "help": "points after the first FPS level (OG-Net: 768)"})
    last_graph: Literal["position+appearance", "position"] = field(
        default="position+appearance", metadata={
            "help": "the last layer's kNN graph (OG-Net): on [xyz ; features], the paper's "
                    "non-local graph, or on xyz only (its Table IV ablation)"})


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
class ReidTrainConfig:
    """OG-Net / 2D-baseline re-id training."""

    data: ReidDataConfig = field(default_factory=ReidDataConfig)
    model: ReidModelConfig = field(default_factory=ReidModelConfig)
    optim: ReidOptimConfig = field(default_factory=ReidOptimConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    out_dir: str = field(default="runs/ognet", metadata={"help": "job directory"})
    name: str = run_name_field()
    resume: str = resume_field()
    overwrite: bool = overwrite_field()
    eval_batch_size: int = field(default=64, metadata={"range": (1, 65536)})
    ranked_queries: int = field(default=6, metadata={"range": (0, 1000)})
    eval_densities: tuple[float, ...] = field(default=(), metadata={
        "metavar": "D,...",
        "help": "also evaluate with each test cloud thinned to these fractions (0, 1] of its "
                "data.num_points evaluation points (OG-Net Fig. 8); 1.0 = the plain evaluation"})
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def validate(self) -> None:
        if self.optim.batch_size % self.optim.instances:
            raise ValueError(f"optim.batch_size ({self.optim.batch_size}) must be a multiple of "
                             f"optim.instances ({self.optim.instances})")
        shown = ",".join(format(d, "g") for d in self.eval_densities)
        for d in self.eval_densities:
            if not 0.0 < d <= 1.0:
                raise ValueError(f"eval_densities: every element must be in (0, 1], got {shown}")
        if len(set(self.eval_densities)) != len(self.eval_densities):
            raise ValueError(f"eval_densities: expected distinct fractions, got {shown}")
        for d in self.eval_densities:
            n = density_points(d, self.data.num_points)
            if n < self.model.init_points:
                raise ValueError(
                    f"eval_densities: {d:g} of data.num_points {self.data.num_points} leaves {n} "
                    f"points, fewer than model.init_points {self.model.init_points} (OG-Net's "
                    f"first FPS level); use a density >= "
                    f"{math.ceil(1000 * self.model.init_points / self.data.num_points) / 1000:g}")


def density_points(density: float, num_points: int) -> int:
    """Points per test cloud at ``density``: ``max(1, round(density * num_points))``."""
    return max(1, round(density * num_points))


def input_kind(name: str) -> str:
    """What registered model ``name`` takes: ``"points"`` or ``"image"`` (its registry entry).

    Raises:
        ValueError: an unknown model, or one whose entry declares no input kind.
    """
    kind = model_info(name).input_kind
    if kind is None:
        raise ValueError(f"model.name: model {name!r} declares no input_kind in the registry; "
                         f"re-id needs a 'points' or 'image' model")
    return kind


# ------------------------------------------------------------------------------ data
@dataclass
class ReidData:
    """Train / query / gallery datasets of one run, with the evaluation metadata."""

    train: torch.utils.data.Dataset
    query: torch.utils.data.Dataset
    gallery: torch.utils.data.Dataset
    train_labels: np.ndarray
    num_classes: int
    query_meta: dict
    gallery_meta: dict


#: The run directory's record of the training input in numbers (:func:`write_input_counts`).
INPUT_FILE = "input.json"


def write_input_counts(run_dir: str | os.PathLike, data: ReidData) -> dict:
    """``input.json`` (samples per split and the counts line) and an empty ``skipped.tsv`` in
    ``run_dir``: the re-id trainer uses every sample it reads (images the lifting skipped are
    listed in the lifting run's ``skipped.tsv``; a bad image of the 2D baseline's tree fails)."""
    splits = {"train": len(data.train), "query": len(data.query), "gallery": len(data.gallery)}
    total = sum(splits.values())
    record = {"read": total, "used": total, "skipped": {}, "splits": splits,
              "counts_line": counts_line("train-reid", total, total, {}, "samples")
              + f" (train {splits['train']}, query {splits['query']}, gallery {splits['gallery']})"}
    atomic_write(pathlib.Path(run_dir) / INPUT_FILE, json.dumps(record, indent=1))
    write_skipped(run_dir, [])
    return record


def _relabel(pids: np.ndarray) -> tuple[np.ndarray, int]:
    uniq = np.unique(pids)
    lut = {p: i for i, p in enumerate(uniq)}
    return np.array([lut[p] for p in pids], dtype=np.int64), len(uniq)


def load_reid_data(cfg: ReidTrainConfig) -> ReidData:
    """Train/query/gallery datasets for the configured model's input kind: the
    ``data.images`` tree for image models, the ``data.shards`` point clouds otherwise.

    Raises:
        FileNotFoundError: no shards / no tree.
        ValueError: an unknown model, or a split without samples.
    """
    if input_kind(cfg.model.name) == "image":
        records, _ = read_market1501(cfg.data.images)
        by = {s: [r for r in records if r.split == s] for s in ("train", "query", "gallery")}
        for s, recs in by.items():
            if not recs:
                raise ValueError(f"data.images: no {s!r} images in {cfg.data.images}")
        labels, n_cls = _relabel(np.array([r.pid for r in by["train"]]))
        size = tuple(cfg.data.image_size)
        train = ReidImageDataset(by["train"], image_size=size, train=True, seed=cfg.optim.seed)
        query = ReidImageDataset(by["query"], image_size=size, train=False)
        gallery = ReidImageDataset(by["gallery"], image_size=size, train=False)
        meta = {s: {"pid": np.array([r.pid for r in by[s]]),
                    "camid": np.array([r.camid for r in by[s]]),
                    "path": [str(r.path) for r in by[s]]} for s in ("query", "gallery")}
        return ReidData(train, query, gallery, labels, n_cls, meta["query"], meta["gallery"])

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


def _inputs(batch: dict, kind: str, device) -> tuple[torch.Tensor, ...]:
    """The model's positional inputs from a loader batch: (images,) or (xyz, rgb)."""
    if kind == "image":
        return (batch["image"].to(device),)
    pts = batch["points"].to(device)
    return pts[..., :3].contiguous(), pts[..., 3:].contiguous()


# ------------------------------------------------------------------------------ model
def build_model(cfg: ReidTrainConfig, num_classes: int) -> torch.nn.Module:
    """The registry model ``cfg.model.name`` with ``num_classes`` identities (point models also
    get ``model.k``, ``model.init_points`` and ``model.last_graph``)."""
    if input_kind(cfg.model.name) == "image":
        return create_model(cfg.model.name, num_classes=num_classes)
    return create_model(cfg.model.name, num_classes=num_classes, k=cfg.model.k,
                        init_points=cfg.model.init_points, last_graph=cfg.model.last_graph)


@torch.no_grad()
def embed_dataset(model: torch.nn.Module, dataset, kind: str, batch_size: int,
                  device=None) -> torch.Tensor:
    """The re-id features of every sample of ``dataset``, in order, with the model in eval mode
    and its test-time augmentation: points L2norm(f(x) + f(1.1·xyz)) as OG-Net's test code
    (:func:`mirror3d.metrics.reid.scale_tta_features`); images L2norm(f(img) + f(flip(img))).

    Args:
        model: a re-id model returning ``.feature``.
        dataset: a :class:`PointCloudDataset` (``kind="points"``) or
            :class:`ReidImageDataset` (``kind="image"``).
        kind: the model's input kind (:func:`input_kind`).
        batch_size: samples per forward pass.
        device: default: the model's device.

    Returns:
        (N, D) float tensor on the CPU.
    """
    device = device or next(model.parameters()).device
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    if kind == "points":
        batches = (_inputs(b, kind, device) for b in loader)
        return scale_tta_features(lambda xyz, rgb: model(xyz, rgb).feature, batches).cpu()
    feats = []
    for batch in loader:
        img = batch["image"].to(device)
        f = model(img).feature + model(torch.flip(img, dims=[3])).feature
        feats.append(F.normalize(f, dim=1).cpu())
    return torch.cat(feats)


# ------------------------------------------------------------------------------ evaluation
class ThinnedPoints(torch.utils.data.Dataset):
    """A point-cloud dataset with each sample's points thinned to ``density`` of them: a seeded
    random subset of ``round(density * R)`` of its R points, in their order.

    The subset of sample ``i`` is the first points of one permutation drawn from
    ``sample_generator(seed, 0, i)``: the same in every evaluation with the same seed, and a
    smaller density keeps a subset of a larger one's points; ``density=1`` returns every point
    in order (the sample unchanged).

    Args:
        base: a dataset of ``dict(points=(R, 6), ...)`` samples (every sample R points, as
            :class:`PointCloudDataset` with ``num_points`` gives them).
        density: fraction in (0, 1].
        seed: base seed of the subsets.
    """

    def __init__(self, base: torch.utils.data.Dataset, density: float, seed: int = 0) -> None:
        if not 0.0 < density <= 1.0:
            raise ValueError(f"density must be in (0, 1], got {density!r}")
        self.base, self.density, self.seed = base, float(density), int(seed)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict:
        sample = dict(self.base[index])
        points = sample["points"]
        r = points.shape[0]
        perm = torch.randperm(r, generator=sample_generator(self.seed, 0, index % len(self)))
        keep = torch.sort(perm[:density_points(self.density, r)]).values
        sample["points"] = points.index_select(0, keep)  # one gather, no parallel-region wake-up
        return sample


def _scores(qf: torch.Tensor, gf: torch.Tensor, data: ReidData) -> dict:
    res = evaluate(qf, gf, data.query_meta["pid"], data.gallery_meta["pid"],
                   data.query_meta["camid"], data.gallery_meta["camid"], topk=10)
    return {"rank1": float(res["cmc"][0]), "rank5": float(res["cmc"][4]),
            "rank10": float(res["cmc"][9]), "map_trapezoid": float(res["map_trapezoid"]),
            "map_mean_precision": float(res["map_mean_precision"]),
            "num_queries_without_positive": int(res.get("num_queries_without_positive", 0))}


def evaluate_model(model: torch.nn.Module, data: ReidData, cfg: ReidTrainConfig,
                   out_dir: str | os.PathLike) -> dict:
    """Query vs gallery evaluation (Market-1501 protocol, :func:`mirror3d.metrics.reid.evaluate`);
    writes ``eval.json`` and (``cfg.ranked_queries`` > 0) ``ranked.png`` into ``out_dir``.

    Test point densities (OG-Net Fig. 8; point models): for each fraction d of
    ``cfg.eval_densities`` the query and gallery clouds are evaluated again, thinned to
    ``round(d * data.num_points)`` points (:class:`ThinnedPoints`, seeded with
    ``optim.seed``). The fraction is of the points the plain evaluation feeds the model: each
    test cloud's ``data.num_points`` points, evenly spaced over its non-blank points
    (:class:`mirror3d.data.transforms.PointCloudAugment` without augmentation; ``data.slim``
    plays no part while ``num_points`` is set, which it always is here). So d = 1.0 is the plain
    evaluation, point for point, and a smaller d thins those same points. The OG-Net paper lifts
    a 128x64 crop to 8,192 points and keeps half, 4,096, for training and testing; with
    ``data.num_points`` in the part of those 4,096, d = 0.5 / 1.0 are its 25 % / 50 % test
    densities, and its 100 % (all 8,192: twice the training count) is d = 1.0 after evaluating
    with twice the points (``eval-reid --num_points``). Image models have no densities (a
    warning; ``eval.json`` then has none).

    Returns:
        ``model, rank1, rank5, rank10, map_trapezoid, map_mean_precision, num_queries,
        num_gallery, num_queries_without_positive``, and with densities ``densities``:
        ``{"0.5": {num_points, rank1, rank5, rank10, map_trapezoid, map_mean_precision,
        num_queries_without_positive}, ...}`` (keys: the fractions as ``repr(float)``).
    """
    out_dir = pathlib.Path(out_dir)
    kind = input_kind(cfg.model.name)
    qf = embed_dataset(model, data.query, kind, cfg.eval_batch_size)
    gf = embed_dataset(model, data.gallery, kind, cfg.eval_batch_size)
    scores = _scores(qf, gf, data)
    out = {"model": cfg.model.name, **{k: v for k, v in scores.items()
                                        if k != "num_queries_without_positive"},
           "num_queries": int(len(qf)), "num_gallery": int(len(gf)),
           "num_queries_without_positive": scores["num_queries_without_positive"]}
    if cfg.eval_densities and kind != "points":
        log.warning("eval_densities: ignored for %s, which takes images, not point clouds",
                    cfg.model.name)
    elif cfg.eval_densities:
        out["densities"] = {}
        for d in cfg.eval_densities:
            thin = [ThinnedPoints(ds, d, cfg.optim.seed) for ds in (data.query, data.gallery)]
            at = _scores(embed_dataset(model, thin[0], kind, cfg.eval_batch_size),
                         embed_dataset(model, thin[1], kind, cfg.eval_batch_size), data)
            out["densities"][repr(float(d))] = {
                "num_points": density_points(d, cfg.data.num_points), **at}
    atomic_write(out_dir / "eval.json", json.dumps(out, indent=2))
    if cfg.ranked_queries:
        try:
            _ranked_picture(qf, gf, data, cfg.ranked_queries, out_dir)
        except Exception as exc:  # a picture must not lose the numbers
            log.warning("ranked-results picture failed: %s", exc)
    return out


def _ranked_picture(qf: torch.Tensor, gf: torch.Tensor, data: ReidData, queries: int,
                    out_dir: pathlib.Path) -> None:
    n = min(queries, len(qf))
    order = rank_gallery(qf[:n], gf, k=min(len(gf), 30))
    qm, gm = data.query_meta, data.gallery_meta
    ranked_results_grid(list(qm["path"][:n]), list(gm["path"]), order[:n], qm["pid"][:n],
                        gm["pid"], qm["camid"][:n], gm["camid"], out_dir / "ranked.png", topk=10)


# ------------------------------------------------------------------------------ the loop
#: ``report(metrics, checkpoint_file_or_None)``: the per-epoch hook of :func:`train_reid_loop`.
def train_reid_loop(cfg: ReidTrainConfig, run_dir: str | os.PathLike, resume: str = "",
                    device: torch.device | str | None = None,
                    report: ReportFn | None = None) -> dict | None:
    """Train a re-id model in this process (one rank of ``torch.distributed`` when a process
    group exists), then evaluate it; writes the run directory's files from rank 0.

    Args:
        cfg: the training config (its ``ray`` section and ``resume`` key are not read here).
        run_dir: where ``metrics.jsonl``, ``checkpoints/``, ``model_final.pt``, ``eval.json``
            and ``ranked.png`` go.
        resume: a checkpoint file, checkpoint dir or run dir to continue from ("" = start).
        device: default :func:`mirror3d.engine.runtime.default_device`.
        report: ``report(metrics, checkpoint_file)`` called on every rank once per epoch; rank 0
            passes the checkpoint file it has just written (else None). Inside Ray Train this
            is :func:`mirror3d.platform.train.ray_report`.

    Returns:
        The evaluation (rank 0; what ``eval.json`` holds), else None.

    Raises:
        FloatingPointError: a non-finite loss, naming the last good checkpoint.
        ValueError / FileNotFoundError: bad data or model name (see :func:`load_reid_data`).

    Rank 0 logs the run to MLflow (``cfg.tracking``; :mod:`mirror3d.engine.tracking`): the
    config, each epoch's metrics line, the evaluation, ``ranked.png`` and ``eval.json``.
    """
    return run_tracked("train-reid", cfg, run_dir, resume,
                       lambda run_dir, rank, world_size, tracker: _train_reid(
                           cfg, run_dir, resume, device, report, tracker, rank, world_size))


def _train_reid(cfg: ReidTrainConfig, run_dir: pathlib.Path, resume: str, device,
                report: ReportFn | None, tracker: RunTracker, rank: int,
                world_size: int) -> dict | None:
    """The body of :func:`train_reid_loop`, inside its MLflow run."""
    device = torch.device(device) if device is not None else default_device()
    torch.manual_seed(cfg.optim.seed + rank)
    kind = input_kind(cfg.model.name)

    data = load_reid_data(cfg)
    model = build_model(cfg, data.num_classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr,
                           weight_decay=cfg.optim.weight_decay, amsgrad=True)
    averaged = None
    start_epoch = 0
    saved_rng = None
    if resume:
        state = load_checkpoint(resume, KIND)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch = int(state["epoch"]) + 1
        saved_rng = state.get("rng")
        if state.get("averaged") is not None:
            averaged = torch.optim.swa_utils.AveragedModel(model)
            averaged.load_state_dict(state["averaged"])
    if rank == 0:  # what an earlier attempt logged after the start point is logged again below
        write_input_counts(run_dir, data)
        trim_metrics(run_dir, start_epoch - 1)
    ddp_model = model
    if world_size > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(model)

    sampler = PKSampler(data.train_labels, cfg.optim.batch_size, cfg.optim.instances,
                        cfg.optim.seed, rank, world_size)
    loader = torch.utils.data.DataLoader(data.train, batch_size=cfg.optim.batch_size,
                                         sampler=sampler, drop_last=True)
    epochs = cfg.optim.epochs
    clock = TrainingClock(epochs, cfg.optim.max_minutes)
    progress = EpochProgress("train-reid", epochs, cfg.optim.max_minutes, start_epoch,
                             enabled=rank == 0, log_file=run_dir / PROGRESS_FILE)
    base_lr = cfg.optim.lr
    warm_iters = max(1, cfg.optim.warm_epochs * len(loader))
    avg_start = int(math.floor(cfg.optim.average_from * epochs))
    label_key = "label" if kind == "image" else "pid"  # the train sets hold relabelled classes

    it = start_epoch * len(loader)
    last_epoch = start_epoch - 1
    # a resumed run continues the random draws of the run it resumes
    restore_rng_states(saved_rng, (), rank, world_size)
    for epoch in range(start_epoch, epochs):
        lr = base_lr * clock.cosine(epoch, 0.01)
        for g in opt.param_groups:
            g["lr"] = lr
        sampler.set_epoch(epoch)
        data.train.set_epoch(epoch)
        ddp_model.train()
        tot = {"loss": 0.0, "ce": 0.0, "circle": 0.0, "triplet": 0.0, "acc": 0.0}
        n = 0
        t0 = time.time()
        for batch in loader:
            labels = batch[label_key].to(device)
            out = ddp_model(*_inputs(batch, kind, device))
            ce = F.cross_entropy(out.logits, labels)
            circ = circle_loss(out.feature, labels, cfg.optim.circle_margin,
                               cfg.optim.circle_gamma) if cfg.optim.circle_weight else ce * 0
            trip = batch_hard_triplet(out.feature, labels, cfg.optim.triplet_margin) \
                if cfg.optim.triplet_weight else ce * 0
            warm = min(1.0, 0.1 + 0.9 * it / warm_iters) if cfg.optim.warm_epochs else 1.0
            loss = warm * (ce + cfg.optim.circle_weight * circ / labels.shape[0]
                           + cfg.optim.triplet_weight * trip)
            if not torch.isfinite(loss):
                raise non_finite_loss("re-id", epoch, it, run_dir, resume)
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
        epoch_seconds = time.time() - t0
        metrics = {k: v / max(n, 1) for k, v in tot.items()}
        metrics.update(epoch=epoch, lr=lr, steps=n, torch_threads=torch.get_num_threads(),
                       epoch_seconds=epoch_seconds, elapsed_seconds=clock.elapsed())
        ckpt_file = None
        due = final or (epoch + 1) % cfg.optim.checkpoint_every == 0
        rng = gather_rng_states((), rank, world_size) if due else None
        if rank == 0:
            append_metrics(run_dir, metrics)
            tracker.log_metrics(metrics, step=epoch)
            progress.epoch(epoch, steps=n, seconds=epoch_seconds,
                           metrics={"loss": metrics["loss"], "train_acc": metrics["acc"]},
                           main=("loss", "train_acc"))
            if due:
                ckpt_file = save_checkpoint(
                    run_dir / "checkpoints" / f"epoch_{epoch:04d}" / CHECKPOINT_FILE, KIND,
                    {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                     "averaged": averaged.state_dict() if averaged is not None else None,
                     "num_classes": data.num_classes, "config": config_to_dict(cfg),
                     "rng": rng, "metrics": metrics})
        if report is not None:
            report(metrics, ckpt_file)
        last_epoch = epoch
        if stop:
            break

    if rank != 0:
        return None
    final_model = model
    if averaged is not None:
        final_model = averaged.module
        reestimate_bn(final_model, loader, lambda b: final_model(*_inputs(b, kind, device)))
    save_checkpoint(run_dir / "model_final.pt", KIND,
                    {"model": final_model.state_dict(), "epoch": last_epoch,
                     "num_classes": data.num_classes, "config": config_to_dict(cfg),
                     "averaged": None, "optimizer": None})
    res = evaluate_model(final_model, data, cfg, run_dir)
    tracker.log_metrics(res, step=last_epoch)
    tracker.log_artifacts([run_dir / "ranked.png", run_dir / "eval.json"])
    return res


def load_reid_model(path: str | os.PathLike, device="cpu") -> tuple[torch.nn.Module, ReidTrainConfig]:
    """A trained model (eval mode) and its config from a run directory (its ``model_final.pt``)
    or a checkpoint file / directory.

    Raises:
        FileNotFoundError: nothing to load at ``path``.
        mirror3d.utils.checkpoint.CheckpointError: not a re-id checkpoint, or unreadable.
    """
    def build(state: dict) -> torch.nn.Module:
        return build_model(config_from_dict(ReidTrainConfig, state["config"]),
                           int(state["num_classes"]))

    model, state = load_model_checkpoint(path, KIND, build, "re-id", needs=("num_classes",))
    cfg = config_from_dict(ReidTrainConfig, state["config"])
    return model.to(device).eval(), cfg
