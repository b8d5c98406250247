"""The lifting job's driver, without Ray: plan, resume, lift the missing shards, summarise.

Flow::

    re-id reader (records: path, pid, camid, split)  [+ mask lookup in a mask tree]
      → shard plan (:mod:`mirror3d.lifting.plan`): ``<split>-<k:05d>``, deterministic
      → the missing shards, lifted by ``lift_shards(cfg, jobs)``: in this process by default
        (one :class:`~mirror3d.lifting.lifter.ShardLifter`, one shard after another), or by the
        Ray Data actor pool of :func:`mirror3d.platform.lifting.run_lift`
      → summary (all shards, also those done by earlier runs) in ``<out>/_meta/summary.json``
        and, with a run directory, ``runs/lift/<name>/``: ``summary.json``, ``bad_images.txt``
        (``path<TAB>reason``, :mod:`mirror3d.data.decode`), ``config.yaml`` and ``pictures/``
        (input + three views as PNG, and PLY, of the first ``preview`` samples).

Resuming: a shard is done when its meta file exists and its parquet exists (or the meta says it
holds no row). Re-running lifts only the missing shards; since every random draw is seeded by
the image path (relative to the dataset root) and ``seed``, the result is identical. The out dir
keeps the settings it was lifted with (``_meta/lift_settings.json``, compared with
:func:`mirror3d.utils.fingerprint.check_settings`): the content settings (shard size included)
and the identity of the dataset and mask files (``dataset`` / ``masks``: file list, sizes and
times, :func:`mirror3d.utils.fingerprint.files_digest`); a re-run with different settings or
another dataset is refused unless ``overwrite``. Settings only block when a shard was finished
with them: a start that failed before its first shard removes them again (and an out dir without
a finished shard takes the new settings), so the corrected re-run is never refused.

Counts: the job ends with one line of counts (:func:`counts_text`: images read, samples written,
skipped by reason) and writes the skipped images with their reasons to ``skipped.tsv`` in the run
directory and in ``<out>/_meta/``; no sample at all, or fewer than ``min_usable_fraction`` of the
images read, fails the job (:class:`~mirror3d.utils.errors.DataError`, before the run
directory is made). A requested split without any image fails before any work. A run name that
exists is refused unless ``overwrite`` (:mod:`mirror3d.utils.rundir`). The out dir may be a storage URI (``s3://...``; :mod:`mirror3d.utils.storage`):
the shards are then written to this node's stage of it and pushed shard by shard (by the actor
that lifted it), and the driver pulls the store before planning. docs/architecture.md describes the layering (this module is core; only
:mod:`mirror3d.platform.lifting` imports Ray).
"""

from __future__ import annotations

import json
import logging
import pathlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mirror3d.data.decode import BAD_LIST_NAME, write_bad_list
from mirror3d.lifting.config import LiftConfig, content_settings
from mirror3d.lifting.lifter import META_DIR, ShardLifter, load_sample_image
from mirror3d.lifting.modes import MODES_NEEDING_MASK
from mirror3d.lifting.plan import ShardJob, plan_shards
from mirror3d.lifting.reconstructors import check_reconstructor
from mirror3d.lifting.shards import read_shards
from mirror3d.lifting.viz import export_ply, save_lift_picture
from mirror3d.utils import storage
from mirror3d.utils.errors import DataError
from mirror3d.utils.files import atomic_write
from mirror3d.utils.fingerprint import check_settings, files_digest, write_settings
from mirror3d.utils.rundir import (
    SKIPPED_FILE,
    RunExistsError,
    check_usable,
    counts_line,
    existing_run_message,
    final_path,
    run_directory,
    run_exists,
    write_skipped,
)

log = logging.getLogger(__name__)

__all__ = ["SETTINGS_FILE", "SUMMARY_FILE", "LiftReport", "lift_dataset", "lift_in_process",
           "prepare_out", "lift_settings", "shard_done", "finished_shards", "summarize",
           "log_problems", "save_pictures", "skipped_items", "skip_counts", "counts_text"]

SETTINGS_FILE = "lift_settings.json"
SUMMARY_FILE = "summary.json"

#: ``lift_shards(cfg, jobs)``: lifts the given shards (writing their parquet and meta files).
ShardRunner = Callable[[LiftConfig, Sequence[ShardJob]], object]


