"""Job ``pipeline``, the main job behind ``make run``: SynthPeople → CASL → lifting (3 modes, and
the oracle with true meshes) → OG-Net per input and the 2D baseline → evaluation →
``runs/pipeline/<name>/report.md``.

    python -m mirror3d pipeline [--smoke] [--name NAME] [--casl.optim.max_minutes 8] ...
    python jobs/pipeline.py --smoke                   # the same (make run = jobs/pipeline.py)
    python -m mirror3d config show pipeline --smoke   # what a run would use

Stages, in order (each a function of the config and the stages before it; docs/architecture.md,
"How make run flows")::

    synth            SynthPeople (data/synthpeople by default; resumes by shard)
    casl             CASL, quick budget (casl.optim.max_minutes)       → <run>/casl
    eval-casl        eval-casl on it (MaskIoU, SSIM, FD, 3D truth)     → <run>/casl/eval
    lift:<mode>      Ray Data lifting of the Market-1501 tree          → <run>/lifted/<mode>
    lift:oracle:<mode>  the same with SynthPeople's true meshes       → <run>/lifted/oracle_<mode>
    reid:<mode>      OG-Net-Small on the mode's shards (same budget)   → <run>/reid/<mode>
    reid:oracle:<mode>  the same on the oracle's shards               → <run>/reid/oracle_<mode>
    reid:baseline    the 2D baseline on the images (same budget)      → <run>/reid/baseline
    report           report.md + report.json (:mod:`mirror3d.jobs.pipeline_report`)

``oracle_modes`` (``casl-*`` modes) lift with the ``synth-truth`` reconstructor: each image's true
mesh and camera from SynthPeople's ground truth, with the same masks, lifting settings, model and
budget as the CASL row of the mode. It is an upper bound that needs ground truth, not a method;
the report marks its rows so and computes how much of the OG-Net paper's Table I ordering holds
with CASL's meshes and with the true ones (Zheng et al. 2021, Table I).

The sections ``synth``, ``casl``, ``lift`` and ``reid`` are the stand-alone jobs' configs (synth,
train-casl, lift, train-reid); the presets in ``configs/pipeline/`` compose those jobs' presets
of the same name (``compose:``) and add only what differs. The pipeline sets the paths (data
roots, output dirs, checkpoints) itself; ``{run_dir}`` in ``synth.out`` stands for the run
directory (the smoke preset generates its own small dataset there).

A run name that exists (a run with a started or finished stage) is continued only with
``--resume``, replaced only with ``--overwrite`` (every file of the old run removed first; the
dataset too when it lives in the run, as with ``--smoke``), and refused otherwise
(:func:`mirror3d.utils.rundir.claim_run`), before Ray starts: ``make run ARGS=--resume``
continues the default run.

Every finished stage writes ``stages/<stage>.json`` holding a fingerprint of its settings and of
the stages it depends on (:func:`mirror3d.utils.fingerprint.fingerprint`), its wall time and its
result. A resumed run reuses a stage whose fingerprint still matches and whose outputs exist, so
after a crash the job resumes at the failed stage (the trainers resume from their newest checkpoint,
lifting from its finished shards; a resumed trainer's ``max_minutes`` budget starts afresh). A
stage whose settings changed is run afresh, and so is every stage that depends on it;
independent stages are kept.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import pathlib
import platform
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from mirror3d.data.synth.config import SynthConfig
from mirror3d.engine.casl_eval import EvalCaslOptions, evaluate_casl
from mirror3d.engine.casl_train import CaslTrainConfig
from mirror3d.engine.reid_train import ReidTrainConfig, load_reid_model
from mirror3d.jobs.pipeline_report import ORACLE_PREFIX, write_report
from mirror3d.lifting.config import LiftConfig
from mirror3d.lifting.modes import MODES_NEEDING_MASK
from mirror3d.lifting.reconstructors import SYNTH_TRUTH
from mirror3d.models.casl import load_casl
from mirror3d.models.ognet.model import count_paper_params
from mirror3d.platform.casl import train_casl
from mirror3d.platform.cluster import ensure_ray
from mirror3d.platform.lifting import run_lift
from mirror3d.platform.reid import train_reid
from mirror3d.platform.synth import generate_dataset
from mirror3d.utils import storage
from mirror3d.utils.checkpoint import latest_checkpoint
from mirror3d.utils.config import ConfigError, config_to_dict, save_config, update_config
from mirror3d.utils.files import atomic_write
from mirror3d.utils.fingerprint import fingerprint
from mirror3d.utils.preflight import check_output
from mirror3d.utils.rundir import claim_run

log = logging.getLogger(__name__)

__all__ = ["CONFIG", "MESH_MODES", "MODES", "RUN_DIR_PLACEHOLDER", "PipelineConfig",
           "PipelineResult", "StageRecord", "resolve_run_dir", "run_location", "run",
           "run_pipeline"]

MODES = ("flat", "casl-visible", "casl-visible+bg")
#: The modes that lift a mesh, and so have an oracle with SynthPeople's true meshes.
MESH_MODES = tuple(m for m in MODES if m in MODES_NEEDING_MASK)

#: The placeholder of ``synth.out`` that stands for the run directory.
RUN_DIR_PLACEHOLDER = "{run_dir}"


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

    name: str = field(default="default", metadata={
        "help": "run name under out_dir; an existing run is continued only with --resume, "
                "replaced only with --overwrite, else refused"})
    resume: bool = field(default=False, metadata={
        "help": "continue the run of this name: finished stages whose settings match are reused, "
                "a stage that was cut off resumes"})
    overwrite: bool = field(default=False, metadata={
        "help": "replace the run of this name (all its files removed first)"})
    out_dir: str = field(default="runs/pipeline", metadata={"help": "job directory"})
    title_note: str = field(default="", metadata={
        "help": "shown in brackets after the run name in report.md's title (e.g. 'smoke sizes')"})
    modes: tuple[str, ...] = field(default=MODES, metadata={
        "choices": list(MODES), "help": "lifting modes, each trained with reid.model.name"})
    oracle_modes: tuple[str, ...] = field(default=MESH_MODES, metadata={
        "choices": list(MESH_MODES),
        "help": "modes also lifted with SynthPeople's true meshes and cameras (synth-truth) and "
                "trained like the others: an upper bound that needs ground truth, not a method"})
    baseline: str = field(default="cnn2d-small", metadata={
        "help": "2D baseline model trained on the images with the same budget ('' = none)"})
    eval_images: int = field(default=128, metadata={
        "range": (0, None), "help": "eval-casl: held-out images (0 = all)"})
    eval_samples: int = field(default=4, metadata={
        "range": (0, 100), "help": "eval-casl: samples drawn (turntables, meshes)"})
    eval_chamfer_points: int = field(default=10000, metadata={
        "range": (1, None), "help": "eval-casl: surface samples per mesh for the Chamfer distance"})
    synth: SynthConfig = field(default_factory=SynthConfig)
    casl: CaslTrainConfig = field(default_factory=_casl_default)
    lift: LiftConfig = field(default_factory=_lift_default)
    reid: ReidTrainConfig = field(default_factory=_reid_default)

    def validate(self) -> None:
        if not self.modes and not self.oracle_modes and not self.baseline:
            raise ConfigError("modes: expected at least one lifting mode or a baseline")
        if self.resume and self.overwrite:
            raise ConfigError("overwrite: --resume and --overwrite contradict each other; pass "
                              "one of them")


CONFIG = PipelineConfig


# ------------------------------------------------------------------------------ bookkeeping
@dataclass
class StageRecord:
    """One stage of a run: its fingerprint, wall time, result, finish time, and whether this
    invocation reused it."""

    name: str
    fingerprint: str
    seconds: float
    result: dict
    finished: str
    reused: bool = False


@dataclass
class PipelineResult:
    """What :func:`run_pipeline` did: the run directory, ``report.md`` and the stages."""

    run_dir: pathlib.Path
    report: pathlib.Path
    stages: dict[str, StageRecord]


def _slug(mode: str) -> str:
    return mode.replace("+", "_")


def _oracle_lift(cfg: LiftConfig) -> LiftConfig:
    return update_config(cfg, {"reconstructor": SYNTH_TRUTH, "checkpoint": "", "refine_steps": 0})


@dataclass(frozen=True)
class _Input:
    """One lifted input of the re-id table: a lifting mode and whose meshes it lifts with
    (CASL's, or SynthPeople's true ones: ``oracle``)."""

    mode: str
    oracle: bool = False

    @property
    def key(self) -> str:
        """Stage suffix and report key: ``<mode>`` or ``oracle:<mode>``."""
        return f"{ORACLE_PREFIX}{self.mode}" if self.oracle else self.mode

    @property
    def slug(self) -> str:
        """Folder name under ``lifted/`` and ``reid/``."""
        return f"oracle_{_slug(self.mode)}" if self.oracle else _slug(self.mode)

    def lift_config(self, cfg: LiftConfig, checkpoint: str) -> LiftConfig:
        """``cfg`` with this input's mode and reconstructor (paths are set by the stage)."""
        if self.oracle:
            cfg = _oracle_lift(cfg)
        return update_config(cfg, {"mode": self.mode, "checkpoint": checkpoint
                                   if self.mode != "flat" and not self.oracle else ""})

    def lift_settings(self, cfg: LiftConfig) -> dict:
        """The lift stage's settings (fingerprint): the ``lift`` section as configured; the
        oracle's without the CASL reconstructor and refinement it replaces."""
        return config_to_dict(_oracle_lift(cfg) if self.oracle else cfg)

    def lift_deps(self) -> tuple[str, ...]:
        return ("synth", "casl") if self.mode != "flat" and not self.oracle else ("synth",)


