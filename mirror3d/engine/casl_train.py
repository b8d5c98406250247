"""CASL training in one process: the config, the data and the epoch loop (no Ray here).

CASL (Zheng et al. 2022, "3D Magic Mirror", arXiv:2204.13096) trains its encoders
self-supervised on images + masks. :func:`train_casl_loop` runs the epochs: the steps of
:func:`mirror3d.models.casl.step.casl_step` (the encoder loop picks the trained group per step),
then per epoch weight averaging (last epochs), the prototype loop (every ``prototype.every``
epochs until averaging starts), a metrics line, one progress line and checkpoints. At the end
the BN statistics of the averaged model are re-estimated and held-out mask IoU is measured.

It runs the same in a test or a debugger and inside a Ray Train worker
(:func:`mirror3d.platform.casl.train_casl` is the Ray driver; docs/architecture.md). Under
``torch.distributed`` (world size > 1) it is data-parallel: equal initial weights, gradients
averaged before every optimiser step, the prototype loop's sums all-reduced.

Run directory (written by rank 0): ``metrics.jsonl``, ``checkpoints/epoch_XXXX/checkpoint.pt``,
``templates/epoch_XXXX.obj`` (each prototype update), ``model_final.pt``,
``template_final.obj`` and ``train_summary.json``. Rank 0 also logs the run to MLflow (the
``tracking`` section, :mod:`mirror3d.engine.tracking`). A start first drops the ``metrics.jsonl``
/ ``curve.jsonl`` lines an earlier attempt logged after the start point (its resume checkpoint,
e.g. when Ray Train restarts its workers after a failure), so every epoch is logged once; a
resume restores every rank's random state (:mod:`mirror3d.engine.rng_state`), so the resumed
epochs are the ones the interrupted run would have trained.
"""

from __future__ import annotations

import copy
import json
import os
import pathlib
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from mirror3d.data.datasets import ReconstructionDataset
from mirror3d.data.readers import read_recon
from mirror3d.engine.progress import PROGRESS_FILE, EpochProgress
from mirror3d.engine.rng_state import gather_rng_states, restore_rng_states
from mirror3d.engine.runtime import (ReportFn, TrainingClock, all_reduce_grads, all_reduce_sum,
                                     default_device, non_finite_loss, reestimate_bn)
from mirror3d.engine.scaling import RayConfig
from mirror3d.engine.tracking import RunTracker, TrackingConfig, run_tracked
from mirror3d.models.casl.em import (EncoderLoop, EncoderLoopConfig, PrototypeLoop,
                                     PrototypeLoopConfig)
from mirror3d.models.casl.losses import CaslLossConfig, warm_up_factor
from mirror3d.models.casl.networks import CaslNetConfig
from mirror3d.data.synth.truth import CameraTruth, find_synth_root
from mirror3d.models.casl.step import (CaslStepSettings, build_model, casl_step,
                                       held_out_mask_iou, held_out_stats, prototype_update)
from mirror3d.render.mesh_io import export_mesh
from mirror3d.utils.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from mirror3d.utils.config import config_to_dict
from mirror3d.utils.files import atomic_write
from mirror3d.utils.rundir import (append_metrics, check_usable, counts_line, overwrite_field,
                                   resume_field, run_name_field, trim_metrics, write_skipped)

__all__ = ["KIND", "CaslDataConfig", "CaslOptimConfig", "CaslTrainConfig", "casl_records",
           "load_casl_data", "prefetched", "build_optimisers", "use_fused_adam", "step_settings",
           "casl_warm_up", "train_casl_loop"]

#: the checkpoint kind of CASL runs (``format: mirror3d/casl``)
KIND = "casl"


