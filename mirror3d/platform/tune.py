"""Ray Tune sweeps of the trainers: the driver around :mod:`mirror3d.engine.sweep` (the spec,
its validation, each trial's config) and :mod:`mirror3d.engine.sweep_report` (the outputs).

Each Tune trial is :func:`trial_main`, a Ray Train driver (Ray Train V2's pattern: the trainer
runs inside the trial, not ``Tuner(trainer)``): it builds the trial's job config, runs our
trainer (:func:`mirror3d.platform.reid.train_reid` / :func:`mirror3d.platform.casl.train_casl`)
with ``TuneReportCallback`` in its Ray Train callbacks, so that every epoch's metrics line
reaches Tune (ASHA decides on it), then evaluates the model (CASL: eval-casl's MaskIoU, SSIM,
Fréchet distances and SynthPeople Chamfer; re-id: the trainer's ``eval.json``, plus the spec's
test densities) and reports the final metrics with ``ray.tune.report``.

Resources: a trial's CPUs (``cpus_per_trial``) and GPUs are its Ray Train workers'
(``ray.cpus_per_worker`` = their torch threads, set explicitly: the trainers' automatic share
would give every trial all CPUs). The trial itself (a driver that waits on its workers, then
evaluates once they are gone) reserves none, so ``max_concurrent_trials`` trials of
``cpus_per_trial`` CPUs fit a cluster of that many CPUs (2 x 1 here).

Resume: the sweep directory holds Tune's experiment (``tune/``); running the same sweep again
restores it (``Tuner.restore(resume_unfinished=True, restart_errored=False)``): finished and
failed trials are kept, the unfinished ones run again from the start. A trial whose run
directory already holds a finished record with the same settings (its trial.json) reports that
record instead of training again, so a trial that finished just before a crash, later than
Tune's last snapshot of the experiment, is not trained twice either. A trial that raises is
recorded as failed with its error in one line, and the other trials go on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import shutil
import time
from collections.abc import Iterator
from typing import Any

import torch
import yaml
from ray import tune
from ray.train._internal.session import get_session  # the trial's session (see _stop_requested)
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from mirror3d.engine.casl_eval import EvalCaslOptions, evaluate_casl
from mirror3d.engine.sweep import (TRIAL_FILE, SweepPlan, casl_final_metrics, check_inputs,
                                   finished_trial, gather_events, log_event, one_line, read_trial, reid_density_evaluation,
                                   reid_final_metrics, short_value, trial_config, trial_settings,
                                   write_trial)
from mirror3d.engine.sweep_report import SweepOutputs, TrialOutcome, write_outputs
from mirror3d.platform.casl import train_casl
from mirror3d.platform.cluster import ensure_ray, verbose
from mirror3d.platform.reid import train_reid
from mirror3d.utils import storage
from mirror3d.utils.config import ConfigError, save_config
from mirror3d.utils.errors import JobFailed
from mirror3d.utils.preflight import check_output
from mirror3d.utils.files import atomic_write
from mirror3d.utils.fingerprint import check_settings, write_settings

__all__ = ["EXPERIMENT", "INTERRUPT_ENV", "SweepInterrupted", "param_space", "search_algorithm",
           "scheduler", "trial_main", "run_sweep"]

#: Tune's experiment folder inside the sweep directory.
EXPERIMENT = "tune"
#: Fault injection for tests: the driver raises after this many trials finished in its run.
INTERRUPT_ENV = "MIRROR3D_SWEEP_INTERRUPT_AFTER"


class SweepInterrupted(JobFailed):
    """The sweep's driver stopped before every trial ran (resume it with the same command)."""


# ------------------------------------------------------------------------------ Tune's objects
def param_space(plan: SweepPlan) -> dict[str, Any]:
    """Tune's search space: one entry per searched key (``randint``'s high end included)."""
    out: dict[str, Any] = {}
    for d in plan.spec.space:
        if d.kind == "grid":
            out[d.key] = tune.grid_search(list(d.values))
        elif d.kind == "choice":
            out[d.key] = tune.choice(list(d.values))
        elif d.kind == "uniform":
            out[d.key] = tune.uniform(d.low, d.high)
        elif d.kind == "loguniform":
            out[d.key] = tune.loguniform(d.low, d.high)
        else:
            out[d.key] = tune.randint(int(d.low), int(d.high) + 1)
    return out


