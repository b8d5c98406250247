"""Experiment tracking in MLflow for the trainers' plain runs (train-reid, train-casl): the
``tracking.*`` config section and the rank-0 tracker the loops call.

What a run logs (rank 0 only; every other rank gets a tracker that does nothing):

- at the start: the config as parameters (dotted keys, e.g. ``optim.lr``; values as override
  text) and as the artifact ``config.yaml``; tags ``mirror3d.job`` and ``mirror3d.run_dir``;
- once per epoch: the loop's metrics line (what ``metrics.jsonl`` holds) with ``step = epoch``;
- at the end: the final metrics (``eval.json`` / ``train_summary.json``) and the run's pictures
  and result files as artifacts; status ``FINISHED``, or ``FAILED`` (``KILLED`` on Ctrl-C) when
  the loop raises, with the error's first line as the tag ``mirror3d.error``.

Where (``tracking.uri``): empty means ``$MLFLOW_TRACKING_URI`` when set, else the local file
store ``runs/mlflow`` (MLflow's file store, ``file://`` + an absolute path); ``http(s)://`` is a
tracking server (a cluster's), ``sqlite:///path.db`` a local database. A driver resolves the URI
with :func:`resolve_tracking` before it ships the config to Ray workers, which run in other
directories (a worker given an unresolved ``""`` uses the ``runs`` folder its run directory is
in: :func:`tracking_uri`). Browse: ``mlflow ui --backend-store-uri runs/mlflow`` (MLflow 3.17 keeps the file
store only with ``MLFLOW_ALLOW_FILE_STORE=true`` in the environment; this module sets it in its
own process when it writes to a file store).

Tracking never stops training: a store that cannot be reached or written turns tracking off for
the run with one warning line, and training goes on. Before the first request a tracking server
is probed once (5 s), so a dead server costs one line, not MLflow's minutes of HTTP retries.
A resumed run (``resume`` into the same run directory) continues its MLflow run, whose id the
run directory keeps in ``mlflow_run.json``.

    with track_run(cfg.tracking, "train-reid", run_dir, flatten_config(cfg),
                   enabled=rank == 0) as tracker:
        for epoch in ...:
            tracker.log_metrics(metrics, step=epoch)
        tracker.log_metrics(evaluation, step=last_epoch)
        tracker.log_artifacts([run_dir / "ranked.png"])
"""

from __future__ import annotations

import contextlib
import json
import logging
import numbers
import os
import pathlib
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlparse

from mirror3d.engine.runtime import world
from mirror3d.utils.config import dump_yaml, flatten_config, format_value, update_config
from mirror3d.utils.files import atomic_write

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_STORE", "RUN_FILE", "TrackingConfig", "RunTracker", "tracking_uri",
           "resolve_tracking", "start_tracking", "track_run"]

#: The default store: a local MLflow file store under the working directory.
DEFAULT_STORE = "runs/mlflow"
#: Where a run directory records its MLflow run (to continue it on resume).
RUN_FILE = "mlflow_run.json"

_MAX_PARAM_CHARS = 6000  # MLflow's limit on a parameter value
_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")  # what MLflow accepts in metric names
_PROBE_SECONDS = 5.0


@dataclass
class TrackingConfig:
    """MLflow experiment tracking of a training run (rank 0)."""

    mlflow: bool = field(default=True, metadata={
        "help": "log the config, per-epoch metrics, final metrics and pictures to MLflow"})
    uri: str = field(default="", metadata={
        "help": "tracking URI: a store directory, sqlite:///file.db or http(s)://server "
                "('' = $MLFLOW_TRACKING_URI, else the file store runs/mlflow)"})
    experiment: str = field(default="", metadata={
        "help": "MLflow experiment ('' = the job name, e.g. train-reid)"})
    run_name: str = field(default="", metadata={
        "help": "MLflow run name ('' = the run directory's name)"})


