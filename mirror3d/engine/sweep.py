"""Sweeps of a trainer's config: the ``sweep`` job's config, the sweep spec format, its
validation, and each trial's job config and record (no Ray here: the Ray Tune driver is
:mod:`mirror3d.platform.tune`, the outputs are :mod:`mirror3d.engine.sweep_report`).

A sweep spec is a YAML file, ``configs/sweeps/<name>.yaml`` (docs/sweeps.md)::

    description: what the study asks (the first paragraph of summary.md)
    job: train-reid                   # what every trial runs: train-reid | train-casl
    preset: default                   # that job's preset (configs/<job>/<preset>.yaml)
    fixed: {optim.epochs: 60}         # dotted keys of the job's config, set in every trial
    space:                            # the searched dotted keys, one kind each:
      model.k: {grid: [1, 4, 8, 16, 20, 32, 64]}   # every value (grids are crossed)
      model.last_graph: {choice: [position, position+appearance]}   # sampled
      optim.lr: {loguniform: [1.0e-4, 3.0e-3]}     # also uniform: [lo, hi]
      data.max_train: {randint: [64, 512]}          # integers, both ends included
    search: {algorithm: grid, num_samples: 1}       # grid | random | optuna (TPE)
    metric: {name: map_trapezoid, mode: max}        # the final metric that ranks the trials
    asha: {metric: loss, mode: min, grace_period: 1, reduction_factor: 2}   # optional
    trial_minutes: 0                  # each trial's training budget (optim.max_minutes)
    evaluation: {}                    # the trial's evaluation after training (below)
    paper:                            # the paper's direction, checked in summary.md
      source: "OG-Net (Zheng et al. 2021), Fig. 7 and Table IV"
      claims:
        - text: "a per-point linear layer (k = 1) is worse than the graph (k = 20)"
          kind: better                # a beats b | close: |a - b| <= tolerance (metric units)
          metric: map_trapezoid       # default: metric.name (and mode: metric.mode)
          a: {model.k: 20}            # the trials with these values (their mean)
          b: {model.k: 1}             # a side may also name its own metric: {metric: ...}
          paper: "69.33 vs 65.50 % mAP (Table IV)"
    smoke: {...}                      # the tiny variant (--smoke): its keys replace these,
                                      # except fixed, which is merged key by key

Search algorithms: ``grid`` runs every combination of the ``grid`` dimensions (``num_samples``
times); ``random`` samples ``num_samples`` trials (``grid`` dimensions are crossed with them);
``optuna`` is Optuna's TPE sampler with a budget of ``num_samples`` trials (no ``grid``
dimensions). ASHA stops trials early on a metric the trainer reports every epoch (``loss``,
``acc``, ``train_mask_iou``, ...), comparing trials at the same epoch.

Evaluation after training, in the trial: ``train-casl`` runs eval-casl
(:func:`mirror3d.engine.casl_eval.evaluate_casl`; ``evaluation`` holds its options, e.g.
``{max_images: 64, chamfer_points: 2000}``, pictures off unless asked for); ``train-reid``
already evaluates (``eval.json``), and ``evaluation: {num_points: N, densities: [..]}`` adds an
evaluation of the trained model at N points per test cloud, thinned to each density (the OG-Net
paper's test densities are fractions of the whole cloud: docs/sweeps.md).

Every problem of a spec is one :class:`~mirror3d.utils.config.ConfigError` line naming the spec
and the key, raised before any trial or Ray starts.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
import pathlib
import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

import yaml

from mirror3d.engine.casl_eval import EvalCaslOptions
from mirror3d.engine.casl_train import CaslTrainConfig
from mirror3d.engine.reid_train import (ReidTrainConfig, evaluate_model, input_kind,
                                        load_reid_data, load_reid_model)
from mirror3d.engine.tracking import resolve_tracking
from mirror3d.utils import storage
from mirror3d.utils.config import (ConfigError, config_fields, config_to_dict, format_value,
                                   get_by_dotted, parse_overrides, update_config)
from mirror3d.utils.files import atomic_write
from mirror3d.utils.rundir import append_metrics

__all__ = ["SweepConfig", "SweepJob", "SWEEP_JOBS", "Dimension", "Asha", "Side", "Claim",
           "SweepSpec", "SweepPlan", "SPEC_KEYS", "spec_path", "load_spec", "plan_sweep",
           "trial_config", "trial_settings", "check_inputs", "TRIAL_FILE", "read_trial",
           "write_trial", "finished_trial", "log_event", "gather_events", "EVENTS_FILE",
           "EVENTS_DIR", "reid_final_metrics",
           "casl_final_metrics", "metric_display", "one_line", "grid_values", "final_metric_names",
           "reid_density_evaluation", "short_value"]


# ------------------------------------------------------------------------------ the job config
@dataclass
class SweepConfig:
    """A Ray Tune sweep of train-reid or train-casl (the spec: configs/sweeps/, docs/sweeps.md)."""

    spec: str = field(default="", metadata={
        "help": "the sweep spec: a name in configs/sweeps/ (ognet_k, ognet_density, "
                "ognet_nonlocal, casl_schedules, casl_learning) or a YAML file; required"})
    variant: Literal["full", "smoke"] = field(default="full", metadata={
        "help": "the spec's full sweep, or its smoke section (a tiny sweep; --smoke sets it)"})
    name: str = field(default="", metadata={
        "help": "sweep name under out_dir (default: the spec's name, '-smoke' for the smoke "
                "variant)"})
    out_dir: str = field(default="runs/sweep", metadata={"help": "job directory"})
    overrides: str = field(default="", metadata={
        "help": "dotted overrides of every trial's job config, space-separated key=value, e.g. "
                "'data.shards=data/lifted/casl-visible optim.epochs=40'"})
    num_samples: int = field(default=0, metadata={
        "range": (0, 100_000), "help": "trials sampled (random, optuna) or grid repeats; "
                                       "0 = the spec's"})
    trial_minutes: float = field(default=0.0, metadata={
        "range": (0.0, None), "help": "training budget of each trial (the job's "
                                      "optim.max_minutes); 0 = the spec's"})
    max_concurrent_trials: int = field(default=1, metadata={
        "range": (1, 10_000), "help": "trials running at once (each with cpus_per_trial CPUs)"})
    cpus_per_trial: float = field(default=1.0, metadata={
        "range": (0.01, 1024.0), "help": "CPUs of each trial's Ray Train workers (shared by "
                                         "ray.num_workers; = their torch threads)"})
    gpus_per_trial: int = field(default=0, metadata={
        "range": (0, 1024), "help": "GPUs of each trial: that many Ray Train workers, one GPU "
                                    "each (0 = CPU, the job's ray.num_workers)"})
    max_failures: int = field(default=0, metadata={
        "range": (0, 100), "help": "retries of a failed trial (0 = recorded as failed)"})
    seed: int = field(default=0, metadata={
        "range": (0, None), "help": "seed of the random and Optuna searches"})
    resume: Literal["auto", "never"] = field(default="auto", metadata={
        "help": "auto: continue an interrupted sweep of the same name (finished trials are "
                "kept, unfinished ones run); never: refuse an existing sweep directory"})


# ------------------------------------------------------------------------------ the jobs
@dataclass(frozen=True)
class SweepJob:
    """What the sweep knows of a trainer job.

    Attributes:
        config: its config class.
        epoch_metrics: metrics the trainer reports every epoch (ASHA may stop on them).
        final_metrics: metrics of the trial's evaluation (what ranks trials).
        fractions: metrics that are fractions (shown x100 as %).
        percents: metrics already in %.
        headline: final metrics summary.md always shows.
    """

    config: type
    epoch_metrics: tuple[str, ...]
    final_metrics: tuple[str, ...]
    fractions: tuple[str, ...] = ()
    percents: tuple[str, ...] = ()
    headline: tuple[str, ...] = ()


_REID_SCORES = ("rank1", "rank5", "rank10", "map_trapezoid", "map_mean_precision")

SWEEP_JOBS: dict[str, SweepJob] = {
    "train-reid": SweepJob(
        ReidTrainConfig, epoch_metrics=("loss", "ce", "circle", "triplet", "acc"),
        final_metrics=_REID_SCORES, fractions=_REID_SCORES + ("acc",),
        headline=("rank1", "map_trapezoid")),
    "train-casl": SweepJob(
        CaslTrainConfig,
        epoch_metrics=("loss", "train_mask_iou", "data", "reg", "flip", "ic", "gan_g", "l1",
                       "mask_iou_loss"),
        final_metrics=("mask_iou", "ssim", "fd_recon", "fd_novel", "fd_90", "chamfer",
                       "chamfer_ratio", "azimuth_median_deg", "novel_view_mask_iou",
                       "held_out_mask_iou"),
        fractions=("train_mask_iou",),
        percents=("mask_iou", "ssim", "novel_view_mask_iou", "held_out_mask_iou"),
        headline=("mask_iou", "ssim", "chamfer")),
}

#: Keys a sweep sets in each trial itself: the run directory and the resources.
_SET_BY_SWEEP = ("out_dir", "name", "resume", "ray.")
#: Keys that do not change a trial's results (left out of its settings).
_NOT_SETTINGS = ("out_dir", "name", "resume", "ray", "tracking")


def metric_display(job: SweepJob, metric: str) -> tuple[float, str]:
    """(scale, unit) to show ``metric``: fractions x100 in %, others as they are."""
    base = metric.rsplit("/", 1)[-1]
    if base in job.fractions:
        return 100.0, "%"
    if base in job.percents:
        return 1.0, "%"
    return 1.0, ""


# ------------------------------------------------------------------------------ the spec
SPEC_KEYS = ("description", "job", "preset", "fixed", "space", "search", "metric", "asha",
             "trial_minutes", "evaluation", "paper", "smoke")
KINDS = ("grid", "choice", "uniform", "loguniform", "randint")
ALGORITHMS = ("grid", "random", "optuna")


@dataclass(frozen=True)
class Dimension:
    """One searched key: ``grid``/``choice`` over ``values``, or a range [low, high]."""

    key: str
    kind: str
    values: tuple = ()
    low: float = 0.0
    high: float = 0.0

    def describe(self) -> str:
        if self.kind in ("grid", "choice"):
            shown = [format_value(v) for v in self.values]
            return f"{self.kind} " + ", ".join(f'"{t}"' if "," in t else t for t in shown)
        return f"{self.kind} [{format_value(self.low)}, {format_value(self.high)}]"


@dataclass(frozen=True)
class Asha:
    """ASHA early stopping on a per-epoch metric (time = Tune's training iteration = epochs)."""

    metric: str
    mode: str
    grace_period: int = 1
    reduction_factor: float = 2.0


@dataclass(frozen=True)
class Side:
    """One side of a claim: the trials whose config has ``where``'s values, scored on ``metric``."""

    where: tuple[tuple[str, Any], ...]
    metric: str

    def describe(self) -> str:
        return ", ".join(f"{k} = {format_value(v)}" for k, v in self.where) or "all trials"


@dataclass(frozen=True)
class Claim:
    """A direction the paper reports, checked against the sweep's trials (summary.md)."""

    text: str
    kind: str  # better | close
    a: Side
    b: Side
    tolerance: float = 0.0
    paper: str = ""
    mode: str = "max"  # which way is better (kind better)


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep spec (:func:`load_spec`); ``data`` is the resolved mapping (spec.yaml)."""

    name: str
    path: str
    variant: str
    description: str
    job: str
    preset: str
    fixed: tuple[tuple[str, Any], ...]
    space: tuple[Dimension, ...]
    algorithm: str
    num_samples: int
    metric: str
    mode: str
    asha: Asha | None
    trial_minutes: float
    evaluation: tuple[tuple[str, Any], ...]
    source: str
    claims: tuple[Claim, ...]
    data: dict = field(default_factory=dict, compare=False)

    @property
    def keys(self) -> tuple[str, ...]:
        """The searched keys, in spec order."""
        return tuple(d.key for d in self.space)


def _err(spec: str, msg: str) -> ConfigError:
    return ConfigError(f"sweep spec {spec}: {msg}")


def spec_path(spec: str, sweeps_dir: str | pathlib.Path) -> pathlib.Path:
    """The file of ``spec``: a name in ``sweeps_dir`` (``ognet_k``) or a path to a YAML file.

    Raises:
        ConfigError: no such spec (naming the specs there).
    """
    if not spec:
        raise ConfigError("spec: required: a sweep spec name in configs/sweeps/ or a YAML file")
    p = pathlib.Path(spec)
    if p.suffix in (".yaml", ".yml") or "/" in spec:
        if not p.is_file():
            raise ConfigError(f"spec: sweep spec file {spec} does not exist")
        return p
    sweeps_dir = pathlib.Path(sweeps_dir)
    p = sweeps_dir / f"{spec}.yaml"
    if not p.is_file():
        known = sorted(q.stem for q in sweeps_dir.glob("*.yaml"))
        close = difflib.get_close_matches(spec, known, n=3)
        hint = f"did you mean: {', '.join(close)}?" if close else f"specs: {', '.join(known) or 'none'}"
        raise ConfigError(f"spec: no sweep spec {spec!r} in {sweeps_dir}; {hint}")
    return p


def _mapping(name: str, key: str, v: Any) -> dict:
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise _err(name, f"{key}: expected a mapping, got {v!r}")
    return dict(v)


def _unknown(name: str, where: str, key: Any, valid) -> ConfigError:
    close = difflib.get_close_matches(str(key), list(valid), n=2)
    hint = f"did you mean: {', '.join(close)}?" if close else f"expected one of {', '.join(valid)}"
    return _err(name, f"{where}unknown key {key!r}; {hint}")


def _merge_variant(name: str, data: dict, variant: str) -> dict:
    """The spec mapping of ``variant``: the smoke section's keys replace the full spec's,
    except ``fixed``, which is merged key by key."""
    smoke = data.pop("smoke", None)
    if variant != "smoke":
        return data
    if not smoke:
        raise _err(name, "smoke: the spec has no smoke section (a tiny variant for --smoke)")
    smoke = _mapping(name, "smoke", smoke)
    for k in smoke:
        if k not in SPEC_KEYS or k == "smoke":
            raise _unknown(name, "smoke: ", k, [s for s in SPEC_KEYS if s != "smoke"])
    out = dict(data)
    for k, v in smoke.items():
        if k == "fixed":
            out["fixed"] = {**_mapping(name, "fixed", data.get("fixed")),
                            **_mapping(name, "smoke.fixed", v)}
        else:
            out[k] = v
    return out


def _number(name: str, key: str, v: Any, integer: bool = False) -> float:
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            pass
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _err(name, f"{key}: expected a {'whole ' if integer else ''}number, got {v!r}")
    if integer and v != int(v):
        raise _err(name, f"{key}: expected a whole number, got {v!r}")
    return int(v) if integer else float(v)


def _dimension(name: str, key: Any, v: Any) -> Dimension:
    where = f"space.{key}"
    if not isinstance(key, str) or not key:
        raise _err(name, f"space: expected dotted config keys, got {key!r}")
    if not isinstance(v, Mapping) or len(v) != 1:
        raise _err(name, f"{where}: expected one of {{grid|choice: [values]}} or "
                         f"{{uniform|loguniform|randint: [low, high]}}, got {v!r}")
    (kind, arg), = v.items()
    if kind not in KINDS:
        close = difflib.get_close_matches(str(kind), KINDS, n=1)
        hint = f"did you mean {close[0]}?" if close else f"expected one of {', '.join(KINDS)}"
        raise _err(name, f"{where}: unknown search kind {kind!r}; {hint}")
    if kind in ("grid", "choice"):
        if not isinstance(arg, (list, tuple)):
            raise _err(name, f"{where}: {kind}: expected a list of values, got {arg!r}")
        if not arg:
            raise _err(name, f"{where}: {kind}: empty list; expected at least one value")
        return Dimension(key, kind, values=tuple(arg))
    if not isinstance(arg, (list, tuple)) or len(arg) != 2:
        raise _err(name, f"{where}: {kind}: expected [low, high], got {arg!r}")
    lo = _number(name, f"{where}: {kind} low", arg[0], integer=kind == "randint")
    hi = _number(name, f"{where}: {kind} high", arg[1], integer=kind == "randint")
    if lo > hi:
        raise _err(name, f"{where}: {kind}: low {format_value(lo)} > high {format_value(hi)}")
    if kind == "loguniform" and lo <= 0:
        raise _err(name, f"{where}: loguniform: low must be > 0, got {format_value(lo)}")
    return Dimension(key, kind, low=lo, high=hi)


def _mode(name: str, key: str, v: Any) -> str:
    if v not in ("min", "max"):
        raise _err(name, f"{key}: expected min or max, got {v!r}")
    return v


def _side(name: str, key: str, v: Any, metric: str) -> Side:
    v = _mapping(name, key, v)
    m = v.pop("metric", metric)
    if not isinstance(m, str) or not m:
        raise _err(name, f"{key}.metric: expected a metric name, got {m!r}")
    return Side(tuple(v.items()), m)


_CLAIM_KEYS = ("text", "kind", "metric", "mode", "a", "b", "tolerance", "paper")


def _claims(name: str, paper: dict, metric: str, mode: str) -> tuple[str, tuple[Claim, ...]]:
    for k in paper:
        if k not in ("source", "claims"):
            raise _unknown(name, "paper: ", k, ("source", "claims"))
    claims = paper.get("claims") or []
    if not isinstance(claims, list):
        raise _err(name, f"paper.claims: expected a list, got {claims!r}")
    out = []
    for i, c in enumerate(claims):
        where = f"paper.claims[{i}]"
        c = _mapping(name, where, c)
        for k in c:
            if k not in _CLAIM_KEYS:
                raise _unknown(name, f"{where}: ", k, _CLAIM_KEYS)
        kind = c.get("kind", "better")
        if kind not in ("better", "close"):
            raise _err(name, f"{where}.kind: expected better or close, got {kind!r}")
        if "a" not in c or "b" not in c:
            raise _err(name, f"{where}: expected two sides a and b")
        m = c.get("metric", metric)
        tol = _number(name, f"{where}.tolerance", c.get("tolerance", 0.0))
        if kind == "close" and tol <= 0:
            raise _err(name, f"{where}.tolerance: a 'close' claim needs a tolerance > 0")
        cmode = _mode(name, f"{where}.mode", c.get("mode", mode if m == metric else "max"))
        out.append(Claim(str(c.get("text") or f"claim {i + 1}"), kind,
                         _side(name, f"{where}.a", c["a"], m), _side(name, f"{where}.b", c["b"], m),
                         tol, str(c.get("paper", "")), cmode))
    return str(paper.get("source", "")), tuple(out)


def load_spec(spec: str, sweeps_dir: str | pathlib.Path, variant: str = "full") -> SweepSpec:
    """Read and parse a sweep spec (its structure; :func:`plan_sweep` checks it against the
    job's config). ``variant``: ``full`` or ``smoke`` (the spec's smoke section applied).

    Raises:
        ConfigError: one line naming the spec and the key.
    """
    path = spec_path(spec, sweeps_dir)
    name = path.stem
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise _err(name, f"cannot parse {path}: {' '.join(str(e).split())}") from None
    raw = _mapping(name, "the file", raw)
    for k in raw:
        if k not in SPEC_KEYS:
            raise _unknown(name, "", k, SPEC_KEYS)
    data = _merge_variant(name, raw, variant)
    job = data.get("job")
    if job not in SWEEP_JOBS:
        raise _err(name, f"job: expected one of {', '.join(SWEEP_JOBS)}, got {job!r}")
    fixed = _mapping(name, "fixed", data.get("fixed"))
    space_raw = _mapping(name, "space", data.get("space"))
    if not space_raw:
        raise _err(name, "space: empty; expected at least one searched key")
    space = tuple(_dimension(name, k, v) for k, v in space_raw.items())
    search = data.get("search") or {"algorithm": "grid"}
    if isinstance(search, str):
        search = {"algorithm": search}
    search = _mapping(name, "search", search)
    for k in search:
        if k not in ("algorithm", "num_samples"):
            raise _unknown(name, "search: ", k, ("algorithm", "num_samples"))
    algorithm = search.get("algorithm", "grid")
    if algorithm not in ALGORITHMS:
        raise _err(name, f"search.algorithm: expected one of {', '.join(ALGORITHMS)}, "
                         f"got {algorithm!r}")
    num_samples = _number(name, "search.num_samples", search.get("num_samples", 1), integer=True)
    if num_samples < 1:
        raise _err(name, f"search.num_samples: expected >= 1, got {num_samples}")
    metric = _mapping(name, "metric", data.get("metric"))
    if not isinstance(metric.get("name"), str) or not metric.get("name"):
        raise _err(name, "metric.name: required: the final metric that ranks the trials")
    mode = _mode(name, "metric.mode", metric.get("mode", "max"))
    asha = None
    if data.get("asha"):
        a = _mapping(name, "asha", data["asha"])
        for k in a:
            if k not in ("metric", "mode", "grace_period", "reduction_factor"):
                raise _unknown(name, "asha: ", k,
                               ("metric", "mode", "grace_period", "reduction_factor"))
        if not isinstance(a.get("metric"), str):
            raise _err(name, "asha.metric: required: a metric the trainer reports every epoch")
        grace = _number(name, "asha.grace_period", a.get("grace_period", 1), integer=True)
        rf = _number(name, "asha.reduction_factor", a.get("reduction_factor", 2))
        if grace < 1:
            raise _err(name, f"asha.grace_period: expected >= 1 (epochs), got {grace}")
        if rf <= 1:
            raise _err(name, f"asha.reduction_factor: expected > 1, got {format_value(rf)}")
        asha = Asha(a["metric"], _mode(name, "asha.mode", a.get("mode", "min")), grace, rf)
    minutes = _number(name, "trial_minutes", data.get("trial_minutes", 0.0))
    if minutes < 0:
        raise _err(name, f"trial_minutes: expected >= 0, got {format_value(minutes)}")
    evaluation = _mapping(name, "evaluation", data.get("evaluation"))
    source, claims = _claims(name, _mapping(name, "paper", data.get("paper")), metric["name"],
                             mode)
    resolved = json.loads(json.dumps(data, default=str))
    return SweepSpec(name=name, path=str(path), variant=variant,
                     description=" ".join(str(data.get("description", "")).split()),
                     job=job, preset=str(data.get("preset", "default")),
                     fixed=tuple(fixed.items()), space=space, algorithm=algorithm,
                     num_samples=int(num_samples), metric=metric["name"], mode=mode, asha=asha,
                     trial_minutes=minutes, evaluation=tuple(evaluation.items()),
                     source=source, claims=claims, data=resolved)


# ------------------------------------------------------------------------------ the plan
@dataclass
class SweepPlan:
    """A validated sweep: everything the Tune driver and the outputs need.

    Attributes:
        cfg: the sweep job's config.
        spec: the spec, its values normalised (grid/choice values as the config holds them;
            tuples as override text, e.g. ``"32,64"``, so that Optuna can sample them).
        job: the trainer job.
        preset: the job's preset config, before the sweep's changes (best.yaml takes its
            out_dir, name and ray section).
        base: every trial's job config before its searched values (preset + fixed +
            overrides, absolute data paths, the per-trial resources and budget).
        sweep_dir: ``<out_dir>/<name>``, absolute: the sweep's folder on this node (the stage of
            ``location`` when that is a storage URI).
        num_samples: Tune's num_samples.
        trial_minutes: each trial's training budget (0 = epochs only).
        evaluation: the trial's evaluation options (see the module docstring).
        location: where the sweep is stored: ``sweep_dir``, or a storage URI
            (:mod:`mirror3d.utils.storage`; ``--storage s3://...``) whose stage it is.
    """

    cfg: SweepConfig
    spec: SweepSpec
    job: SweepJob
    preset: Any
    base: Any
    sweep_dir: pathlib.Path
    num_samples: int
    trial_minutes: float
    evaluation: dict
    location: str = ""

    @property
    def stored_at(self) -> str:
        """The sweep's storage location (``location``, else ``sweep_dir``)."""
        return self.location or str(self.sweep_dir)

    @property
    def name(self) -> str:
        return self.sweep_dir.name

    @property
    def trials_dir(self) -> pathlib.Path:
        """Where the trials' run directories are: ``<sweep_dir>/trials/<trial id>``."""
        return self.sweep_dir / "trials"

    def trial_dir(self, trial_id: str) -> pathlib.Path:
        return self.trials_dir / trial_id

    @property
    def total_trials(self) -> int:
        """How many trials the sweep runs."""
        grids = [len(d.values) for d in self.spec.space if d.kind == "grid"]
        return self.num_samples * (math.prod(grids) if grids else 1)

    @property
    def threads(self) -> int:
        """Torch threads of the trial's own evaluation (its share of CPUs)."""
        return max(1, int(round(self.cfg.cpus_per_trial)))

    def settings(self) -> dict:
        """What a resumed sweep must share with the interrupted one (utils.fingerprint)."""
        spec = {k: v for k, v in self.spec.data.items() if k not in ("description", "paper")}
        return {"spec": spec, "base": trial_settings(self.base), "num_samples": self.num_samples,
                "trial_minutes": self.trial_minutes, "seed": self.cfg.seed,
                "max_concurrent_trials": self.cfg.max_concurrent_trials,
                "evaluation": self.evaluation}


def _set_by_sweep(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in _SET_BY_SWEEP)


def _leaf(name: str, where: str, cls: type, fields_: dict, key: str):
    if key in fields_:
        if _set_by_sweep(key):
            raise _err(name, f"{where}{key}: set by the sweep for each trial (its run directory "
                             f"and resources: --cpus_per_trial, --gpus_per_trial), not by a spec")
        return fields_[key]
    try:
        get_by_dotted(cls(), key)
    except ConfigError as e:
        raise _err(name, f"{where}{e} (a key of {cls.__name__})") from None
    raise _err(name, f"{where}{key}: is a config section; search its fields instead")


def _value(name: str, where: str, base: Any, key: str, v: Any) -> Any:
    """``v`` as the config holds it at ``key`` (tuples as override text); raises one line."""
    try:
        got = get_by_dotted(update_config(base, {key: v}), key)
    except ConfigError as e:
        raise _err(name, f"{where}{e}") from None
    return format_value(got) if isinstance(got, (tuple, list)) else got


def final_metric_names(plan: SweepPlan) -> list[str]:
    """The final metrics a trial of ``plan`` reports (with its test densities)."""
    return _final_metrics(plan.spec.job, plan.job, plan.base, plan.evaluation)


def _final_metrics(job_name: str, job: SweepJob, base: Any, evaluation: dict) -> list[str]:
    names = list(job.final_metrics)
    if job_name == "train-reid":
        densities = evaluation.get("densities") or getattr(base, "eval_densities", ())
        names += [f"densities/{float(d)!r}/{m}" for d in densities for m in _REID_SCORES]
    return names


def _check_metric(name: str, where: str, metric: str, known: list[str]) -> None:
    if metric not in known:
        close = difflib.get_close_matches(metric, known, n=2)
        hint = f"did you mean: {', '.join(close)}?" if close else f"known: {', '.join(known)}"
        raise _err(name, f"{where}: unknown metric {metric!r}; {hint}")


def _evaluation(name: str, job_name: str, spec_eval: dict, base: Any) -> dict:
    if job_name == "train-casl":
        valid = [f.name for f in fields(EvalCaslOptions)]
        for k in spec_eval:
            if k not in valid:
                raise _unknown(name, "evaluation: ", k, valid)
        opts = {"pictures": False, **spec_eval}
        try:
            EvalCaslOptions(**opts).validate()
        except ValueError as e:
            raise _err(name, f"evaluation.{e}") from None
        return opts
    for k in spec_eval:
        if k not in ("num_points", "densities"):
            raise _unknown(name, "evaluation: ", k, ("num_points", "densities"))
    if not spec_eval:
        return {}
    n = _number(name, "evaluation.num_points", spec_eval.get("num_points", base.data.num_points),
                integer=True)
    densities = spec_eval.get("densities") or [1.0]
    if not isinstance(densities, (list, tuple)):
        raise _err(name, f"evaluation.densities: expected a list of fractions, got {densities!r}")
    try:  # the trainer's own checks of these keys (ranges, points left at each density)
        update_config(base, {"data.num_points": n, "eval_densities": tuple(densities)})
    except ConfigError as e:
        raise _err(name, f"evaluation: {e}") from None
    return {"num_points": int(n), "densities": [float(d) for d in densities]}


def plan_sweep(cfg: SweepConfig, spec: SweepSpec, preset: Any) -> SweepPlan:
    """Check ``spec`` against its job's config and build the sweep plan. ``preset``: the job's
    config from its preset ``spec.preset`` (the jobs layer resolves it).

    Raises:
        ConfigError: one line per problem: an unknown key (with the closest keys), a key the
            sweep sets itself, a value outside the field's range or choices, a range of the
            wrong type for the field, an empty or repeated list, a search algorithm that does
            not fit the dimensions, an unknown metric.
    """
    name, job = spec.name, SWEEP_JOBS[spec.job]
    cls = job.config
    leaves = {f.key: f for f in config_fields(cls)}
    # the base config: preset + fixed + --overrides (+ absolute paths, resources, budget)
    fixed = {}
    for key, v in spec.fixed:
        _leaf(name, "fixed: ", cls, leaves, key)
        fixed[key] = v
    try:
        base = update_config(preset, fixed)
    except ConfigError as e:
        raise _err(name, f"fixed: {e}") from None
    tokens = shlex.split(cfg.overrides)
    try:
        pairs = parse_overrides(cls, tokens)
    except ConfigError as e:
        raise ConfigError(f"overrides: {e}") from None
    for key, _ in pairs:
        if key not in leaves or _set_by_sweep(key):
            raise ConfigError(f"overrides: {key}: not a key the sweep lets you set (the run "
                              f"directory and resources are the sweep's own options)")
    if pairs:
        try:
            base = update_config(base, dict(pairs))
        except ConfigError as e:
            raise ConfigError(f"overrides: {e}") from None
    minutes = cfg.trial_minutes or spec.trial_minutes
    updates: dict[str, Any] = {}
    for key in ("data.root", "data.shards", "data.images"):  # trials run in other directories
        if key in leaves:
            value = str(get_by_dotted(base, key))
            updates[key] = value if storage.is_uri(value) else str(pathlib.Path(value).resolve())
    workers = cfg.gpus_per_trial or base.ray.num_workers
    updates.update({"ray.num_workers": workers, "ray.use_gpu": cfg.gpus_per_trial > 0,
                    "ray.cpus_per_worker": cfg.cpus_per_trial / workers, "resume": ""})
    if minutes:
        updates["optim.max_minutes"] = minutes
    try:
        base = update_config(base, updates)
    except ConfigError as e:
        raise ConfigError(f"sweep resources: {e}") from None
    if hasattr(base, "tracking"):
        base = resolve_tracking(base)  # the MLflow store, absolute for the trials
    # the space
    dims, seen = [], set()
    for d in spec.space:
        info = _leaf(name, "space: ", cls, leaves, d.key)
        if d.key in seen:
            raise _err(name, f"space: {d.key}: searched twice")
        seen.add(d.key)
        where = f"space.{d.key}: "
        base_type = info.type.replace(" or none", "")
        if d.kind in ("grid", "choice"):
            values = tuple(_value(name, "space: ", base, d.key, v) for v in d.values)
            if len(set(map(format_value, values))) != len(values):
                raise _err(name, f"{where}{d.kind}: repeated values in "
                                 f"{', '.join(format_value(v) for v in values)}")
            dims.append(replace(d, values=values))
            continue
        want = "int" if d.kind == "randint" else "float"
        if base_type != want:
            raise _err(name, f"{where}{d.kind}: needs a {want} field, {d.key} is {info.type}"
                             + ("; use choice or grid" if base_type != "float" else
                                "; use uniform or loguniform"))
        for bound in (d.low, d.high):
            _value(name, "space: ", base, d.key, bound)
        dims.append(d)
    if spec.algorithm == "grid" and any(d.kind != "grid" for d in dims):
        bad = next(d for d in dims if d.kind != "grid")
        raise _err(name, f"space.{bad.key}: {bad.kind}: the grid search takes only grid "
                         f"dimensions; use search.algorithm random or optuna")
    if spec.algorithm == "optuna" and any(d.kind == "grid" for d in dims):
        bad = next(d for d in dims if d.kind == "grid")
        raise _err(name, f"space.{bad.key}: grid: Optuna samples, it does not take grids; "
                         f"use choice")
    evaluation = _evaluation(name, spec.job, dict(spec.evaluation), base)
    known = _final_metrics(spec.job, job, base, evaluation)
    _check_metric(name, "metric.name", spec.metric, known)
    if spec.asha is not None:
        _check_metric(name, "asha.metric", spec.asha.metric, list(job.epoch_metrics))
    claims = []
    space_keys = {d.key: d for d in dims}
    for i, c in enumerate(spec.claims):
        sides = []
        for label, side in (("a", c.a), ("b", c.b)):
            where = f"paper.claims[{i}].{label}"
            _check_metric(name, f"{where}.metric", side.metric, known)
            norm = []
            for key, v in side.where:
                if key not in space_keys:
                    raise _err(name, f"{where}: {key}: not a searched key "
                                     f"({', '.join(space_keys)})")
                norm.append((key, _value(name, f"{where}: ", base, key, v)))
            sides.append(Side(tuple(norm), side.metric))
        claims.append(replace(c, a=sides[0], b=sides[1]))
    spec = replace(spec, space=tuple(dims), claims=tuple(claims))
    num_samples = cfg.num_samples or spec.num_samples
    sweep_name = cfg.name or (spec.name + ("-smoke" if spec.variant == "smoke" else ""))
    if "/" in sweep_name or sweep_name in (".", ".."):
        raise ConfigError(f"name: expected a plain name, got {sweep_name!r}")
    location = storage.join(cfg.out_dir, sweep_name)
    return SweepPlan(cfg=cfg, spec=spec, job=job, preset=preset, base=base,
                     sweep_dir=storage.local_path(location), num_samples=num_samples,
                     trial_minutes=minutes, evaluation=evaluation, location=location)


def check_inputs(plan: SweepPlan) -> None:
    """The trials' input data exists (one error now rather than one per trial).

    Raises:
        FileNotFoundError: naming the key and the path.
    """
    base = plan.base
    if plan.spec.job == "train-casl":
        keys = ["data.root"]
    else:
        names = {base.model.name} | {v for d in plan.spec.space if d.key == "model.name"
                                     for v in d.values}
        keys = sorted({"data.images" if input_kind(n) == "image" else "data.shards"
                       for n in names})
    for key in keys:
        p = str(get_by_dotted(base, key))
        if not storage.exists(p):
            raise FileNotFoundError(f"{key}: {p} does not exist (set it with --overrides "
                                    f"'{key}=...' or in the spec's fixed keys)")


# ------------------------------------------------------------------------------ trials
def trial_config(plan: SweepPlan, trial_id: str, params: Mapping[str, Any]) -> Any:
    """The job config of one trial: the plan's base config with the trial's searched values,
    its run directory ``<sweep_dir>/trials/<trial_id>`` and its MLflow run name.

    Raises:
        ConfigError: a value the config refuses (e.g. a cross-field check).
    """
    updates = {k: params[k] for k in plan.spec.keys if k in params}
    updates.update({"out_dir": storage.join(plan.stored_at, "trials"), "name": trial_id})
    if hasattr(plan.base, "tracking"):
        if not plan.base.tracking.experiment:
            updates["tracking.experiment"] = f"sweep-{plan.name}"
        if not plan.base.tracking.run_name:
            updates["tracking.run_name"] = trial_id
    return update_config(plan.base, updates)


def trial_settings(cfg: Any) -> dict:
    """The part of a job config a trial's results depend on (not its run directory,
    resources or tracking)."""
    return {k: v for k, v in config_to_dict(cfg).items() if k not in _NOT_SETTINGS}


#: A trial's record in its run directory, written when it finished or failed.
TRIAL_FILE = "trial.json"


def read_trial(run_dir: str | pathlib.Path) -> dict | None:
    """The trial record in ``run_dir`` (None when missing or unreadable)."""
    p = pathlib.Path(run_dir) / TRIAL_FILE
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_trial(run_dir: str | pathlib.Path, record: Mapping[str, Any]) -> None:
    atomic_write(pathlib.Path(run_dir) / TRIAL_FILE, json.dumps(record, indent=1, default=str))


def finished_trial(run_dir: str | pathlib.Path, cfg: Any) -> dict | None:
    """The record of a trial that finished with the same settings as ``cfg`` (reused when Tune
    restarts it after an interruption), else None."""
    rec = read_trial(run_dir)
    if rec and rec.get("status") == "finished" and rec.get("settings") == json.loads(
            json.dumps(trial_settings(cfg), default=str)):
        return rec
    return None


#: The sweep's event log, and the folder of the per-trial logs it is gathered from.
EVENTS_FILE, EVENTS_DIR = "events.jsonl", "events"


def log_event(sweep_dir: str | pathlib.Path, trial_id: str, event: str, **extra: Any) -> str:
    """One line of the trial's event log ``<sweep_dir>/events/<trial id>.jsonl`` (a trial
    started, was reused, finished, failed; one file per trial, so trials on different nodes
    never write the same file); :func:`gather_events` makes the sweep's ``events.jsonl``.
    Returns the log's path relative to ``sweep_dir``."""
    folder = pathlib.Path(sweep_dir) / EVENTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    append_metrics(folder, {"time": time.time(), "trial": trial_id, "event": event, **extra},
                   f"{trial_id}.jsonl")
    return f"{EVENTS_DIR}/{trial_id}.jsonl"


def gather_events(sweep_dir: str | pathlib.Path) -> pathlib.Path:
    """``<sweep_dir>/events.jsonl``: every trial's events, in time order."""
    sweep_dir = pathlib.Path(sweep_dir)
    events = [json.loads(line) for p in sorted((sweep_dir / EVENTS_DIR).glob("*.jsonl"))
              for line in p.read_text().splitlines() if line.strip()]
    events.sort(key=lambda e: (e.get("time", 0.0), e.get("trial", "")))
    return atomic_write(sweep_dir / EVENTS_FILE,
                        "".join(json.dumps(e, default=float) + "\n" for e in events))


def short_value(v: Any) -> str:
    """A value for people: floats to 4 significant digits, others as override text."""
    return f"{v:.4g}" if isinstance(v, float) else format_value(v)


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``"<Type>: <message>"`` on one line, at most ``limit`` characters of message."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:limit]}" if text else type(exc).__name__


# ------------------------------------------------------------------------------ final metrics
def reid_final_metrics(evaluation: Mapping[str, Any],
                       extra: Mapping[str, Any] | None = None) -> dict[str, float]:
    """A re-id trial's final metrics: the scores of its ``eval.json`` and, as
    ``densities/<d>/<score>``, its test densities (those of ``extra``, the sweep's own
    evaluation, when given, else ``eval.json``'s)."""
    out = {k: float(evaluation[k]) for k in _REID_SCORES if evaluation.get(k) is not None}
    dens = (extra or evaluation).get("densities") or {}
    for d, scores in dens.items():
        for k in _REID_SCORES:
            if scores.get(k) is not None:
                out[f"densities/{float(d)!r}/{k}"] = float(scores[k])
    return out


def reid_density_evaluation(run_dir: str | pathlib.Path, num_points: int,
                            densities: list[float]) -> dict:
    """Evaluate a trained re-id run again at ``num_points`` points per test cloud, thinned to
    each of ``densities`` (as ``eval-reid --num_points N --densities ...``); writes
    ``<run_dir>/eval/eval.json`` and returns it."""
    model, cfg = load_reid_model(run_dir)
    cfg = update_config(cfg, {"data.num_points": num_points, "eval_densities": tuple(densities),
                              "ranked_queries": 0})
    out = pathlib.Path(run_dir) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    return evaluate_model(model, load_reid_data(cfg), cfg, out)


def casl_final_metrics(evaluation: Mapping[str, Any], summary: Mapping[str, Any]) -> dict:
    """A CASL trial's final metrics from eval-casl's metrics and ``train_summary.json``."""
    fd = evaluation.get("fd") or {}
    s = evaluation.get("synthpeople") or {}
    c = s.get("chamfer_l2") or {}
    pred, init = c.get("prediction_mean"), c.get("template_init_mean")
    out = {
        "mask_iou": evaluation.get("mask_iou_pct"), "ssim": evaluation.get("ssim_pct"),
        "fd_recon": (fd.get("recon") or {}).get("value"),
        "fd_novel": (fd.get("novel") or {}).get("value"),
        "fd_90": (fd.get("90") or {}).get("value"),
        "chamfer": pred, "chamfer_ratio": (pred / init) if pred is not None and init else None,
        "azimuth_median_deg": (s.get("camera") or {}).get("azimuth_median_deg"),
        "novel_view_mask_iou": s.get("novel_view_mask_iou_pct"),
        "held_out_mask_iou": summary.get("held_out_mask_iou"),
    }
    return {k: float(v) for k, v in out.items() if v is not None}


def grid_values(plan: SweepPlan) -> list[dict]:
    """Every combination of the grid dimensions (in spec order), for checks and tests."""
    grids = [d for d in plan.spec.space if d.kind == "grid"]
    return [dict(zip([d.key for d in grids], combo))
            for combo in itertools.product(*[d.values for d in grids])]
