"""Job ``eval-casl``: metrics and pictures of a trained CASL run — MaskIoU, SSIM, Fréchet
distances of reconstructions / novel views / ±90° views, and on SynthPeople the 3D truth
(Chamfer-L2, camera errors, novel-view MaskIoU) — in this process, no Ray.

    python -m mirror3d eval-casl runs/casl/<run>
    python -m mirror3d eval-casl runs/casl/<run> --max_images 64 --pictures false
    python -m mirror3d eval-casl runs/casl/<run> --data.root data/other/Market-HQ   # other data
    python -m mirror3d eval-casl runs/casl/<run> --smoke    # a few images, one sample picture
    python -m mirror3d eval-casl runs/casl/<run> --refine_steps 50   # test-time refinement

``data`` holds optional overrides of the run's own data config (the keys of train-casl's
``data`` section; unset keys keep the values the run was trained with): ``--data.root DIR``
evaluates on another tree of the same layout, ``--data.reader`` reads another layout. The model
always comes from the checkpoint. Writes ``RUN_DIR/eval/`` (``metrics.json``, ``metrics.md``,
``per_image.jsonl``, pictures; :func:`mirror3d.engine.casl_eval.evaluate_casl`).
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field, fields
from typing import Any

from mirror3d.engine.casl_eval import EvalCaslOptions, evaluate_casl
from mirror3d.utils import storage
from mirror3d.utils.config import ConfigError
from mirror3d.utils.errors import InputPathError
from mirror3d.utils.preflight import check_checkpoint, check_input, check_output

__all__ = ["CONFIG", "POSITIONAL", "EvalCaslConfig", "CaslDataOverrides", "run"]


@dataclass
class CaslDataOverrides:
    """Overrides of the run's ``data`` section (train-casl's CaslDataConfig); none = as trained."""

    root: str | None = field(default=None, metadata={
        "help": "dataset root in the layout of data.reader"})
    reader: str | None = field(default=None, metadata={
        "choices": ["market_hq", "atr", "cub", "folder"], "help": "reconstruction reader"})
    image_size: tuple[int, int] | None = field(default=None, metadata={
        "range": (8, 4096), "help": "W,H of inputs and renders (must be the model's)"})
    aug: str | None = field(default=None, metadata={"choices": ["market", "atr", "cub", "none"]})
    bg: bool | None = field(default=None, metadata={"help": "keep real backgrounds"})
    ratio_range: tuple[float, float] | None = field(default=None, metadata={
        "range": (0.0, 1.0), "help": "training-set foreground-ratio filter (unused here)"})
    clean_range: tuple[float, float] | None = field(default=None, metadata={
        "range": (0.0, 1.0), "help": "the prototype loop's clean subset (unused here)"})
    max_train: int | None = field(default=None, metadata={"range": (0, None), "help": "unused here"})
    max_test: int | None = field(default=None, metadata={
        "range": (0, None), "help": "cap of held-out images (0 = all); max_images replaces it"})
    min_usable_fraction: float | None = field(default=None, metadata={
        "range": (0.0, 1.0), "help": "training-set usable fraction (unused here)"})
    workers: int | None = field(default=None, metadata={"range": (0, 64), "help": "DataLoader workers"})
    oracle_camera: bool | None = field(default=None, metadata={
        "help": "training diagnostic (unused here: evaluation uses the predicted cameras)"})
    curve_images: int | None = field(default=None, metadata={
        "range": (1, None), "help": "training learning-curve images (unused here)"})

    def as_updates(self) -> dict[str, Any]:
        """``{"data.<key>": value}`` for every key that is set."""
        return {f"data.{f.name}": getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not None}


@dataclass
class EvalCaslConfig:
    """Evaluate a train-casl run."""

    run_dir: str = field(default="", metadata={"help": "a train-casl run directory; required"})
    max_images: int = field(default=0, metadata={
        "range": (0, None),
        "help": "evaluate at most N held-out images (0 = all; replaces the run's data.max_test)"})
    batch_size: int = field(default=16, metadata={"range": (1, None)})
    seed: int = field(default=0, metadata={"range": (0, None), "help": "seed of the random novel views"})
    samples: int = field(default=6, metadata={
        "range": (0, None), "help": "test images shown in the pictures (turntables, meshes, grids)"})
    chamfer_points: int = field(default=10000, metadata={
        "range": (1, None), "help": "surface points per mesh for the SynthPeople Chamfer distance"})
    pictures: bool = field(default=True, metadata={"help": "write the pictures (false: metrics only)"})
    fid_model: str | None = field(default=None, metadata={
        "help": "TorchScript file of the pytorch-fid TF-Inception pool3 network (then the "
                "distances are reported as FID, else as FD_randcnn)"})
    progress: bool = field(default=False, metadata={"help": "show a progress bar"})
    refine_steps: int = field(default=0, metadata={
        "range": (0, 100_000),
        "help": "test-time refinement steps per image before scoring (0 = the network's "
                "prediction; beyond the papers)"})
    data: CaslDataOverrides = field(default_factory=CaslDataOverrides)

    def options(self) -> EvalCaslOptions:
        return EvalCaslOptions(max_images=self.max_images, batch_size=self.batch_size,
                               seed=self.seed, samples=self.samples,
                               chamfer_points=self.chamfer_points, pictures=self.pictures,
                               fid_model=self.fid_model, refine_steps=self.refine_steps)


CONFIG = EvalCaslConfig
POSITIONAL = ("run_dir",)


def preflight(run_dir: str, data_root: str | None = None) -> None:
    """Before anything is evaluated: ``run_dir`` is a train-casl run directory (a checkpoint
    file is named as such, with its folder as the way on) holding a CASL checkpoint with its
    config, the other ``data.root`` exists, and ``RUN_DIR/eval`` can be written.

    Raises:
        mirror3d.utils.errors.UserError: one line naming the key.
    """
    p = pathlib.Path(run_dir)
    if p.is_file():
        raise InputPathError(f"run_dir: {p} is a file (a checkpoint?); expected a train-casl run "
                             f"directory, e.g. {p.parent}")
    check_input(p, "run_dir", what="train-casl run")
    check_checkpoint(p, "casl", "run_dir")
    if data_root:
        check_input(data_root, "data.root", what="dataset")
    check_output(p / "eval", "run_dir")


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def run(cfg: EvalCaslConfig) -> int:
    if not cfg.run_dir:
        raise ConfigError("run_dir: required (a train-casl run directory)")
    # a run (or data) in a store: evaluated in this node's stage, the eval/ folder pushed back
    local_run = storage.stage(cfg.run_dir)
    updates = {k: storage.stage(v) if isinstance(v, str) and v else v
               for k, v in cfg.data.as_updates().items()}
    preflight(local_run, updates.get("data.root"))
    m = evaluate_casl(local_run, updates, cfg.options(), progress=cfg.progress)
    storage.push(cfg.run_dir, "eval")
    fd = m["fd"]
    line = (f"eval-casl: N={m['data']['n_images']} MaskIoU {m['mask_iou_pct']:.1f}% "
            f"SSIM {m['ssim_pct']:.1f}% {fd['metric']} recon/novel/90 {_f(fd['recon']['value'])}/"
            f"{_f(fd['novel']['value'])}/{_f(fd['90']['value'])}")
    if m["refine"]["steps"]:
        line += f" (refine_steps {m['refine']['steps']})"
    s = m.get("synthpeople")
    if s:
        line += (f"; SynthPeople: Chamfer {s['chamfer_l2']['prediction_mean']:.4f} "
                 f"(initial template {s['chamfer_l2']['template_init_mean']:.4f}), median "
                 f"azimuth error {s['camera']['azimuth_median_deg']:.1f} deg, novel-view "
                 f"MaskIoU {s['novel_view_mask_iou_pct']:.1f}%")
    print(line)
    print(f"eval-casl: wrote {storage.describe(storage.join(cfg.run_dir, 'eval'))}")
    return 0