# ------------------------------------------------------------------------------ where
def tracking_uri(uri: str = "", run_dir: str | os.PathLike | None = None) -> str:
    """The absolute tracking URI for ``tracking.uri``.

    ``""`` → ``$MLFLOW_TRACKING_URI`` if set, else :data:`DEFAULT_STORE`: ``runs/mlflow`` of
    the working directory, or, given the ``run_dir`` of a run whose URI no driver resolved (a
    Ray worker runs in a directory of Ray's), ``mlflow`` in the ``runs`` folder that holds the
    run directory, when there is one (``runs/<job>/<name>``: the same store). A plain path or a
    ``file:`` URI becomes ``file://<absolute path>`` (relative to the working directory), a
    relative ``sqlite:///path.db`` becomes absolute; other URIs (``http(s)://``, ``databricks``)
    are returned as given."""
    uri = uri.strip() or os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if not uri:
        uri = DEFAULT_STORE
        runs = [p for p in pathlib.Path(run_dir or ".").resolve().parents if p.name == "runs"]
        if run_dir is not None and runs:
            uri = str(runs[0] / "mlflow")
    scheme = urlparse(uri).scheme
    if scheme == "" or (len(scheme) == 1 and uri[1:2] == ":"):  # a path (or a Windows drive)
        return pathlib.Path(uri).expanduser().resolve().as_uri()
    if scheme == "file":
        path = uri[len("file:"):]
        if path.startswith("//"):
            path = path[2:]
            if path.startswith("localhost/"):
                path = path[len("localhost"):]
        return pathlib.Path(path).expanduser().resolve().as_uri()
    if scheme == "sqlite" and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(pathlib.Path(uri[len("sqlite:///"):]).expanduser().resolve())
    return uri


def resolve_tracking(cfg: Any) -> Any:
    """``cfg`` (a trainer config with a ``tracking`` section) with ``tracking.uri`` absolute:
    what a driver does before the config goes to Ray workers, which run in other directories."""
    if not cfg.tracking.mlflow:
        return cfg
    return update_config(cfg, {"tracking.uri": tracking_uri(cfg.tracking.uri)})


# ------------------------------------------------------------------------------ the tracker
def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:limit]}" if text else type(exc).__name__


def _metric_items(metrics: Mapping[str, Any], prefix: str = "",
                  skip: Iterable[str] = ()) -> Iterator[tuple[str, float]]:
    """(name, value) of the real-number entries of ``metrics`` (nested mappings as ``a/b``)."""
    skip = set(skip)
    for key, value in metrics.items():
        if key in skip:
            continue
        name = _BAD_KEY_CHARS.sub("_", f"{prefix}{key}")
        if isinstance(value, Mapping):
            yield from _metric_items(value, name + "/")
            continue
        if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # torch / numpy scalars
            value = value.item()
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            yield name, float(value)


class RunTracker:
    """The MLflow run of one training run; every method is a no-op once tracking is off.

    A call that fails turns tracking off for the rest of the run with one warning line: the
    training goes on without it."""

    def __init__(self, client: Any = None, run_id: str = "", uri: str = "") -> None:
        self._client, self.run_id, self.uri = client, run_id, uri

    @property
    def active(self) -> bool:
        """Whether the run is still being logged."""
        return self._client is not None

    def _call(self, fn) -> None:
        if self._client is None:
            return
        try:
            fn(self._client)
        except Exception as exc:
            log.warning("MLflow tracking stopped for this run (%s): %s", self.uri, _one_line(exc))
            self._client = None

    def log_metrics(self, metrics: Mapping[str, Any], step: int, prefix: str = "") -> None:
        """The real-number entries of ``metrics`` at ``step`` (``epoch`` itself is the step)."""
        if self._client is None:
            return
        from mlflow.entities import Metric  # heavy import (~2 s): only when tracking is on

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, int(step)) for k, v in _metric_items(metrics, prefix, ("epoch",))]
        if items:
            self._call(lambda c: c.log_batch(self.run_id, metrics=items))

    def log_artifacts(self, paths: Iterable[str | os.PathLike], folder: str | None = None) -> None:
        """Files (or directories) that exist, as artifacts under ``folder``."""
        for p in map(pathlib.Path, paths):
            if p.is_dir():
                self._call(lambda c, p=p: c.log_artifacts(self.run_id, str(p), folder or p.name))
            elif p.is_file():
                self._call(lambda c, p=p: c.log_artifact(self.run_id, str(p), folder))

    def end(self, status: str = "FINISHED", error: BaseException | None = None) -> None:
        """Close the run with ``status`` (FINISHED, FAILED or KILLED)."""
        if error is not None:
            self._call(lambda c: c.set_tag(self.run_id, "mirror3d.error", _one_line(error, 500)))
        self._call(lambda c: c.set_terminated(self.run_id, status))
        self._client = None


def _probe(uri: str) -> None:
    """Raise ConnectionError when a tracking server does not answer (http(s) URIs only)."""
    if urlparse(uri).scheme not in ("http", "https"):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=_PROBE_SECONDS).close()
    except urllib.error.HTTPError:
        return  # it answered
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConnectionError(f"no tracking server answers at {uri} ({reason})") from None


def _client(uri: str):
    if uri.startswith("file:"):
        # MLflow 3.x keeps its file store in maintenance mode, behind this opt-in
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient  # heavy import (~2 s): only when tracking is on

    return MlflowClient(tracking_uri=uri)