@dataclass
class LiftReport:
    """What a lifting run did."""

    out_dir: pathlib.Path
    run_dir: pathlib.Path | None
    summary: dict
    lifted_shards: list[str]
    skipped_shards: list[str]


def _write_json(path: pathlib.Path, obj: object) -> None:
    atomic_write(path, json.dumps(obj, indent=1, sort_keys=True))


def lift_settings(cfg: LiftConfig, jobs: Sequence[ShardJob] | None = None) -> dict:
    """What ``<out>/_meta/lift_settings.json`` records: the content settings of ``cfg``
    (:func:`~mirror3d.lifting.config.content_settings`) and, given the plan, the identity of
    its image files (``dataset``) and mask files (``masks``, with ``mask_dir``)."""
    settings = content_settings(cfg)
    if jobs is not None:
        settings["dataset"] = files_digest([p for j in jobs for p in j.paths], cfg.root)
        if cfg.mask_dir:
            settings["masks"] = files_digest([m for j in jobs for m in j.masks], cfg.mask_dir)
    return settings


def finished_shards(out: pathlib.Path) -> list[str]:
    """The shards of ``out`` an earlier run finished (their meta files; the settings and
    summary files are not shards)."""
    meta = out / META_DIR
    return sorted(f.stem for f in meta.glob("*.json")
                  if f.name not in (SETTINGS_FILE, SUMMARY_FILE) and not f.name.startswith("."))


def prepare_out(cfg: LiftConfig, jobs: Sequence[ShardJob] | None = None) -> pathlib.Path:
    """The out dir, with its settings recorded (:func:`lift_settings`); an out dir holding
    shards finished with other settings (or another dataset) is refused (ValueError naming the
    keys), or emptied with ``overwrite``. Settings no finished shard was lifted with (a start
    that failed) do not block: the out dir is emptied and takes the new ones."""
    location = cfg.out_location()
    storage.pull(location)  # a store's shards: what is done already (resume)
    out = cfg.out_dir()
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {out} is a file, not a shard directory")
    meta = out / META_DIR
    settings = lift_settings(cfg, jobs)
    path = meta / SETTINGS_FILE
    diff = check_settings(path, settings)
    done = finished_shards(out) if diff else []
    if diff and done and not cfg.overwrite:
        raise ValueError(f"out: {storage.describe(location)} holds {len(done)} shard(s) lifted "
                         f"with other settings ({'; '.join(diff)}); use another out dir or "
                         f"--overwrite")
    if diff:
        if done:
            log.warning("lift: overwriting %s (settings changed: %s)", out, "; ".join(diff))
        if storage.is_uri(location):
            storage.remove(location)
        for f in list(out.glob("*.parquet")) + list(meta.glob("*.json")) + list(meta.glob("*.tsv")):
            f.unlink()
    write_settings(path, settings)
    storage.push(location, META_DIR)
    return out


def _undo_failed_start(cfg: LiftConfig, out: pathlib.Path, out_existed: bool) -> None:
    """After a failure before any shard was finished: remove the settings file (and the out
    dir when this run made it and it is empty), so nothing blocks the corrected re-run."""
    if finished_shards(out):
        return
    settings = out / META_DIR / SETTINGS_FILE
    settings.unlink(missing_ok=True)
    location = cfg.out_location()
    if storage.is_uri(location):
        storage.remove(storage.join(location, META_DIR, SETTINGS_FILE), stage=False)
    for folder in ((out / META_DIR, out) if not out_existed else (out / META_DIR,)):
        try:
            folder.rmdir()  # only when empty
        except OSError:
            pass


def shard_done(out: pathlib.Path, name: str) -> bool:
    """True when shard ``name`` was lifted by an earlier run (meta file, and parquet if rows)."""
    meta = out / META_DIR / f"{name}.json"
    if not meta.exists():
        return False
    try:
        rows = json.loads(meta.read_text())["rows"]
    except (ValueError, KeyError):
        return False
    return rows == 0 or (out / f"{name}.parquet").exists()