class FinalMetricOptuna(OptunaSearch):
    """Optuna's TPE scored on a trial's final metric, which only its last report holds: the
    per-epoch reports (training metrics, for ASHA) are not passed to Optuna, which uses them
    for nothing but its pruners (off here: ASHA stops trials). A trial that ASHA stopped has
    no final metric and is told to Optuna as pruned."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self.metric in result:
            super().on_trial_result(trial_id, result)


def search_algorithm(plan: SweepPlan):
    """``BasicVariantGenerator`` (grid and random: seeded, at most ``max_concurrent_trials``
    trials at once) or :class:`FinalMetricOptuna` (``TuneConfig(max_concurrent_trials)`` wraps
    it in a ``ConcurrencyLimiter``, which takes Searchers only)."""
    if plan.spec.algorithm == "optuna":
        return FinalMetricOptuna(metric=plan.spec.metric, mode=plan.spec.mode, seed=plan.cfg.seed)
    return BasicVariantGenerator(random_state=plan.cfg.seed,
                                 max_concurrent=plan.cfg.max_concurrent_trials)


def _max_epochs(plan: SweepPlan) -> int:
    epochs = [plan.base.optim.epochs]
    for d in plan.spec.space:
        if d.key == "optim.epochs":
            epochs += [int(v) for v in d.values] if d.values else [int(d.high)]
    return max(epochs)


def scheduler(plan: SweepPlan):
    """ASHA on the spec's per-epoch metric, or None (Tune's FIFO). Time is Tune's training
    iteration (one per epoch; the final report is one more, hence ``max_t`` = epochs + 1, so
    that ASHA never stops a trial at its last epoch, before its evaluation)."""
    a = plan.spec.asha
    if a is None:
        return None
    return ASHAScheduler(time_attr="training_iteration", metric=a.metric, mode=a.mode,
                         max_t=_max_epochs(plan) + 1, grace_period=a.grace_period,
                         reduction_factor=a.reduction_factor)


def _trial_dirname(trial) -> str:
    """Tune's folder of a trial: its id (our run directory has the same name)."""
    return trial.trial_id


# ------------------------------------------------------------------------------ the trial
def _last_epoch(run_dir: pathlib.Path) -> dict:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines() \
        if (run_dir / "metrics.jsonl").exists() else []
    last = json.loads(lines[-1]) if lines else {}
    return {k: v for k, v in last.items() if isinstance(v, (int, float, str, bool))}


def _train_and_evaluate(plan: SweepPlan, cfg: Any) -> tuple[pathlib.Path, dict]:
    """Train ``cfg`` through Ray Train with per-epoch reports to Tune, then evaluate it in this
    process; returns the run directory and the final metrics."""
    callbacks = [TuneReportCallback()]
    torch.set_num_threads(plan.threads)  # the evaluation's share of the CPUs
    if plan.spec.job == "train-reid":
        run = train_reid(cfg, callbacks)
        evaluation = json.loads((run / "eval.json").read_text())
        extra = None
        if plan.evaluation:
            extra = reid_density_evaluation(run, plan.evaluation["num_points"],
                                            plan.evaluation["densities"])
        return run, reid_final_metrics(evaluation, extra)
    run = train_casl(cfg, callbacks)
    metrics = evaluate_casl(run, options=EvalCaslOptions(**plan.evaluation), progress=False)
    summary = json.loads((run / "train_summary.json").read_text())
    return run, casl_final_metrics(metrics, summary)


def _stop_requested(session) -> bool:
    """Whether Tune asked this trial to stop (a scheduler's decision): its function session's
    stop event (Ray's internal session, which ``TuneReportCallback`` also uses)."""
    event = getattr(session, "stop_event", None)
    return bool(event is not None and event.is_set())


