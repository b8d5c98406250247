"""The jobs: one module per command, each holding its config, its presets and ``run(cfg)``.

A job module defines::

    CONFIG: type                  # the job's config dataclass (mirror3d.utils.config)
    POSITIONAL: tuple[str, ...]   # config keys that the command line also takes as positional
                                  # arguments, in order (optional; e.g. ("run_dir",))
    def run(cfg) -> int | None    # does the job; prints a short result; returns an exit code

Presets are YAML files in the top-level ``configs/<job>/`` folder: ``default.yaml`` (the config's
defaults, written out), ``smoke.yaml`` (a tiny run, what ``--smoke`` means for every job) and
``paper.yaml`` where the paper's full-size settings differ from the CPU defaults. A preset may
name other jobs' presets for its sections with a top-level ``compose`` mapping
(``compose: {casl: train-casl}`` reads ``configs/train-casl/<same preset>.yaml`` into ``casl``),
which is how the pipeline composes its stages' presets instead of copying keys.

The table below is all the CLI needs to list the jobs: no job module is imported until it runs.
"""

from __future__ import annotations

import difflib
import importlib
import os
import pathlib
from types import ModuleType
from typing import Any

import yaml

from mirror3d.utils.config import ConfigError, load_config

__all__ = ["JOBS", "PRESETS_DIR", "job_module", "preset_path", "presets", "resolve_config"]

#: command name -> (job module, one-line help)
JOBS: dict[str, tuple[str, str]] = {
    "turntable": ("mirror3d.jobs.turntable", "render a turntable of the template sphere (GIF + PNG sheet)"),
    "synth": ("mirror3d.jobs.synth", "generate SynthPeople (clothed people: re-id trees + 3D ground truth)"),
    "train-casl": ("mirror3d.jobs.train_casl", "train CASL (single-image textured mesh reconstruction) on Ray Train"),
    "eval-casl": ("mirror3d.jobs.eval_casl", "evaluate a CASL run: MaskIoU, SSIM, FD, SynthPeople 3D truth, pictures"),
    "ablate-casl": ("mirror3d.jobs.ablate_casl", "CASL ablations (full / No IM / No Prototype Loop / No Encoder Loop), one budget"),
    "train-reid": ("mirror3d.jobs.train_reid", "train OG-Net (point clouds) or the 2D baseline on Ray Train, then evaluate"),
    "eval-reid": ("mirror3d.jobs.eval_reid", "evaluate a re-id run (CMC, mAP, ranked picture), also across datasets"),
    "lift": ("mirror3d.jobs.lift", "lift a re-id dataset to point-cloud shards on Ray Data (flat | casl-visible[+bg])"),
    "sweep": ("mirror3d.jobs.sweep", "a Ray Tune sweep of train-reid / train-casl over a spec in configs/sweeps/ (k, density, schedules, ...)"),
    "pipeline": ("mirror3d.jobs.pipeline", "the main job: SynthPeople -> CASL -> lifting -> OG-Net + 2D baseline -> report.md"),
    "serve": ("mirror3d.jobs.serve", "the demo on Ray Serve: Gradio page at /ui + REST API (reconstruct, search); newest runs by default"),
}

#: The presets folder: ``configs/`` at the top of the repository (``MIRROR3D_CONFIGS`` overrides).
PRESETS_DIR = pathlib.Path(
    os.environ.get("MIRROR3D_CONFIGS") or pathlib.Path(__file__).resolve().parents[2] / "configs")


def _unknown(name: str) -> ConfigError:
    close = difflib.get_close_matches(name, list(JOBS), n=3)
    hint = f"; did you mean: {', '.join(close)}?" if close else f"; jobs: {', '.join(sorted(JOBS))}"
    return ConfigError(f"unknown job {name!r}{hint}")


def job_module(name: str) -> ModuleType:
    """Import the module of job ``name``."""
    if name not in JOBS:
        raise _unknown(name)
    module = importlib.import_module(JOBS[name][0])
    for attr in ("CONFIG", "run"):
        if not hasattr(module, attr):
            raise ImportError(f"job module {JOBS[name][0]} does not define {attr}")
    return module


def presets(name: str) -> list[str]:
    """The preset names of job ``name`` (the YAML files in ``configs/<name>/``)."""
    return sorted(p.stem for p in (PRESETS_DIR / name).glob("*.yaml"))


def preset_path(name: str, preset: str) -> pathlib.Path:
    """``configs/<name>/<preset>.yaml``; ConfigError naming the presets there when missing."""
    if name not in JOBS:
        raise _unknown(name)
    p = PRESETS_DIR / name / f"{preset}.yaml"
    if not p.is_file():
        known = ", ".join(presets(name)) or f"none (no {PRESETS_DIR / name})"
        raise ConfigError(f"preset: job {name!r} has no preset {preset!r}; presets: {known}")
    return p


def resolve_config(name: str, preset: str = "default", config_file: str | None = None,
                   overrides: list[str] | None = None, cls: type | None = None) -> Any:
    """Job ``name``'s config: dataclass defaults < preset < ``config_file`` < dotted overrides."""
    cls = cls or job_module(name).CONFIG
    if preset == "default" and not (PRESETS_DIR / name / "default.yaml").is_file():
        return load_config(cls, config_file, overrides or [])  # no presets: the defaults
    path = preset_path(name, preset)
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of config keys")
    compose = data.pop("compose", None) or {}
    if not isinstance(compose, dict):
        raise ConfigError(f"config file {path}: compose: expected a mapping section -> job")
    sections = {}
    for section, job in compose.items():
        sub = PRESETS_DIR / str(job) / f"{preset}.yaml"
        sections[section] = sub if sub.is_file() else preset_path(str(job), "default")
    files: list = [data] + ([config_file] if config_file else [])
    return load_config(cls, files, overrides or [], sections=sections)