def summarize(out: pathlib.Path, jobs: Sequence[ShardJob]) -> dict:
    """Totals, per-split counts and the problem lists over the meta files of ``jobs``."""
    metas = [json.loads((out / META_DIR / f"{j.name}.json").read_text()) for j in jobs]
    total = {k: sum(m[k] for m in metas) for k in ("images", "rows", "points_sum")}
    lists = {k: [x for m in metas for x in m[k]]
             for k in ("bad", "no_mask", "rejected", "padded", "estimated")}
    per_split: dict[str, dict] = {}
    for m in metas:
        s = per_split.setdefault(m["split"], {"images": 0, "rows": 0, "shards": 0})
        s["images"] += m["images"]
        s["rows"] += m["rows"]
        s["shards"] += 1
    rows = [m for m in metas if m["rows"]]
    return {
        "shards": len(metas), "images": total["images"], "rows": total["rows"],
        "counts": {k: len(v) for k, v in lists.items()}, **lists, "splits": per_split,
        "points_min": min((m["points_min"] for m in rows), default=0),
        "points_max": max((m["points_max"] for m in rows), default=0),
        "points_mean": total["points_sum"] / total["rows"] if total["rows"] else 0.0,
    }


#: summary key -> reason text of the skipped images (padded and estimated ones are kept)
_SKIP_REASONS = {"bad": "unreadable", "no_mask": "no mask", "rejected": "too few points"}


def skipped_items(summary: dict) -> list[tuple[str, str]]:
    """``(image path, reason)`` of every image of ``summary`` that gave no sample."""
    rows = []
    for key, reason in _SKIP_REASONS.items():
        for item in summary.get(key, []):
            if isinstance(item, (list, tuple)):
                rows.append((str(item[0]), f"{reason}: {item[1]}" if len(item) > 1 else reason))
            else:
                rows.append((str(item), reason))
    return rows


def skip_counts(summary: dict) -> dict[str, int]:
    """Skipped images by reason (:data:`_SKIP_REASONS`)."""
    return {reason: len(summary.get(key, [])) for key, reason in _SKIP_REASONS.items()}


def counts_text(summary: dict) -> str:
    """The lifting job's line of counts: images read, samples written, skipped by reason."""
    return counts_line("lift", summary["images"], summary["rows"], skip_counts(summary))


def log_problems(summary: dict) -> None:
    """One warning line per kind of problem image, with the first few paths."""
    what = {"bad": "unreadable image(s)", "no_mask": "image(s) without a mask (skipped)",
            "rejected": "cloud(s) with too few points (rejected)",
            "padded": "cloud(s) padded by repetition to min_points",
            "estimated": "mask(s) estimated by GrabCut (no mask file)"}
    for key, text in what.items():
        items = summary[key]
        if items:
            first = [x[0] if isinstance(x, list) else x for x in items[:3]]
            log.warning("lift: %d %s, e.g. %s", len(items), text, ", ".join(first))


def save_pictures(cfg: LiftConfig, out: pathlib.Path, jobs: Sequence[ShardJob],
                  dest: pathlib.Path) -> None:
    """The first ``cfg.preview`` lifted samples as PNG (input + three views) and PLY."""
    left = cfg.preview
    for job in jobs:
        if left <= 0:
            break
        shard = out / f"{job.name}.parquet"
        if not shard.exists():
            continue
        samples = read_shards(shard)
        for i in range(min(left, len(samples))):
            path = str(samples.path[i])
            stem = f"{job.name}_{i:03d}_{pathlib.Path(path).stem}"
            try:
                image, _ = load_sample_image(path, "", cfg)
            except (ValueError, FileNotFoundError, OSError):
                image = None
            save_lift_picture(samples.points[i], image, dest / f"{stem}.png",
                              title=f"{cfg.mode}: {pathlib.Path(path).name}, "
                                    f"{len(samples.points[i])} points")
            export_ply(samples.points[i], dest / f"{stem}.ply")
            left -= 1


def lift_in_process(cfg: LiftConfig, jobs: Sequence[ShardJob]) -> list[dict]:
    """Lift ``jobs`` here, one after another (the caller's torch threads are left alone)."""
    lifter = ShardLifter(cfg, set_threads=False)
    return [lifter.lift_job(j) for j in jobs]