def trial_main(params: dict, plan: SweepPlan) -> None:
    """One Tune trial: train and evaluate the trial's config, report the final metrics.

    Writes the trial's run directory ``<sweep_dir>/trials/<trial id>`` (the trainer's run
    directory plus ``trial.json``: status, searched values, settings, final metrics, wall time,
    or the error line) and appends to its event log ``<sweep_dir>/events/<trial id>.jsonl``
    (gathered into ``events.jsonl`` by the driver). With the sweep in a store (a URI), what the
    trial writes is pushed there as it is written."""
    trial_id = tune.get_context().get_trial_id()
    session = get_session()  # kept: Tune ends the session when it stops the trial
    run_dir = plan.trial_dir(trial_id)
    params = {k: params[k] for k in plan.spec.keys if k in params}
    t0 = time.time()
    try:
        cfg = trial_config(plan, trial_id, params)
        trial_location = storage.join(plan.stored_at, "trials", trial_id)
        storage.pull(trial_location)
        done = finished_trial(run_dir, cfg)
        if done is not None:  # finished before an interruption that Tune did not see
            _event(plan, trial_id, "reused")
            tune.report(done["report"])
            return
        if run_dir.exists():  # an interrupted attempt: start over
            shutil.rmtree(run_dir)
            storage.remove(trial_location, stage=False)
        _event(plan, trial_id, "start", params=params)
        run, final = _train_and_evaluate(plan, cfg)
    except Exception as exc:
        stopped = _stop_requested(session)  # ASHA stopped it: its trainer went down with it
        line = None if stopped else one_line(exc)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_trial(run_dir, {"trial_id": trial_id, "status": "stopped" if stopped else "failed",
                              "params": params, "error": line, "wall_s": time.time() - t0})
        storage.push(storage.join(plan.stored_at, "trials", trial_id), TRIAL_FILE)
        _event(plan, trial_id, "stopped" if stopped else "failed", error=line)
        if stopped:
            return
        raise
    report = {**_last_epoch(run), **final}
    write_trial(run, {"trial_id": trial_id, "status": "finished", "params": params,
                      "settings": trial_settings(cfg), "final": final, "report": report,
                      "wall_s": time.time() - t0, "error": None})
    storage.push(storage.join(plan.stored_at, "trials", trial_id))
    _event(plan, trial_id, "finished")
    tune.report(report)


def _event(plan: SweepPlan, trial_id: str, event: str, **extra: Any) -> None:
    """A line of the trial's event log, pushed to the sweep's storage location."""
    storage.push(plan.stored_at, log_event(plan.sweep_dir, trial_id, event, **extra))


# ------------------------------------------------------------------------------ the driver's callbacks
def _params_text(plan: SweepPlan, config: dict) -> str:
    return ", ".join(f"{k}={short_value(config.get(k))}" for k in plan.spec.keys)


class _Progress(tune.Callback):
    """One console line per trial start and end."""

    def __init__(self, plan: SweepPlan) -> None:
        self.plan = plan
        self.started = 0

    def _line(self, text: str) -> None:
        print(f"sweep {self.plan.name}: {text}", flush=True)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.started += 1
        self._line(f"trial {trial.trial_id} started ({_params_text(self.plan, trial.config)}) "
                   f"[{self.started}/{self.plan.total_trials}]")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        rec = read_trial(self.plan.trial_dir(trial.trial_id)) or {}
        metric = self.plan.spec.metric
        if rec.get("status") == "finished":
            v = (rec.get("final") or {}).get(metric)
            shown = "n/a" if v is None else short_value(float(v))
            self._line(f"trial {trial.trial_id} finished in {rec.get('wall_s', 0) / 60:.1f} min: "
                       f"{metric} {shown}")
        else:
            self._line(f"trial {trial.trial_id} stopped early (ASHA)")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        rec = read_trial(self.plan.trial_dir(trial.trial_id)) or {}
        self._line(f"trial {trial.trial_id} failed: {rec.get('error') or 'see its error.txt'}")