@dataclass
class CaslDataConfig:
    root: str = field(default="data/synthpeople/Market-HQ", metadata={
        "help": "dataset root in the layout of data.reader"})
    reader: str = field(default="market_hq", metadata={
        "choices": ["market_hq", "atr", "cub", "folder"], "help": "reconstruction reader"})
    image_size: tuple[int, int] = field(default=(32, 64), metadata={
        "range": (8, 4096), "help": "W,H of inputs and renders (the paper: 64,128 for Market; "
                                    "32,64 learns ~4x more steps per CPU minute)"})
    aug: str = field(default="market", metadata={"choices": ["market", "atr", "cub", "none"]})
    bg: bool = field(default=True, metadata={"help": "keep real backgrounds (the reference's --bg)"})
    ratio_range: tuple[float, float] = field(default=(0.05, 0.64), metadata={
        "range": (0.0, 1.0), "help": "train on lo < foreground ratio < hi"})
    clean_range: tuple[float, float] = field(default=(0.18, 0.32), metadata={
        "range": (0.0, 1.0), "help": "the prototype loop's clean subset"})
    max_train: int = field(default=0, metadata={"range": (0, None), "help": "cap (0 = all)"})
    max_test: int = field(default=256, metadata={"range": (0, None), "help": "cap (0 = all)"})
    min_usable_fraction: float = field(default=0.5, metadata={
        "range": (0.0, 1.0), "help": "fail when fewer than this fraction of the training images "
                                     "found (max_train aside) are usable: with a mask, inside "
                                     "ratio_range (none at all always fails)"})
    workers: int = field(default=0, metadata={
        "range": (0, 64), "help": "DataLoader worker processes (0: the trainer loads the batches "
                                  "in a background thread, two ahead of the step)"})
    oracle_camera: bool = field(default=False, metadata={
        "help": "diagnostic only, never self-supervised: feed SynthPeople's true cameras instead "
                "of the camera encoder's (needs data.aug none; docs/casl-on-cpu.md)"})
    curve_images: int = field(default=64, metadata={
        "range": (1, None), "help": "held-out images of each learning-curve point (optim.eval_every)"})

    def validate(self) -> None:
        if self.oracle_camera and self.aug != "none":
            raise ValueError(f"data.oracle_camera: needs data.aug none (augmentation moves the "
                             f"image away from its true camera), got data.aug {self.aug!r}")


@dataclass
class CaslOptimConfig:
    epochs: int = field(default=30, metadata={"range": (1, 100_000)})
    batch_size: int = field(default=16, metadata={"range": (2, 4096)})
    lr: float = field(default=1e-3, metadata={"range": (0.0, 1.0)})
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
    eval_every: int = field(default=0, metadata={
        "range": (0, None), "help": "every this many steps, a learning-curve point on "
                                    "data.curve_images held-out images -> curve.jsonl (0 = off; "
                                    "its time is not counted in max_minutes)"})


@dataclass
class CaslTrainConfig:
    """CASL training (defaults: the small CPU model on SynthPeople's Market-HQ tree; why they
    differ from the paper's, measured: docs/casl-on-cpu.md; the paper's: --preset paper)."""

    data: CaslDataConfig = field(default_factory=CaslDataConfig)
    # from-scratch shape backbone: full lr (the reference's 0.05× was for a pretrained HRNet);
    # the dense offset layer at 0.05× (without it the meshes crumple in the first 20 steps);
    # the distance prior of SynthPeople's camera rig (the paper sets one range per dataset)
    net: CaslNetConfig = field(default_factory=lambda: CaslNetConfig(
        shape_backbone_lr_scale=1.0, shape_offsets_lr_scale=0.05, distance_range=(2.3, 3.4)))
    loss: CaslLossConfig = field(default_factory=lambda: CaslLossConfig(warm_epochs=0.0))
    # every encoder every step: 3x the shape updates of the paper's one-group-per-step loop
    encoder_loop: EncoderLoopConfig = field(default_factory=lambda: EncoderLoopConfig("all"))
    prototype: PrototypeLoopConfig = field(default_factory=PrototypeLoopConfig)
    optim: CaslOptimConfig = field(default_factory=CaslOptimConfig)
    # one torch thread per worker: the CPU step is ~4,000 small ops, where a second OpenMP
    # thread costs more than it gives (benchmarks/bench_casl_ray.py, issue #17)
    ray: RayConfig = field(default_factory=lambda: RayConfig(torch_threads=1))
    ellipsoid: float = field(default=2.0, metadata={"range": (1e-3, None)})
    sigma: float = field(default=7000.0, metadata={"range": (1e-3, None)})
    out_dir: str = field(default="runs/casl", metadata={"help": "job directory"})
    name: str = run_name_field()
    resume: str = resume_field()
    overwrite: bool = overwrite_field()
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


