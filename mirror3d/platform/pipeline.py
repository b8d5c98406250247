"""The main job behind ``make run``: SynthPeople → CASL → lifting (3 modes) → OG-Net per mode and
the 2D baseline → evaluation → ``runs/pipeline/<name>/report.md``.

Stages, in order (each a function of the config and the stages before it)::

    synth            SynthPeople (data/synthpeople by default; resumes by shard)
    casl             CASL, quick budget (casl.optim.max_minutes)       → <run>/casl
    eval-casl        eval-casl on it (MaskIoU, SSIM, FD, 3D truth)     → <run>/casl/eval
    lift:<mode>      Ray Data lifting of the Market-1501 tree          → <run>/lifted/<mode>
    reid:<mode>      OG-Net-Small on the mode's shards (same budget)   → <run>/reid/<mode>
    reid:baseline    the 2D baseline on the images (same budget)      → <run>/reid/baseline
    report           report.md + report.json

Every finished stage writes ``stages/<stage>.json`` holding a fingerprint of its settings and of
the stages it depends on, its wall time and its result. A re-run reuses a stage whose
fingerprint still matches and whose outputs exist, so after a crash the job resumes at the
failed stage (the trainers resume from their newest checkpoint, lifting from its finished
shards; a resumed trainer's ``max_minutes`` budget starts afresh). A stage whose settings
changed is run afresh, and so is every stage that depends on it; independent stages are kept.

Python: ``run_pipeline(PipelineConfig(...)) -> PipelineResult``; CLI: ``jobs/pipeline.py
[--smoke] [--name NAME] [--casl.optim.max_minutes 8] ...``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import pathlib
import platform
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from mirror3d.utils.config import config_to_dict, save_config, update_config
from mirror3d.data.synth.cli import SynthConfig
from mirror3d.lifting.pipeline import LiftConfig
from mirror3d.platform.casl_trainer import CaslTrainConfig
from mirror3d.platform.reid_trainer import ReidTrainConfig

log = logging.getLogger(__name__)

__all__ = ["PipelineConfig", "PipelineResult", "run_pipeline", "smoke_overrides",
           "PipelineCommand"]

MODES = ("flat", "casl-visible", "casl-visible+bg")


def _casl_default() -> CaslTrainConfig:
    # quick budget; the rest are the trainer's defaults
    return update_config(CaslTrainConfig(), {"optim.max_minutes": 8.0})


def _lift_default() -> LiftConfig:
    # 2,048 points per sample; gallery images have no Market-HQ mask: GrabCut estimates them
    return LiftConfig(num_points=2048, min_points=512, missing_mask="estimate", preview=3)


def _reid_default() -> ReidTrainConfig:
    # OG-Net-Small at a CPU size: 512 points, first FPS level 256, 4.5 minutes per model
    return update_config(ReidTrainConfig(), {
        "model.name": "og-net-small", "data.num_points": 512, "model.init_points": 256,
        "optim.batch_size": 24, "optim.max_minutes": 4.5, "optim.epochs": 60})


@dataclass
class PipelineConfig:
    """The end-to-end job. Sub-configs are the stand-alone jobs' configs; the pipeline sets their
    paths (data roots, output dirs, checkpoints) itself."""

    name: str = field(default="default", metadata={"help": "run name under out_dir"})
    out_dir: str = field(default="runs/pipeline", metadata={"help": "job directory"})
    smoke: bool = field(default=False, metadata={
        "help": "tiny sizes everywhere (a few minutes; the test suite runs it)"})
    modes: tuple[str, ...] = field(default=MODES, metadata={
        "choices": list(MODES), "help": "lifting modes, each trained with reid.model.name"})
    baseline: str = field(default="cnn2d-small", metadata={
        "help": "2D baseline model trained on the images with the same budget ('' = none)"})
    eval_images: int = field(default=128, metadata={
        "range": (0, None), "help": "eval-casl: held-out images (0 = all)"})
    eval_samples: int = field(default=4, metadata={
        "range": (0, 100), "help": "eval-casl: samples drawn (turntables, meshes)"})
    synth: SynthConfig = field(default_factory=SynthConfig)
    casl: CaslTrainConfig = field(default_factory=_casl_default)
    lift: LiftConfig = field(default_factory=_lift_default)
    reid: ReidTrainConfig = field(default_factory=_reid_default)


def smoke_overrides() -> dict[str, Any]:
    """The tiny sizes of ``--smoke`` (applied before the user's own overrides)."""
    return {
        "smoke": True,
        "synth.ids": 8, "synth.images_per_id": 6, "synth.distractor_ids": 1, "synth.junk_ids": 1,
        "synth.cameras": 3, "synth.floor": False, "synth.progress": False,
        "casl.optim.max_minutes": 0.0, "casl.optim.epochs": 2, "casl.optim.batch_size": 4,
        "casl.optim.checkpoint_every": 1, "casl.data.image_size": (32, 64),
        "casl.data.max_train": 16, "casl.data.max_test": 8, "casl.loss.warm_epochs": 1.0,
        "casl.prototype.every": 1,
        "eval_images": 6, "eval_samples": 2,
        "lift.num_points": 512, "lift.min_points": 256, "lift.shard_size": 32, "lift.actors": 1,
        "lift.preview": 1, "lift.progress": False,
        "reid.optim.max_minutes": 0.0, "reid.optim.epochs": 2, "reid.optim.batch_size": 8,
        "reid.optim.instances": 2, "reid.optim.warm_epochs": 1, "reid.optim.checkpoint_every": 1,
        "reid.data.num_points": 256, "reid.model.init_points": 64, "reid.model.k": 8,
        "reid.eval_batch_size": 16, "reid.ranked_queries": 2,
    }


# ------------------------------------------------------------------------------ bookkeeping
@dataclass
class StageRecord:
    name: str
    fingerprint: str
    seconds: float
    result: dict
    finished: str
    reused: bool = False


@dataclass
class PipelineResult:
    run_dir: pathlib.Path
    report: pathlib.Path
    stages: dict[str, StageRecord]


def _fingerprint(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _slug(mode: str) -> str:
    return mode.replace("+", "_")


class _Stages:
    """Runs stages in order, reusing finished ones whose fingerprint matches.

    A stage's fingerprint covers its name, its settings and, for each stage it depends on, that
    stage's fingerprint and finish time: a dependency that ran again makes its dependants run
    again, while independent stages (another mode's training) are kept."""

    def __init__(self, run_dir: pathlib.Path) -> None:
        self.dir = run_dir / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.records: dict[str, StageRecord] = {}

    def _file(self, name: str, suffix: str = ".json") -> pathlib.Path:
        return self.dir / f"{name.replace(':', '__')}{suffix}"

    def run(self, name: str, settings: Any, fn: Callable[[bool], dict],
            outputs: Callable[[dict], list[pathlib.Path]] = lambda r: [],
            deps: tuple[str, ...] = ()) -> dict:
        """Run (or reuse) stage ``name``. ``fn(resume)`` does the work; ``resume`` is True when an
        earlier attempt with the same fingerprint started and did not finish."""
        fp = _fingerprint(name, settings,
                          [(self.records[d].fingerprint, self.records[d].finished) for d in deps])
        done = self._file(name)
        if done.exists():
            rec = json.loads(done.read_text())
            if rec.get("fingerprint") == fp and all(pathlib.Path(p).exists()
                                                    for p in outputs(rec["result"])):
                log.info("pipeline: stage %s reused (finished %s)", name, rec.get("finished"))
                print(f"[pipeline] {name}: reused (finished {rec.get('finished')})", flush=True)
                self.records[name] = StageRecord(name, fp, rec["seconds"], rec["result"],
                                                 rec["finished"], True)
                return rec["result"]
        started = self._file(name, ".started")
        resume = started.exists() and started.read_text().strip() == fp
        done.unlink(missing_ok=True)
        started.write_text(fp)
        print(f"[pipeline] {name}: {'resuming' if resume else 'running'}", flush=True)
        t0 = time.perf_counter()
        result = fn(resume)
        seconds = time.perf_counter() - t0
        finished = _dt.datetime.now().isoformat(timespec="microseconds")
        rec = {"stage": name, "fingerprint": fp, "seconds": seconds, "result": result,
               "finished": finished}
        tmp = done.with_suffix(".tmp")
        tmp.write_text(json.dumps(rec, indent=2, default=str))
        os.replace(tmp, done)
        started.unlink(missing_ok=True)
        self.records[name] = StageRecord(name, fp, seconds, result, finished, False)
        print(f"[pipeline] {name}: done in {seconds / 60:.1f} min", flush=True)
        return result


# ------------------------------------------------------------------------------ stages
def _synth_stage(cfg: SynthConfig) -> dict:
    from mirror3d.data.synth.writer import generate_dataset

    s = generate_dataset(cfg)
    return {"root": s["out"], "counts": s["counts"], "floor": s["floor"]}


def _fresh_dir(path: pathlib.Path, resume: bool) -> None:
    if path.exists() and not resume:
        shutil.rmtree(path)


def _casl_stage(cfg: CaslTrainConfig, run_dir: pathlib.Path, synth_root: str, resume: bool) -> dict:
    from mirror3d.platform.casl_trainer import train_casl
    from mirror3d.platform.train import latest_checkpoint

    out = run_dir / "casl"
    ck = latest_checkpoint(out) if resume and out.exists() else None
    _fresh_dir(out, ck is not None)  # nothing to resume from: start clean
    cfg = update_config(cfg, {"data.root": str(pathlib.Path(synth_root) / "Market-HQ"),
                              "data.reader": "market_hq", "out_dir": str(run_dir),
                              "name": "casl", "resume": str(ck) if ck else ""})
    path = train_casl(cfg)
    summary = json.loads((path / "train_summary.json").read_text())
    from mirror3d.models.casl.inference import load_casl

    params = load_casl(path).model.num_parameters()
    return {"run_dir": str(path), "checkpoint": str(path / "model_final.pt"), "summary": summary,
            "params": params, "resumed_from": str(ck) if ck else None}


def _eval_casl_stage(casl_dir: str, max_images: int, samples: int, smoke: bool) -> dict:
    from mirror3d.models.casl.evaluate import EvalCaslOptions, evaluate_casl

    opts = EvalCaslOptions(max_images=max_images, samples=samples,
                           chamfer_points=1000 if smoke else 10000)
    m = evaluate_casl(casl_dir, options=opts, progress=True)
    return {"eval_dir": str(pathlib.Path(casl_dir) / "eval"), "metrics": m}


def _lift_stage(cfg: LiftConfig, run_dir: pathlib.Path, synth_root: str, mode: str,
                checkpoint: str, resume: bool) -> dict:
    from mirror3d.lifting.pipeline import run_lift

    out = run_dir / "lifted" / _slug(mode)
    _fresh_dir(out, resume)
    cfg = update_config(cfg, {
        "root": str(pathlib.Path(synth_root) / "Market-1501"), "reader": "market1501",
        "mask_dir": str(pathlib.Path(synth_root) / "Market-HQ"), "mode": mode,
        "checkpoint": checkpoint if mode != "flat" else "", "out": str(out),
        "name": _slug(mode), "runs_root": str(run_dir), "overwrite": True})
    rep = run_lift(cfg)
    s = rep.summary
    pics = sorted(str(p) for p in (rep.run_dir / "pictures").glob("*.png")) if rep.run_dir else []
    keep = ("rows", "images", "shards", "counts", "points_min", "points_max", "points_mean",
            "seconds", "images_per_second", "splits")
    return {"shards": str(out), "lift_run": str(rep.run_dir), "pictures": pics,
            "summary": {k: s[k] for k in keep}}


def _reid_stage(cfg: ReidTrainConfig, run_dir: pathlib.Path, name: str, resume: bool,
                **data: str) -> dict:
    from mirror3d.models.ognet.model import count_paper_params
    from mirror3d.platform.reid_trainer import load_reid_model, train_reid
    from mirror3d.platform.train import latest_checkpoint

    out = run_dir / "reid" / name
    ck = latest_checkpoint(out) if resume and out.exists() else None
    _fresh_dir(out, ck is not None)  # nothing to resume from: start clean
    updates = {f"data.{k}": v for k, v in data.items()}
    updates.update({"out_dir": str(run_dir / "reid"), "name": name,
                    "resume": str(ck) if ck else ""})
    path = train_reid(update_config(cfg, updates))
    ev = json.loads((path / "eval.json").read_text())
    model, _ = load_reid_model(path)
    lines = (path / "metrics.jsonl").read_text().splitlines()
    last = json.loads(lines[-1]) if lines else {}
    return {"run_dir": str(path), "eval": ev, "params": count_paper_params(model),
            "epochs": int(last.get("epoch", -1)) + 1,
            "train_minutes": float(last.get("elapsed_seconds", 0.0)) / 60.0,
            "train_acc": last.get("acc"), "ranked": str(path / "ranked.png"),
            "resumed_from": str(ck) if ck else None}


def _resolve(cfg: PipelineConfig) -> tuple[PipelineConfig, pathlib.Path]:
    if not cfg.modes and not cfg.baseline:
        raise ValueError("modes: expected at least one lifting mode or a baseline")
    bad = [m for m in cfg.modes if m not in MODES]
    if bad:
        raise ValueError(f"modes: unknown {bad}; expected some of {list(MODES)}")
    run_dir = (pathlib.Path(cfg.out_dir) / cfg.name).resolve()
    if cfg.smoke and cfg.synth.out == SynthConfig().out:
        cfg = update_config(cfg, {"synth.out": str(run_dir / "synthpeople")})
    cfg = update_config(cfg, {"synth.out": str(pathlib.Path(cfg.synth.out).resolve())})
    return cfg, run_dir


def run_pipeline(cfg: PipelineConfig) -> PipelineResult:
    """Run (or resume) the whole job; returns the run directory and the report's path."""
    from mirror3d.platform.train import ensure_ray

    cfg, run_dir = _resolve(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    ensure_ray()
    t_start = time.perf_counter()
    st = _Stages(run_dir)
    plain = config_to_dict

    synth = st.run("synth", plain(cfg.synth), lambda r: _synth_stage(cfg.synth),
                   lambda res: [pathlib.Path(res["root"]) / "gt" / "images.parquet"])
    root = synth["root"]
    # CASL always runs: the casl-* modes lift with it and the report shows its metrics
    casl = st.run("casl", plain(cfg.casl), lambda r: _casl_stage(cfg.casl, run_dir, root, r),
                  lambda res: [pathlib.Path(res["checkpoint"])], deps=("synth",))
    eval_casl = st.run("eval-casl", [cfg.eval_images, cfg.eval_samples],
                       lambda r: _eval_casl_stage(casl["run_dir"], cfg.eval_images,
                                                  cfg.eval_samples, cfg.smoke),
                       lambda res: [pathlib.Path(res["eval_dir"]) / "metrics.json"],
                       deps=("casl",))
    lifts, reids = {}, {}
    for mode in cfg.modes:
        lifts[mode] = st.run(f"lift:{mode}", plain(cfg.lift),
                             lambda r, mode=mode: _lift_stage(cfg.lift, run_dir, root, mode,
                                                              casl["checkpoint"], r),
                             lambda res: [pathlib.Path(res["shards"])],
                             deps=("synth",) if mode == "flat" else ("synth", "casl"))
    for mode in cfg.modes:
        reids[mode] = st.run(f"reid:{mode}", plain(cfg.reid),
                             lambda r, mode=mode: _reid_stage(
                                 cfg.reid, run_dir, _slug(mode), r,
                                 shards=lifts[mode]["shards"]),
                             lambda res: [pathlib.Path(res["run_dir"]) / "model_final.pt"],
                             deps=(f"lift:{mode}",))
    baseline = None
    if cfg.baseline:
        bcfg = update_config(cfg.reid, {"model.name": cfg.baseline})
        baseline = st.run("reid:baseline", plain(bcfg),
                          lambda r: _reid_stage(bcfg, run_dir, "baseline", r,
                                                images=str(pathlib.Path(root) / "Market-1501")),
                          lambda res: [pathlib.Path(res["run_dir"]) / "model_final.pt"],
                          deps=("synth",))
    from mirror3d.platform.pipeline_report import write_report

    report = write_report(run_dir, cfg, st.records, synth, casl, eval_casl, lifts, reids,
                          baseline, time.perf_counter() - t_start,
                          {"python": platform.python_version(), "machine": platform.machine(),
                           "cpus": os.cpu_count()})
    return PipelineResult(run_dir, report, st.records)


# ------------------------------------------------------------------------------ CLI
class PipelineCommand:
    """``python -m mirror3d pipeline [--smoke] [--name NAME] [overrides]`` (``jobs/pipeline.py``)."""

    @staticmethod
    def add_arguments(parser) -> None:
        from mirror3d.cli import add_config_arguments

        add_config_arguments(parser, PipelineConfig)  # includes --smoke (a config field)

    @staticmethod
    def config(args) -> PipelineConfig:
        """The config of parsed ``args``; with ``--smoke`` the smoke presets sit below the
        user's own options."""
        from mirror3d.cli import config_from_args

        cfg = config_from_args(PipelineConfig, args)
        if cfg.smoke:
            cfg = config_from_args(PipelineConfig, _with_presets(args, smoke_overrides()))
        return cfg

    @staticmethod
    def run(args) -> int:
        res = run_pipeline(PipelineCommand.config(args))
        print(f"pipeline: report -> {res.report}")
        text = res.report.read_text()
        if "\n## Re-identification" in text:
            reid = text.split("\n## Re-identification", 1)[1].split("\n\n")
            print("## Re-identification" + "\n\n".join(reid[:4]))
        return 0


def _with_presets(args, presets: dict[str, Any]):
    """A copy of parsed ``args`` whose unset dotted options take ``presets``."""
    import copy

    from mirror3d.cli import _CONFIG_PREFIX
    from mirror3d.utils.config import format_value

    new = copy.copy(args)
    for key, value in presets.items():
        dest = _CONFIG_PREFIX + key
        if getattr(new, dest, None) is None:
            setattr(new, dest, format_value(value))
    return new