def lift_dataset(cfg: LiftConfig, lift_shards: ShardRunner | None = None,
                 run_dir: bool = True) -> LiftReport:
    """Lift ``cfg.root`` into shards under ``cfg.out_dir()`` (resuming), then write the summary,
    and the bad-image list and pictures into ``runs/lift/<name>`` (when ``run_dir``).

    Args:
        lift_shards: lifts the missing shards; default :func:`lift_in_process`.
    Raises:
        ValueError: a mode that needs masks without ``mask_dir``, an unusable reconstructor
            (``synth-truth``: also an image without ground truth, named), an out dir lifted with
            other settings, or a dataset with no image in one of ``splits``.
        RunExistsError: ``runs/lift/<name>`` exists and not ``overwrite`` (before any work).
        DataError: no sample, or fewer than ``min_usable_fraction`` of the images (after the
            lifting; the skipped list is in ``<out>/_meta/skipped.tsv``, no run dir is made).
    """
    if cfg.mode in MODES_NEEDING_MASK:
        if not cfg.mask_dir and cfg.missing_mask == "skip":
            raise ValueError(f"mask_dir: mode {cfg.mode!r} needs foreground masks; set mask_dir "
                             f"(e.g. the Market-HQ tree next to the Market-1501 one) or "
                             f"missing_mask=estimate")
    run_location = storage.join(cfg.runs_root, "lift", cfg.name) if cfg.name else ""
    if run_dir and run_location and not cfg.overwrite and run_exists(run_location):
        raise RunExistsError(existing_run_message(run_location, None))
    jobs, read_summary = plan_shards(cfg)
    if not jobs:
        raise ValueError(f"root: no image of splits {list(cfg.splits)} in {cfg.root}")
    empty = [s for s in cfg.splits if not any(j.split == s for j in jobs)]
    if empty:
        have = [s for s in cfg.splits if s not in empty]
        raise DataError(f"root: no image of split(s) {empty} in {cfg.root} ({read_summary}); "
                        f"lift only the others with --splits {','.join(have)}")
    if cfg.mode in MODES_NEEDING_MASK:  # fail fast, before any worker
        check_reconstructor(cfg.reconstructor, cfg.checkpoint, cfg.refine_steps, cfg.root,
                            [p for j in jobs for p in j.paths])
    out_existed = cfg.out_dir().exists()
    out = prepare_out(cfg, jobs)
    pending = [j for j in jobs if not shard_done(out, j.name)]
    skipped = [j.name for j in jobs if j not in pending]
    t0 = time.perf_counter()
    if pending:
        log.info("lift: %d of %d shards to lift (%d done before)", len(pending), len(jobs),
                 len(skipped))
        try:
            (lift_shards or lift_in_process)(cfg, pending)
        except BaseException:
            _undo_failed_start(cfg, out, out_existed)
            raise
    storage.push(cfg.out_location())  # shards lifted in this process (actors push their own)
    storage.pull(cfg.out_location())  # and those other nodes lifted
    seconds = time.perf_counter() - t0
    summary = summarize(out, jobs)
    summary.update({"mode": cfg.mode, "out": str(out), "lifted_shards": len(pending),
                    "skipped_shards": len(skipped), "seconds": round(seconds, 3),
                    "images_per_second": round(sum(len(j.paths) for j in pending) / seconds, 3)
                    if pending and seconds > 0 else None,
                    "read": str(read_summary)})
    summary["counts_line"] = counts_text(summary)
    log_problems(summary)
    _write_json(out / META_DIR / SUMMARY_FILE, summary)
    write_skipped(out / META_DIR, skipped_items(summary))
    storage.push(cfg.out_location(), META_DIR)
    check_usable("lift", summary["images"], summary["rows"], cfg.min_usable_fraction,
                 skip_counts(summary), where=str(out / META_DIR / SKIPPED_FILE))
    final = None
    if run_dir:
        with run_directory("lift", cfg.name or None, cfg.runs_root, config=cfg,
                           overwrite=cfg.overwrite) as tmp:
            _write_json(tmp / SUMMARY_FILE, summary)
            write_bad_list(tmp / BAD_LIST_NAME, [(p, reason) for p, reason in summary["bad"]])
            write_skipped(tmp, skipped_items(summary))
            if cfg.preview:
                save_pictures(cfg, out, jobs, tmp / "pictures")
            final = final_path(tmp)
    return LiftReport(out, final, summary, [j.name for j in pending], skipped)