# ------------------------------------------------------------------------------ data
def casl_records(cfg: CaslTrainConfig):
    """(train, test) records of ``cfg.data``: the reader's train split (or ``all``) and its
    test split (else the last tenth of train), capped by ``max_train`` / ``max_test``.

    Raises:
        FileNotFoundError: no data root.  ValueError: no training images.
    """
    train, test, _ = _casl_records(cfg)
    return train, test


#: The training-input report's skip reasons (see :func:`casl_input_report`).
NO_MASK, BAD_ENTRY, OUT_OF_RATIO, OVER_CAP = ("no mask", "bad entry", "foreground ratio outside "
                                              "data.ratio_range", "over data.max_train")


def _casl_records(cfg: CaslTrainConfig):
    """:func:`casl_records` and the training images the reader left out: ``(path, reason)``."""
    records, summary = read_recon(cfg.data.reader, cfg.data.root)
    train = [r for r in records if r.split in ("train", "all")]
    test = [r for r in records if r.split == "test"] or train[-max(1, len(train) // 10):]
    left = [(p, reason) for p, split, reason in summary.left_out if split in ("train", "all")]
    left += [(name, BAD_ENTRY) for name in summary.skipped_names]
    if not train:
        extra = f" ({len(left)} left out: {left[0][1]}, e.g. {left[0][0]})" if left else ""
        raise ValueError(f"data.root: no training images under {cfg.data.root}{extra}")
    if cfg.data.max_train:
        left += [(r.image_path, OVER_CAP) for r in train[cfg.data.max_train:]]
        train = train[: cfg.data.max_train]
    if cfg.data.max_test:
        test = test[: cfg.data.max_test]
    return train, test, left


def casl_input_report(found: int, used_paths: set[str], train_records,
                      left: list[tuple[str, str]]) -> dict:
    """The training input in numbers: ``{"read", "used", "skipped": {reason: n}, "items":
    [(path, reason)], "counts_line"}``. ``read`` counts every training image found (with or
    without a mask); the ones ``data.max_train`` leaves out are listed but not held against
    ``data.min_usable_fraction``."""
    items = list(left) + [(r.image_path, OUT_OF_RATIO) for r in train_records
                          if r.image_path not in used_paths]
    skipped: dict[str, int] = {}
    for _, reason in items:
        skipped[reason] = skipped.get(reason, 0) + 1
    report = {"read": found, "used": len(used_paths), "skipped": skipped,
              "items": [list(x) for x in items]}
    report["counts_line"] = counts_line("train-casl", found, len(used_paths), skipped)
    return report


def write_input_report(run_dir: str | os.PathLike, report: dict) -> None:
    """``skipped.tsv`` (path<TAB>reason) of a training input report in ``run_dir``."""
    write_skipped(run_dir, [(str(p), str(r)) for p, r in report["items"]])


def load_casl_data(cfg: CaslTrainConfig):
    """(train, clean, test) datasets: training images inside ``data.ratio_range`` (augmented),
    the prototype loop's clean subset inside ``data.clean_range``, the held-out images.

    The training set's input report (:func:`casl_input_report`: images read, used, skipped by
    reason) is ``train.input_report``; the trainer writes it to the run directory.

    Raises:
        ValueError: fewer training images than ``optim.batch_size`` after the ratio filter.
        DataError: no usable training image, or fewer than ``data.min_usable_fraction`` of those
            found (images without masks and outside the ratio range count against it).
    """
    train_r, test_r, left = _casl_records(cfg)
    size = tuple(cfg.data.image_size)
    aug = None if cfg.data.aug == "none" else cfg.data.aug
    train = ReconstructionDataset(train_r, size, aug=aug, bg=cfg.data.bg,
                                  ratio_range=tuple(cfg.data.ratio_range), seed=cfg.optim.seed)
    capped = sum(1 for _, reason in left if reason == OVER_CAP)
    found = len(train_r) + len(left)
    report = casl_input_report(found, {r.image_path for r in train.records}, train_r, left)
    check_usable("train-casl", found - capped, len(train), cfg.data.min_usable_fraction,
                 {k: v for k, v in report["skipped"].items() if k != OVER_CAP})
    train.input_report = report
    if len(train) < cfg.optim.batch_size:
        raise ValueError(f"data: {len(train)} training images after the foreground-ratio filter "
                         f"{tuple(cfg.data.ratio_range)}, fewer than optim.batch_size "
                         f"{cfg.optim.batch_size}")
    clean = ReconstructionDataset(train_r, size, aug=aug, bg=cfg.data.bg,
                                  ratio_range=tuple(cfg.data.clean_range), train=False)
    test = ReconstructionDataset(test_r, size, aug=aug, bg=cfg.data.bg, train=False)
    return train, clean, test


def prefetched(batches: Iterable, depth: int = 2) -> Iterator:
    """The items of ``batches``, produced up to ``depth`` ahead by a background thread.

    The training thread then does not wait for image decoding and augmentation (the loader's
    ``num_workers 0`` path): that work runs while the step's single-threaded parts leave a core
    free. The items and their order are exactly those of ``batches`` (the data's random draws
    use their own generators); an exception in the thread is raised here, at the item where it
    happened. Leaving the loop early (``break``) stops the thread after at most ``depth`` more
    items.
    """
    if depth < 1:
        yield from batches
        return
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in batches:
                if not put((item, None)):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            put((done, exc))
            return
        put((done, None))

    thread = threading.Thread(target=work, name="casl-data", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = items.get()
            if exc is not None:
                raise exc
            if item is done:
                return
            yield item
    finally:
        stop.set()
        thread.join()


# ------------------------------------------------------------------------------ schedules
def step_settings(cfg: CaslTrainConfig) -> CaslStepSettings:
    """The part of the config one training step reads."""
    return CaslStepSettings(loss=cfg.loss, bias_range=cfg.optim.bias_range, gan=cfg.optim.gan,
                            bg=cfg.data.bg)


def build_optimisers(cfg: CaslTrainConfig, model: torch.nn.Module,
                     disc: torch.nn.Module) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """(encoder optimiser, critic optimiser): Adam with amsgrad (as the reference code), the
    encoder's parameter groups at ``optim.lr × lr_scale``, betas (``optim.beta1``, 0.999).

    ``fused=True``: one pass over each parameter per step (PyTorch's fused Adam kernel; on CPU
    since torch 2.4) instead of a Python loop over the ~300 parameter tensors (PyTorch's CPU
    default) or ``foreach``'s one kernel per update stage, each of which reads and writes the
    4.5 M encoder weights and their three moment buffers again (the 1926×1926 offset layer
    alone is 15 MB): measured 22 → 9 ms per encoder update. The same update up to float
    rounding (tests/engine/test_casl_train.py: within 1e-6 of the per-tensor Adam).
    :func:`use_fused_adam` switches optimisers restored from older checkpoints to it.
    """
    betas = (cfg.optim.beta1, 0.999)
    groups = model.encoder.param_groups()
    opt_e = torch.optim.Adam([{"params": g["params"], "lr": cfg.optim.lr * g["lr_scale"],
                               "lr_scale": g["lr_scale"]} for g in groups],
                             lr=cfg.optim.lr, betas=betas, amsgrad=True, fused=True)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.optim.lr, betas=betas, amsgrad=True,
                             fused=True)
    return opt_e, opt_d


def use_fused_adam(*optimisers: torch.optim.Optimizer) -> None:
    """After ``load_state_dict`` of an optimiser state saved with the per-tensor or ``foreach``
    update (checkpoints from before issue #17): the fused update of :func:`build_optimisers`
    (its step counters moved to the parameters' device as the fused kernel expects)."""
    for opt in optimisers:
        for g in opt.param_groups:
            g["foreach"], g["fused"] = None, True  # as a fresh fused Adam
            for p in g["params"]:
                state = opt.state.get(p)
                if state and torch.is_tensor(state.get("step")):
                    state["step"] = state["step"].to(device=p.device, dtype=torch.float32)


def casl_warm_up(cfg: CaslTrainConfig, clock: TrainingClock, epoch_f: float) -> float:
    """Warm-up factor by fractional epoch (or by the time fraction under a budget)."""
    return warm_up_factor(max(epoch_f, clock.progress(epoch_f) * clock.epochs), cfg.loss.warm_epochs)


# ------------------------------------------------------------------------------ the loop
def train_casl_loop(cfg: CaslTrainConfig, run_dir: str | os.PathLike, resume: str = "",
                    device: torch.device | str | None = None,
                    report: ReportFn | None = None) -> dict | None:
    """Train CASL in this process (one rank of ``torch.distributed`` when a process group
    exists); writes the run directory's files from rank 0.

    Args:
        cfg: the training config (its ``ray`` section is not read here).
        run_dir: where metrics, checkpoints, templates and the final model go.
        resume: a checkpoint file, checkpoint dir or run dir to continue from ("" = start).
        device: default :func:`mirror3d.engine.runtime.default_device`.
        report: ``report(metrics, checkpoint_file)`` called on every rank once per epoch; rank 0
            passes the checkpoint file it has just written (else None). Inside Ray Train this
            is :func:`mirror3d.platform.train.ray_report`.

    Returns:
        The training summary (rank 0; what ``train_summary.json`` holds), else None.

    Raises:
        FloatingPointError: a non-finite loss, naming the last good checkpoint.
        ValueError / FileNotFoundError: bad data (see :func:`load_casl_data`).

    Rank 0 logs the run to MLflow (``cfg.tracking``; :mod:`mirror3d.engine.tracking`): the
    config, each epoch's metrics line (step = epoch), the learning-curve points (``curve/*``,
    step = training step), the summary, ``template_final.obj`` and ``train_summary.json``.
    """
    return run_tracked("train-casl", cfg, run_dir, resume,
                       lambda run_dir, rank, world_size, tracker: _train_casl(
                           cfg, run_dir, resume, device, report, tracker, rank, world_size))


def _train_casl(cfg: CaslTrainConfig, run_dir: pathlib.Path, resume: str, device,
                report: ReportFn | None, tracker: RunTracker, rank: int,
                world_size: int) -> dict | None:
    """The body of :func:`train_casl_loop`, inside its MLflow run."""
    device = torch.device(device) if device is not None else default_device()
    torch.manual_seed(cfg.optim.seed + rank)
    gen = torch.Generator().manual_seed(cfg.optim.seed * 1000 + rank)

    train_ds, clean_ds, test_ds = load_casl_data(cfg)
    model, disc = build_model(cfg)
    model, disc = model.to(device), disc.to(device)
    opt_e, opt_d = build_optimisers(cfg, model, disc)
    proto = PrototypeLoop(cfg.prototype)
    enc_loop = EncoderLoop(cfg.encoder_loop.schedule)
    settings = step_settings(cfg)
    averaged = None
    start_epoch, step = 0, 0
    saved_rng = None
    if resume:
        state = load_checkpoint(resume, KIND)
        model.load_state_dict(state["model"])
        disc.load_state_dict(state["disc"])
        opt_e.load_state_dict(state["opt_e"])
        opt_d.load_state_dict(state["opt_d"])
        use_fused_adam(opt_e, opt_d)  # older checkpoints: the per-tensor or foreach update
        proto.load_state_dict(state["prototype"])
        start_epoch, step = int(state["epoch"]) + 1, int(state["step"])
        saved_rng = state.get("rng")
        if state.get("averaged") is not None:
            averaged = torch.optim.swa_utils.AveragedModel(model, use_buffers=False)
            averaged.load_state_dict(state["averaged"])
    if rank == 0:  # what an earlier attempt logged after the start point is logged again below
        write_input_report(run_dir, train_ds.input_report)
        trim_metrics(run_dir, start_epoch - 1)
        trim_metrics(run_dir, step - 1, "curve.jsonl", key="step")

    sampler = None
    shuffle_gen = torch.Generator().manual_seed(cfg.optim.seed)
    if world_size > 1:
        sampler = torch.utils.data.DistributedSampler(train_ds, world_size, rank, shuffle=True,
                                                      seed=cfg.optim.seed)
    loader = torch.utils.data.DataLoader(train_ds, batch_size=cfg.optim.batch_size,
                                         shuffle=sampler is None, sampler=sampler, drop_last=True,
                                         num_workers=cfg.data.workers, generator=shuffle_gen)
    clean_sampler = (torch.utils.data.DistributedSampler(clean_ds, world_size, rank, shuffle=False)
                     if world_size > 1 else None)
    clean_loader = torch.utils.data.DataLoader(clean_ds, batch_size=cfg.optim.batch_size,
                                               sampler=clean_sampler, num_workers=cfg.data.workers)
    test_loader = torch.utils.data.DataLoader(test_ds, batch_size=cfg.optim.batch_size)
    truth = None
    if cfg.data.oracle_camera or (cfg.optim.eval_every and find_synth_root(cfg.data.root)):
        truth = CameraTruth(cfg.data.root)
    curve_loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(test_ds, range(min(len(test_ds), cfg.data.curve_images))),
        batch_size=cfg.optim.batch_size)
    sync = None
    if world_size > 1:
        # Data-parallel as DDP does it: equal initial parameters, gradients averaged across
        # workers before every optimiser step. (DDP's module wrapper does not fit the step's
        # several encoder/critic passes per backward, so the all-reduce is explicit.)
        for p in list(model.parameters()) + list(disc.parameters()) + list(model.buffers()):
            torch.distributed.broadcast(p.data, 0)
        sync = all_reduce_grads

    epochs = cfg.optim.epochs
    clock = TrainingClock(epochs, cfg.optim.max_minutes)
    progress = EpochProgress("train-casl", epochs, cfg.optim.max_minutes, start_epoch,
                             enabled=rank == 0, log_file=run_dir / PROGRESS_FILE)
    avg_from = epochs - max(1, int(round(cfg.optim.average_last * epochs))) \
        if cfg.optim.average_last > 0 else epochs + 1

    def curve_point() -> None:
        """A held-out learning-curve point (rank 0); its time is given back to the clock."""
        t = time.time()
        point = held_out_stats(model, curve_loader, device, truth, cfg.data.oracle_camera)
        model.train()
        point.update(step=step, epoch=epoch if step else 0,
                     train_minutes=(t - clock.start) / 60.0)
        append_metrics(run_dir, point, "curve.jsonl")
        tracker.log_metrics({k: v for k, v in point.items() if k != "step"}, step=step,
                            prefix="curve/")  # MLflow step = training step here
        clock.start += time.time() - t

    # a resumed run continues the random draws (and data order) of the run it resumes
    restore_rng_states(saved_rng, (gen, shuffle_gen), rank, world_size)
    last_epoch = epoch = start_epoch - 1  # (``epoch`` for the final curve point of a finished run)
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
        for i, batch in enumerate(prefetched(loader, 2 if cfg.data.workers == 0 else 0)):
            warm = casl_warm_up(cfg, clock, epoch + i / max(1, len(loader)))
            x = batch["image"].to(device)
            if rank == 0 and cfg.optim.eval_every and step % cfg.optim.eval_every == 0:
                curve_point()
            camera = truth.cameras(batch["path"]) if cfg.data.oracle_camera else None
            try:
                m = casl_step(model, disc, opt_e, opt_d, x, settings, enc_loop.frozen(step), warm,
                              gen, sync, camera=camera)
            except FloatingPointError:
                raise non_finite_loss("CASL", epoch, step, run_dir, resume) from None
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
        warm_now = casl_warm_up(cfg, clock, epoch + 1)
        if proto.due(epoch, averaging):
            metrics.update(prototype_update(model, proto, clean_loader, warm_now, device,
                                            all_reduce_sum))
            if rank == 0:
                export_mesh(run_dir / "templates" / f"epoch_{epoch:04d}.obj",
                            model.template.cpu(), model.faces.cpu(), model.face_uvs.cpu(), None)
        stop = clock.out_of_time_all(device)
        final = stop or epoch == epochs - 1
        epoch_seconds = time.time() - t0
        metrics.update(epoch=epoch, steps=n, lr_factor=lr_factor, warm=warm_now,
                       epoch_seconds=epoch_seconds, elapsed_seconds=clock.elapsed())
        ckpt_file = None
        due = final or (epoch + 1) % cfg.optim.checkpoint_every == 0
        rng = gather_rng_states((gen, shuffle_gen), rank, world_size) if due else None
        if rank == 0:
            append_metrics(run_dir, metrics)
            tracker.log_metrics(metrics, step=epoch)
            progress.epoch(epoch, steps=n, seconds=epoch_seconds, metrics=metrics,
                           main=("loss", "train_mask_iou"))
            if due:
                ckpt_file = save_checkpoint(
                    run_dir / "checkpoints" / f"epoch_{epoch:04d}" / CHECKPOINT_FILE, KIND,
                    {"model": model.state_dict(), "disc": disc.state_dict(),
                     "opt_e": opt_e.state_dict(), "opt_d": opt_d.state_dict(),
                     "prototype": proto.state_dict(), "epoch": epoch, "step": step,
                     "averaged": averaged.state_dict() if averaged is not None else None,
                     "rng": rng, "config": config_to_dict(cfg), "metrics": metrics})
        if report is not None:
            report(metrics, ckpt_file)
        last_epoch = epoch
        if stop:
            break

    if rank != 0:
        return None
    if cfg.optim.eval_every:
        curve_point()
    final_model = model
    if averaged is not None:
        final_model = copy.deepcopy(model)
        final_model.load_state_dict(averaged.module.state_dict())
        final_model.template.copy_(model.template)
        reestimate_bn(final_model, loader, lambda b: final_model.encode(b["image"].to(device)), 30)
    iou = held_out_mask_iou(final_model, test_loader, device)
    save_checkpoint(run_dir / "model_final.pt", KIND,
                    {"model": final_model.state_dict(), "epoch": last_epoch, "step": step,
                     "config": config_to_dict(cfg), "disc": None, "opt_e": None,
                     "opt_d": None, "prototype": proto.state_dict(), "averaged": None,
                     "metrics": {"held_out_mask_iou": iou}})
    export_mesh(run_dir / "template_final.obj", model.template.cpu(), model.faces.cpu(),
                model.face_uvs.cpu(), None)
    summary: dict[str, Any] = {"held_out_mask_iou": iou, "epochs_run": last_epoch + 1,
                               "steps": step, "minutes": clock.elapsed() / 60.0,
                               "template_updates": proto.updates,
                               "data": {k: v for k, v in train_ds.input_report.items()
                                        if k != "items"}}
    atomic_write(run_dir / "train_summary.json", json.dumps(summary, indent=2))
    tracker.log_metrics({k: v for k, v in summary.items() if k != "data"}, step=last_epoch)
    tracker.log_artifacts([run_dir / "template_final.obj", run_dir / "train_summary.json"])
    return summary