class _Stages:
    """Runs stages in order, reusing finished ones whose fingerprint matches.

    A stage's fingerprint covers its name, its settings and, for each stage it depends on, that
    stage's fingerprint and finish time: a dependency that ran again makes its dependants run
    again, while independent stages (another mode's training) are kept."""

    def __init__(self, run_dir: pathlib.Path, location: str | None = None) -> None:
        self.dir = run_dir / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.location = location or str(run_dir)  # pushed after every stage (a storage URI)
        self.records: dict[str, StageRecord] = {}

    def _file(self, name: str, suffix: str = ".json") -> pathlib.Path:
        return self.dir / f"{name.replace(':', '__')}{suffix}"

    def run(self, name: str, settings: Any, fn: Callable[[bool], dict],
            outputs: Callable[[dict], list[pathlib.Path]] = lambda r: [],
            deps: tuple[str, ...] = ()) -> dict:
        """Run (or reuse) stage ``name``. ``fn(resume)`` does the work; ``resume`` is True when an
        earlier attempt with the same fingerprint started and did not finish."""
        fp = fingerprint(name, settings,
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
        atomic_write(started, fp)
        storage.push(self.location, "stages")
        print(f"[pipeline] {name}: {'resuming' if resume else 'running'}", flush=True)
        t0 = time.perf_counter()
        result = fn(resume)
        seconds = time.perf_counter() - t0
        finished = _dt.datetime.now().isoformat(timespec="microseconds")
        rec = {"stage": name, "fingerprint": fp, "seconds": seconds, "result": result,
               "finished": finished}
        atomic_write(done, json.dumps(rec, indent=2, default=str))
        started.unlink(missing_ok=True)
        storage.remove(storage.join(self.location, "stages", started.name), stage=False)
        storage.push(self.location)
        self.records[name] = StageRecord(name, fp, seconds, result, finished, False)
        print(f"[pipeline] {name}: done in {seconds / 60:.1f} min", flush=True)
        return result


# ------------------------------------------------------------------------------ stages
def _synth_stage(cfg: SynthConfig) -> dict:
    s = generate_dataset(cfg)
    return {"root": s["out"], "counts": s["counts"], "floor": s["floor"]}


def _fresh_dir(location: str, resume: bool) -> None:
    """Start ``location`` (a stage's output, local or in a store) clean unless resuming."""
    if not resume and (storage.local_path(location).exists() or storage.exists(location)):
        storage.remove(location)


def _casl_stage(cfg: CaslTrainConfig, location: str, synth: str, resume: bool) -> dict:
    """Train CASL into ``<location>/casl`` on the Market-HQ tree of the dataset at ``synth``
    (locations: local folders or storage URIs, so that Ray Train workers on any node write the
    run to where the driver finds it)."""
    out = storage.local_path(storage.join(location, "casl"))
    ck = latest_checkpoint(out) if resume and out.exists() else None
    _fresh_dir(storage.join(location, "casl"), ck is not None)  # nothing to resume from: start clean
    cfg = update_config(cfg, {"data.root": storage.join(synth, "Market-HQ"),
                              "data.reader": "market_hq", "out_dir": location,
                              "name": "casl", "resume": str(ck) if ck else ""})
    path = train_casl(cfg)
    summary = json.loads((path / "train_summary.json").read_text())
    params = load_casl(path).model.num_parameters()
    return {"run_dir": str(path), "checkpoint": str(path / "model_final.pt"), "summary": summary,
            "params": params, "resumed_from": str(ck) if ck else None}


def _eval_casl_stage(casl_dir: str, options: EvalCaslOptions) -> dict:
    m = evaluate_casl(casl_dir, options=options, progress=True)
    return {"eval_dir": str(pathlib.Path(casl_dir) / "eval"), "metrics": m}


def _lift_stage(cfg: LiftConfig, location: str, synth: str, slug: str, resume: bool) -> dict:
    """Lift the Market-1501 tree of the dataset at ``synth`` with ``cfg`` (its mode and
    reconstructor already set) into ``<location>/lifted/<slug>``."""
    out = storage.join(location, "lifted", slug)
    _fresh_dir(out, resume)
    cfg = update_config(cfg, {
        "root": storage.join(synth, "Market-1501"), "reader": "market1501",
        "mask_dir": storage.join(synth, "Market-HQ"), "out": out,
        "name": slug, "runs_root": location, "overwrite": True})
    rep = run_lift(cfg)
    s = rep.summary
    pics = sorted(str(p) for p in (rep.run_dir / "pictures").glob("*.png")) if rep.run_dir else []
    keep = ("rows", "images", "shards", "counts", "points_min", "points_max", "points_mean",
            "seconds", "images_per_second", "splits")
    return {"shards": str(out), "lift_run": str(rep.run_dir), "pictures": pics,
            "summary": {k: s[k] for k in keep}}


def _reid_stage(cfg: ReidTrainConfig, location: str, name: str, resume: bool,
                **data: str) -> dict:
    out = storage.local_path(storage.join(location, "reid", name))
    ck = latest_checkpoint(out) if resume and out.exists() else None
    _fresh_dir(storage.join(location, "reid", name), ck is not None)  # nothing to resume from
    updates = {f"data.{k}": v for k, v in data.items()}
    updates.update({"out_dir": storage.join(location, "reid"), "name": name,
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


def _stages_started(run_dir: pathlib.Path) -> bool:
    """Whether a pipeline run at ``run_dir`` holds work: a stage started or finished (a run
    directory without one, e.g. of a start that failed before its first stage, holds none)."""
    stages = run_dir / "stages"
    return any(stages.glob("*.json")) or any(stages.glob("*.started"))


def resolve_run_dir(cfg: PipelineConfig) -> tuple[PipelineConfig, pathlib.Path]:
    """The config with ``{run_dir}`` in ``synth.out`` filled in (with the run's location: a
    folder, or a storage URI with ``--storage``) and a local data path absolute, and the run
    directory on this node (the stage of a URI: :mod:`mirror3d.utils.storage`)."""
    location = run_location(cfg)
    synth_out = cfg.synth.out.replace(RUN_DIR_PLACEHOLDER, location)
    if not storage.is_uri(synth_out):
        synth_out = str(pathlib.Path(synth_out).resolve())
    cfg = update_config(cfg, {"synth.out": synth_out})
    return cfg, storage.local_path(location)


def run_location(cfg: PipelineConfig) -> str:
    """Where the pipeline's run is stored: ``<out_dir>/<name>``, a local path (absolute) or a
    storage URI."""
    location = storage.join(cfg.out_dir, cfg.name)
    return location if storage.is_uri(location) else str(storage.local_path(location))


def run_pipeline(cfg: PipelineConfig) -> PipelineResult:
    """Run (or resume) the whole job; returns the run directory and the report's path."""
    check_output(cfg.out_dir, "out_dir")  # before the run directory or Ray: one line
    cfg, run_dir = resolve_run_dir(cfg)
    check_output(cfg.synth.out, "synth.out")
    location = run_location(cfg)
    storage.pull(location)  # a run in a store: its finished stages are reused
    if cfg.resume or cfg.overwrite or _stages_started(run_dir):  # else: nothing to lose
        claim_run(location, resume=cfg.resume, overwrite=cfg.overwrite)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    ensure_ray()
    t_start = time.perf_counter()
    st = _Stages(run_dir, location)
    plain = config_to_dict
    synth_at = cfg.synth.out  # the dataset's location (the stages' inputs)

    synth = st.run("synth", plain(cfg.synth), lambda r: _synth_stage(cfg.synth),
                   lambda res: [pathlib.Path(res["root"]) / "gt" / "images.parquet"])
    # CASL always runs: the casl-* modes lift with it and the report shows its metrics
    casl = st.run("casl", plain(cfg.casl), lambda r: _casl_stage(cfg.casl, location, synth_at, r),
                  lambda res: [pathlib.Path(res["checkpoint"])], deps=("synth",))
    eval_options = EvalCaslOptions(max_images=cfg.eval_images, samples=cfg.eval_samples,
                                   chamfer_points=cfg.eval_chamfer_points)
    eval_casl = st.run("eval-casl", [cfg.eval_images, cfg.eval_samples, cfg.eval_chamfer_points],
                       lambda r: _eval_casl_stage(casl["run_dir"], eval_options),
                       lambda res: [pathlib.Path(res["eval_dir"]) / "metrics.json"],
                       deps=("casl",))
    casl_model = storage.join(location, "casl", "model_final.pt")  # what every lifting node reads
    inputs = [_Input(m) for m in cfg.modes] + [_Input(m, oracle=True) for m in cfg.oracle_modes]
    lifts, reids = {}, {}
    for inp in inputs:
        lifts[inp.key] = st.run(
            f"lift:{inp.key}", inp.lift_settings(cfg.lift),
            lambda r, inp=inp: _lift_stage(inp.lift_config(cfg.lift, casl_model), location,
                                           synth_at, inp.slug, r),
            lambda res: [storage.local_path(res["shards"])], deps=inp.lift_deps())
    for inp in inputs:
        reids[inp.key] = st.run(
            f"reid:{inp.key}", plain(cfg.reid),
            lambda r, inp=inp: _reid_stage(cfg.reid, location, inp.slug, r,
                                           shards=lifts[inp.key]["shards"]),
            lambda res: [pathlib.Path(res["run_dir"]) / "model_final.pt"],
            deps=(f"lift:{inp.key}",))
    baseline = None
    if cfg.baseline:
        bcfg = update_config(cfg.reid, {"model.name": cfg.baseline})
        baseline = st.run("reid:baseline", plain(bcfg),
                          lambda r: _reid_stage(bcfg, location, "baseline", r,
                                                images=storage.join(synth_at, "Market-1501")),
                          lambda res: [pathlib.Path(res["run_dir"]) / "model_final.pt"],
                          deps=("synth",))
    report = write_report(run_dir, cfg, st.records, synth, casl, eval_casl, lifts, reids,
                          baseline, time.perf_counter() - t_start,
                          {"python": platform.python_version(), "machine": platform.machine(),
                           "cpus": os.cpu_count()})
    storage.push(location)
    return PipelineResult(run_dir, report, st.records)


def run(cfg: PipelineConfig) -> int:
    res = run_pipeline(cfg)
    print(f"pipeline: report -> {res.report}")
    text = res.report.read_text()
    if "\n## Re-identification" in text:  # the table and its paragraphs, not the picture links
        reid = text.split("\n## Re-identification", 1)[1].split("\n## ", 1)[0]
        print("## Re-identification" + reid.split("\n- ranked lists", 1)[0].rstrip())
    return 0