def _experiment_id(client: Any, name: str, uri: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = None
        if uri.startswith("sqlite:///"):  # else MLflow puts artifacts in ./mlruns of the cwd
            location = (pathlib.Path(uri[len("sqlite:///"):]).parent / "artifacts").as_uri()
        try:
            return client.create_experiment(name, artifact_location=location)
        except Exception:
            exp = client.get_experiment_by_name(name)  # created meanwhile by another run
            if exp is None:
                raise
    if exp.lifecycle_stage != "active":
        raise ValueError(f"experiment {name!r} is deleted in the store; restore it or set "
                         f"tracking.experiment")
    return exp.experiment_id


def _continued_run(client: Any, run_dir: pathlib.Path, uri: str) -> str | None:
    """The MLflow run id recorded in ``run_dir`` for this store, if that run still exists."""
    try:
        rec = json.loads((run_dir / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None
    if rec.get("tracking_uri") != uri or not rec.get("run_id"):
        return None
    try:
        client.get_run(rec["run_id"])
    except Exception:
        return None
    return rec["run_id"]


def start_tracking(settings: TrackingConfig, job: str, run_dir: str | os.PathLike,
                   params: Mapping[str, Any], resume: bool = False,
                   config_text: str | None = None) -> RunTracker:
    """Start (or, with ``resume``, continue) the MLflow run of a training run.

    Args:
        settings: the config's ``tracking`` section.
        job: the job name, the default experiment (``train-reid``).
        run_dir: the run directory (its name is the default run name; it records the run id).
        params: the flattened config (:func:`mirror3d.utils.config.flatten_config`).
        resume: continue the run recorded in ``run_dir`` when there is one for this store.
        config_text: logged as the artifact ``config.yaml``.

    Returns:
        The tracker; inactive when ``settings.mlflow`` is off or the store failed (one warning).
    """
    if not settings.mlflow:
        return RunTracker()
    run_dir = pathlib.Path(run_dir)
    uri = tracking_uri(settings.uri, run_dir)
    try:
        _probe(uri)
        from mlflow.entities import Param  # heavy import, as in _client

        client = _client(uri)
        run_id = _continued_run(client, run_dir, uri) if resume else None
        if run_id is not None:
            client.update_run(run_id, status="RUNNING")
        else:
            exp_id = _experiment_id(client, settings.experiment or job, uri)
            run = client.create_run(exp_id, run_name=settings.run_name or run_dir.name,
                                    tags={"mirror3d.job": job, "mirror3d.run_dir": str(run_dir)})
            run_id = run.info.run_id
            client.log_batch(run_id, params=[Param(k, format_value(v)[:_MAX_PARAM_CHARS])
                                             for k, v in params.items()])
            if config_text is not None:
                client.log_text(run_id, config_text, "config.yaml")
        atomic_write(run_dir / RUN_FILE, json.dumps({"tracking_uri": uri, "run_id": run_id}))
    except Exception as exc:
        log.warning("MLflow tracking off for this run (%s): %s", uri, _one_line(exc))
        return RunTracker()
    return RunTracker(client, run_id, uri)


@contextlib.contextmanager
def track_run(settings: TrackingConfig, job: str, run_dir: str | os.PathLike,
              params: Mapping[str, Any], resume: bool = False, enabled: bool = True,
              config_text: str | None = None) -> Iterator[RunTracker]:
    """:func:`start_tracking` around a block (``enabled=False``: a tracker that does nothing,
    for ranks other than 0); the run ends FINISHED, or FAILED / KILLED when the block raises
    (the exception goes on unchanged)."""
    tracker = (start_tracking(settings, job, run_dir, params, resume, config_text)
               if enabled else RunTracker())
    try:
        yield tracker
    except KeyboardInterrupt as exc:
        tracker.end("KILLED", exc)
        raise
    except BaseException as exc:
        tracker.end("FAILED", exc)
        raise
    tracker.end("FINISHED")


T = TypeVar("T")


def run_tracked(job: str, cfg: Any, run_dir: str | os.PathLike, resume: str,
                body: Callable[[pathlib.Path, int, int, RunTracker], T]) -> T:
    """A training loop's ``body(run_dir, rank, world_size, tracker)`` inside its MLflow run
    (:func:`track_run` of ``cfg.tracking``, the flattened config as parameters and its YAML as
    an artifact; rank 0 tracks, the other ranks get a tracker that does nothing). Rank 0 makes
    ``run_dir`` first. Returns what ``body`` returns."""
    run_dir = pathlib.Path(run_dir)
    rank, world_size = world()
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
    with track_run(cfg.tracking, job, run_dir, flatten_config(cfg), resume=bool(resume),
                   enabled=rank == 0, config_text=dump_yaml(cfg)) as tracker:
        return body(run_dir, rank, world_size, tracker)