class _InterruptAfter(tune.Callback):
    """Fault injection for tests: with ``MIRROR3D_SWEEP_INTERRUPT_AFTER=N`` in the driver's
    environment, the driver raises :class:`SweepInterrupted` at the end of its step once N trials
    finished in this run, as a crash between trials would stop it (Tune turns an error raised
    inside ``on_trial_complete`` into that trial's failure, hence the next step). The variable
    is read at every completion, so a restored experiment's copy of this callback stays quiet
    when it is gone."""

    def __init__(self) -> None:
        self.done = 0
        self.limit = 0

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.done += 1
        self.limit = int(os.environ.get(INTERRUPT_ENV, "0") or 0)

    def on_step_end(self, iteration, trials, **info) -> None:
        if self.limit and self.done >= self.limit:
            raise SweepInterrupted(f"interrupted after {self.done} finished trial(s) "
                                   f"({INTERRUPT_ENV}={self.limit}); run the same command to "
                                   f"resume")


@contextlib.contextmanager
def _tune_env(plan: SweepPlan) -> Iterator[None]:
    """Tune's switches while the sweep runs (restored afterwards): Tune checks that every
    report holds the searcher's metric, and an Optuna searcher's is the final metric, which the
    per-epoch reports lack (:class:`FinalMetricOptuna`), so the check is off for Optuna; and
    Tune's own console output gives way to :class:`_Progress`'s lines (its legacy reporter at
    verbosity 0 prints nothing; failed trials are one line each; ``--debug`` keeps it all)."""
    env = {}
    if plan.spec.algorithm == "optuna":
        env["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    quiet = not verbose()
    if quiet:  # trial errors: one line each (_Progress, trial.json), tracebacks in error.txt
        env.update(RAY_AIR_NEW_OUTPUT="0", TUNE_PRINT_ALL_TRIAL_ERRORS="0")
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    loggers = {"ray.tune.tune": logging.CRITICAL,  # "Trials did not complete: [...]"
               # "Failed to fetch metrics" of trials that never reported (crashed at once)
               "ray.tune.analysis.experiment_analysis": logging.ERROR,
               "optuna": logging.WARNING}  # "A new study created in memory"
    levels = {name: logging.getLogger(name).level for name in loggers}
    if quiet:
        for name, level in loggers.items():
            logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ------------------------------------------------------------------------------ the driver
def _prepare_dir(plan: SweepPlan) -> bool:
    """Check and write the sweep directory; True when an interrupted experiment is restored.

    Raises:
        ConfigError: the directory holds a sweep with other settings, or ``resume never``.
    """
    sweep_dir = plan.sweep_dir
    storage.pull(plan.stored_at)  # a sweep in a store: its settings, trials and Tune state
    exp = sweep_dir / EXPERIMENT
    exists = tune.Tuner.can_restore(_experiment(plan))
    settings = sweep_dir / "settings.json"
    if exists:
        if plan.cfg.resume == "never":
            raise ConfigError(f"resume: sweep {sweep_dir} exists (resume never); pick another "
                              f"--name or --resume auto to continue it")
        diff = check_settings(settings, plan.settings())
        if diff:
            raise ConfigError(f"resume: sweep {sweep_dir} was started with other settings "
                              f"({'; '.join(diff[:3])}{'; ...' if len(diff) > 3 else ''}); "
                              f"pick another --name or run it with its settings")
    elif exp.exists() or storage.exists(storage.join(plan.stored_at, EXPERIMENT)):
        storage.remove(storage.join(plan.stored_at, EXPERIMENT))  # never got going
    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_settings(settings, plan.settings())
    save_config(plan.cfg, sweep_dir / "config.yaml")
    save_config(plan.base, sweep_dir / "base.yaml")
    atomic_write(sweep_dir / "spec.yaml", yaml.safe_dump(plan.spec.data, sort_keys=False))
    storage.push(plan.stored_at)
    return exists


def _experiment(plan: SweepPlan) -> str:
    """Where Tune keeps the sweep's experiment: ``<sweep>/tune`` in the sweep's storage (Tune
    syncs it there itself, also to a URI)."""
    if storage.is_uri(plan.stored_at):
        return storage.join(plan.stored_at, EXPERIMENT)
    return str(plan.sweep_dir / EXPERIMENT)


def _outcomes(plan: SweepPlan) -> list[TrialOutcome]:
    """Every trial of the sweep's Tune experiment (its state as the last run left it)."""
    out = []
    for trial in tune.ExperimentAnalysis(_experiment(plan)).trials:
        error = trial.get_error() if trial.status == "ERROR" else None
        out.append(TrialOutcome(
            trial_id=trial.trial_id, status=trial.status,
            params={k: trial.config[k] for k in plan.spec.keys if k in trial.config},
            last=dict(trial.last_result or {}), error=None if error is None else str(error)))
    return out


def run_sweep(plan: SweepPlan) -> SweepOutputs:
    """Run (or resume) the sweep of ``plan`` on Ray Tune and write its outputs.

    Raises:
        FileNotFoundError: the trials' input data is missing (before Ray starts).
        ConfigError: the sweep directory holds another sweep (see :func:`_prepare_dir`).
        SweepInterrupted: Ctrl-C (after writing the outputs so far), or the fault injection
            of :data:`INTERRUPT_ENV`.
    """
    check_inputs(plan)
    check_output(plan.stored_at, "out_dir")  # not a file, not under one, writable
    restoring = _prepare_dir(plan)
    ensure_ray()
    trainable = tune.with_resources(
        tune.with_parameters(trial_main, plan=plan),
        # the trial reserves nothing itself (its workers hold its CPUs/GPUs); Tune wants a
        # non-empty bundle for the trial's actor, hence a token one byte of memory
        tune.PlacementGroupFactory([{"memory": 1}]))
    exp = _experiment(plan)
    with _tune_env(plan):
        if restoring:
            print(f"sweep {plan.name}: resuming {exp}", flush=True)
            tuner = tune.Tuner.restore(exp, trainable=trainable, resume_unfinished=True,
                                       resume_errored=False, restart_errored=False)
        else:
            tuner = tune.Tuner(
                trainable, param_space=param_space(plan),
                tune_config=tune.TuneConfig(
                    search_alg=search_algorithm(plan), scheduler=scheduler(plan),
                    num_samples=plan.num_samples,
                    max_concurrent_trials=(plan.cfg.max_concurrent_trials
                                           if plan.spec.algorithm == "optuna" else None),
                    trial_dirname_creator=_trial_dirname,
                    # one trial process for successive trials: a new one costs ~6 s here
                    # (process start, imports; benchmarks/bench_tune.py: +133 % -> +3 % on 5 s trials)
                    reuse_actors=True),
                run_config=tune.RunConfig(
                    name=EXPERIMENT,
                    storage_path=(plan.stored_at if storage.is_uri(plan.stored_at)
                                  else str(plan.sweep_dir)),
                    verbose=2 if verbose() else 0,
                    failure_config=tune.FailureConfig(max_failures=plan.cfg.max_failures),
                    callbacks=[_Progress(plan), _InterruptAfter()]))
        try:
            tuner.fit()
        finally:  # also when the driver stops: the trials' event logs gathered
            storage.pull(plan.stored_at)  # what trials on other nodes wrote
            gather_events(plan.sweep_dir)
            storage.push(plan.stored_at, "events.jsonl")
        outputs = write_outputs(plan, _outcomes(plan))
        storage.push(plan.stored_at)
    unfinished = sum(1 for r in outputs.rows if r["status"] == "unfinished")
    if unfinished:  # Tune stops gracefully on Ctrl-C, with its state saved
        raise SweepInterrupted(f"sweep interrupted with {unfinished} unfinished trial(s); "
                               f"run the same command to resume (summary so far: "
                               f"{outputs.summary})")
    return outputs
