"""The outputs of a sweep (no Ray here): the trials table, the best trial's config, the paper's
directions checked against the trials, the curves and ``summary.md``
(:mod:`mirror3d.engine.sweep` describes the spec; :mod:`mirror3d.platform.tune` runs it).

In ``<out_dir>/<name>/`` (docs/sweeps.md):

- ``trials.parquet``: one row per trial, failed and early-stopped ones too: ``trial_id``,
  ``status`` (finished | stopped: ASHA stopped it early | failed | unfinished), ``error`` (the
  failure in one line), one column per searched key (dotted name), the final metrics (all of
  the job's; empty where a trial has none), the ASHA metric's last value, ``epochs`` (epochs
  trained), ``wall_s``, ``run_dir`` and ``checkpoint`` (its ``model_final.pt``, else its newest
  checkpoint);
- ``best.yaml``: the full job config of the best finished trial (by the spec's metric), with the
  preset's run directory and Ray section, so that ``python -m mirror3d <job> --config
  best.yaml`` trains it again;
- curves (PNG): the metric against each searched key (``metric_vs_<key>.png``: against k for
  the OG-Net k sweep), the metric against the test point density, one line per trial
  (``metric_vs_test_density.png``, when trials report densities), and for CASL held-out
  MaskIoU against training steps, one line per trial (``mask_iou_vs_steps.png``: the
  learning-curve points of ``optim.eval_every``, else the training MaskIoU of each epoch);
- ``summary.md``: the table, the best trial, the paper's directions and whether each holds in
  these trials (computed from the table: the mean of each side's finished trials), the curves.
"""

from __future__ import annotations

import json
import math
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib
import pyarrow as pa
import pyarrow.parquet as pq

from mirror3d.engine.sweep import (Claim, Side, SweepPlan, final_metric_names, metric_display,
                                   read_trial, short_value)
from mirror3d.utils.checkpoint import latest_checkpoint
from mirror3d.utils.config import format_value, load_config, save_config, update_config
from mirror3d.utils.files import atomic_path, atomic_write

matplotlib.use("Agg", force=False)  # files only, never a window
import matplotlib.pyplot as plt

__all__ = ["TrialOutcome", "trial_row", "trial_rows", "write_trials_table", "best_row",
           "best_config", "check_claims", "plot_curves", "summary_markdown", "write_outputs",
           "SweepOutputs", "STATUSES"]

#: A trial's status in the table.
STATUSES = ("finished", "stopped", "failed", "unfinished")


@dataclass
class TrialOutcome:
    """What Tune knows of one trial.

    Attributes:
        trial_id: Tune's trial id (also its run directory's name).
        status: Tune's status (TERMINATED, ERROR, PENDING, RUNNING, PAUSED).
        params: the trial's searched values.
        last: the last result it reported.
        error: Tune's error text, if it failed.
    """

    trial_id: str
    status: str
    params: dict
    last: dict = field(default_factory=dict)
    error: str | None = None


def _first_line(text: str | None) -> str | None:
    if not text:
        return None
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[-1][:300] if lines else None


def _count_lines(path: pathlib.Path) -> int:
    try:
        return sum(1 for line in path.read_text().splitlines() if line.strip())
    except OSError:
        return 0


def trial_row(plan: SweepPlan, outcome: TrialOutcome, metrics: Sequence[str]) -> dict:
    """One row of the trials table (see the module docstring); ``metrics``: the final metric
    columns."""
    run = plan.trial_dir(outcome.trial_id)
    rec = read_trial(run) or {}
    if rec.get("status") == "finished":
        status = "finished"
    elif outcome.status == "ERROR":
        status = "failed"
    elif outcome.status == "TERMINATED":  # ended without an error, unfinished: stopped early
        status = "stopped"
    else:  # pending or cut off by an interruption: a resume runs it
        status = "unfinished"
    params = {**(rec.get("params") or {}), **outcome.params}
    row: dict[str, Any] = {"trial_id": outcome.trial_id, "status": status,
                           "error": rec.get("error") or (_first_line(outcome.error)
                                                         if status == "failed" else None)}
    for key in plan.spec.keys:
        row[key] = params.get(key)
    final = (rec.get("final") or {}) if status == "finished" else {}
    for m in metrics:
        v = final.get(m)
        row[m] = float(v) if v is not None else None
    if plan.spec.asha is not None:
        v = outcome.last.get(plan.spec.asha.metric)
        row[f"last_{plan.spec.asha.metric}"] = float(v) if isinstance(v, (int, float)) else None
    row["epochs"] = _count_lines(run / "metrics.jsonl")
    wall = rec.get("wall_s", outcome.last.get("time_total_s"))
    row["wall_s"] = float(wall) if wall is not None else None
    row["run_dir"] = str(run)
    ckpt = run / "model_final.pt"
    if not ckpt.exists():
        ckpt = latest_checkpoint(run) if run.is_dir() else None
    row["checkpoint"] = str(ckpt) if ckpt else None
    return row


def trial_rows(plan: SweepPlan, outcomes: Sequence[TrialOutcome]) -> list[dict]:
    """The table's rows, in trial order."""
    metrics = final_metric_names(plan)
    return [trial_row(plan, o, metrics) for o in sorted(outcomes, key=lambda o: o.trial_id)]


def write_trials_table(rows: Sequence[dict], path: str | pathlib.Path) -> pathlib.Path:
    """``rows`` as a parquet file (one column per key), written atomically."""
    path = pathlib.Path(path)
    table = pa.Table.from_pylist(list(rows))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def best_row(rows: Sequence[dict], metric: str, mode: str) -> dict | None:
    """The finished trial with the best ``metric`` (None when no finished trial has it)."""
    scored = [r for r in rows if r["status"] == "finished" and r.get(metric) is not None]
    if not scored:
        return None
    return (max if mode == "max" else min)(scored, key=lambda r: r[metric])


def best_config(plan: SweepPlan, row: dict) -> Any:
    """The job config the best trial trained with, with the preset's out_dir, name, resume,
    ray and tracking (not the sweep's per-trial ones)."""
    cfg = load_config(plan.job.config, pathlib.Path(row["run_dir"]) / "config.yaml")
    preset = plan.preset
    updates: dict[str, Any] = {"out_dir": preset.out_dir, "name": preset.name,
                               "resume": preset.resume, "ray": preset.ray}
    if hasattr(preset, "tracking"):
        updates["tracking"] = preset.tracking
    return update_config(cfg, updates)


# ------------------------------------------------------------------------------ claims
def _matches(row: dict, side: Side) -> bool:
    return all(row.get(k) is not None and format_value(row[k]) == format_value(v)
               for k, v in side.where)


def _side_value(rows: Sequence[dict], side: Side) -> tuple[float | None, int]:
    vals = [r[side.metric] for r in rows
            if r["status"] == "finished" and _matches(r, side) and r.get(side.metric) is not None]
    return (sum(vals) / len(vals), len(vals)) if vals else (None, 0)


def check_claims(plan: SweepPlan, rows: Sequence[dict]) -> list[dict]:
    """Each claim of the spec with its two sides' values here (the mean over the finished
    trials of each side) and whether it holds (None: a side has no finished trial)."""
    out = []
    for c in plan.spec.claims:
        a, na = _side_value(rows, c.a)
        b, nb = _side_value(rows, c.b)
        holds = None
        if a is not None and b is not None:
            holds = abs(a - b) <= c.tolerance if c.kind == "close" else (
                a > b if c.mode == "max" else a < b)
        out.append({"claim": c, "a": a, "b": b, "n_a": na, "n_b": nb, "holds": holds})
    return out


# ------------------------------------------------------------------------------ formatting
def _fmt(plan: SweepPlan, metric: str, v: float | None, unit: bool = True) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    scale, u = metric_display(plan.job, metric)
    x = v * scale
    digits = 2 if abs(x) >= 1 or x == 0 else 4
    return f"{x:.{digits}f}" + (f" {u}" if unit and u else "")


def _label(plan: SweepPlan, row: dict) -> str:
    parts = []
    for key in plan.spec.keys:
        v = row.get(key)
        text = f"{key} = {short_value(v)}"
        ref = plan.evaluation.get("num_points")
        if key == "data.num_points" and ref and isinstance(v, (int, float)):
            text += f" ({100.0 * v / ref:.0f} %)"
        parts.append(text)
    return ", ".join(parts)


def _metric_title(plan: SweepPlan, metric: str) -> str:
    _, unit = metric_display(plan.job, metric)
    return f"{metric} ({unit})" if unit else metric


def _claim_metric_text(c: Claim) -> str:
    return c.a.metric if c.a.metric == c.b.metric else f"{c.a.metric} vs {c.b.metric}"


# ------------------------------------------------------------------------------ curves
def _numeric(values: list) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _save(fig, path: pathlib.Path) -> pathlib.Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path


def _plot_vs_key(plan: SweepPlan, rows: list[dict], key: str, out: pathlib.Path) -> pathlib.Path | None:
    metric = plan.spec.metric
    pts = [(r[key], r[metric]) for r in rows if r["status"] == "finished"
           and r.get(metric) is not None and r.get(key) is not None]
    if not pts:
        return None
    scale, _ = metric_display(plan.job, metric)
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [x for x, _ in pts]
    if _numeric(xs):
        groups: dict = {}
        for x, y in pts:
            groups.setdefault(x, []).append(y * scale)
        gx = sorted(groups)
        ax.plot(gx, [sum(groups[x]) / len(groups[x]) for x in gx], "-", color="C0", label="mean")
        ax.plot(xs, [y * scale for _, y in pts], "o", color="C0", alpha=0.7, label="trials")
        if min(gx) > 0 and max(gx) / min(gx) >= 16:
            ax.set_xscale("log", base=2)
        if len(gx) <= 12:
            ax.set_xticks(gx, [format_value(x) for x in gx])
    else:
        dim = next(d for d in plan.spec.space if d.key == key)
        order = [format_value(v) for v in dim.values] or sorted({format_value(x) for x in xs})
        pos = {v: i for i, v in enumerate(order)}
        ax.plot([pos.get(format_value(x), 0) for x in xs], [y * scale for _, y in pts], "o",
                color="C0", alpha=0.8)
        ax.set_xticks(range(len(order)), order, rotation=15)
    ax.set_xlabel(key)
    ax.set_ylabel(_metric_title(plan, metric))
    ax.set_title(f"sweep {plan.name}: {metric} vs {key}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, out / f"metric_vs_{key}.png")


def _density_columns(rows: list[dict], score: str) -> list[tuple[float, str]]:
    cols = {c for r in rows for c in r if c.startswith("densities/") and c.endswith("/" + score)}
    return sorted((float(c.split("/")[1]), c) for c in cols)


def _plot_density(plan: SweepPlan, rows: list[dict], out: pathlib.Path) -> pathlib.Path | None:
    base = plan.spec.metric.rsplit("/", 1)[-1]
    scores = [base] + [s for s in ("rank1",) if s != base]
    panels = [(s, _density_columns(rows, s)) for s in scores]
    panels = [(s, cols) for s, cols in panels if cols]
    done = [r for r in rows if r["status"] == "finished"]
    if not panels or not done:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (score, cols) in zip(axes[0], panels):
        scale, _ = metric_display(plan.job, score)
        for i, r in enumerate(done):
            pts = [(100 * d, r[c] * scale) for d, c in cols if r.get(c) is not None]
            if pts:
                ax.plot(*zip(*pts), "o-", color=f"C{i % 10}", label="trained at " + _label(plan, r))
        ax.set_xlabel("test points (% of each test cloud's evaluation points)"
                      if not plan.evaluation.get("num_points") else
                      f"test points (% of {plan.evaluation['num_points']} per cloud)")
        ax.set_ylabel(_metric_title(plan, score))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"sweep {plan.name}: test point density, one line per trial")
    fig.tight_layout()
    return _save(fig, out / "metric_vs_test_density.png")


def _steps_curve(run: pathlib.Path) -> tuple[list, list, str] | None:
    curve = run / "curve.jsonl"
    if curve.exists():
        pts = [json.loads(x) for x in curve.read_text().splitlines() if x.strip()]
        pts = [(p["step"], p["mask_iou"]) for p in pts if p.get("mask_iou") is not None]
        if pts:
            return [x for x, _ in pts], [y for _, y in pts], "held-out MaskIoU (%)"
    lines = run / "metrics.jsonl"
    if lines.exists():
        steps, xs, ys = 0, [], []
        for x in lines.read_text().splitlines():
            if not x.strip():
                continue
            m = json.loads(x)
            steps += int(m.get("steps", 0))
            if m.get("train_mask_iou") is not None:
                xs.append(steps)
                ys.append(100.0 * m["train_mask_iou"])
        if xs:
            return xs, ys, "training MaskIoU (%)"
    return None


def _plot_steps(plan: SweepPlan, rows: list[dict], out: pathlib.Path) -> pathlib.Path | None:
    curves = []
    for r in rows:
        if r["status"] in ("finished", "stopped"):
            c = _steps_curve(pathlib.Path(r["run_dir"]))
            if c:
                curves.append((r, c))
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (r, (xs, ys, _)) in enumerate(curves):
        style = "-" if r["status"] == "finished" else "--"
        ax.plot(xs, ys, style, marker=".", color=f"C{i % 10}",
                label=_label(plan, r) + (" (stopped)" if r["status"] == "stopped" else ""))
    ylabels = {c[2] for _, c in curves}
    ax.set_xlabel("training steps")
    ax.set_ylabel(" / ".join(sorted(ylabels)))
    ax.set_title(f"sweep {plan.name}: MaskIoU vs steps, one line per trial")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out / "mask_iou_vs_steps.png")


def plot_curves(plan: SweepPlan, rows: Sequence[dict], out_dir: str | pathlib.Path) -> list[pathlib.Path]:
    """Write the sweep's curves into ``out_dir`` (see the module docstring); returns the files."""
    out = pathlib.Path(out_dir)
    rows = list(rows)
    made = [_plot_vs_key(plan, rows, key, out) for key in plan.spec.keys]
    made.append(_plot_density(plan, rows, out))
    if plan.spec.job == "train-casl":
        made.append(_plot_steps(plan, rows, out))
    return [p for p in made if p is not None]


# ------------------------------------------------------------------------------ summary.md
def _table_metrics(plan: SweepPlan, rows: Sequence[dict]) -> list[str]:
    base = plan.spec.metric.rsplit("/", 1)[-1]
    want = [plan.spec.metric] + [c for _, c in _density_columns(list(rows), base)]
    for c in plan.spec.claims:
        want += [c.a.metric, c.b.metric]
    want += list(plan.job.headline)
    out = []
    for m in want:
        if m not in out and any(r.get(m) is not None for r in rows):
            out.append(m)
    return out or [plan.spec.metric]


def _sort_key(plan: SweepPlan, r: dict):
    v = r.get(plan.spec.metric)
    rank = STATUSES.index(r["status"])
    if v is None:
        return (rank, 0.0, r["trial_id"])
    return (rank, -v if plan.spec.mode == "max" else v, r["trial_id"])


def summary_markdown(plan: SweepPlan, rows: Sequence[dict], best: dict | None,
                     claims: Sequence[dict], pictures: Sequence[pathlib.Path]) -> str:
    """``summary.md``: what was swept, the table, the best trial, the paper's directions and
    whether they hold here, the curves and the failures."""
    spec = plan.spec
    counts = {s: sum(1 for r in rows if r["status"] == s) for s in STATUSES}
    space = "; ".join(f"{d.key} ({d.describe()})" for d in spec.space)
    budget = (f"{plan.trial_minutes:g} min of training per trial" if plan.trial_minutes
              else "the preset's epochs per trial")
    lines = [f"# Sweep `{plan.name}`", ""]
    if spec.description:
        lines += [spec.description, ""]
    lines += [
        f"- spec: `{spec.name}` ({spec.variant}); job `{spec.job}` from its `{spec.preset}` "
        f"preset; {budget}",
        f"- search: {spec.algorithm} over {space}; {len(rows)} trials"
        + (f" (Optuna TPE, budget {plan.num_samples})" if spec.algorithm == "optuna" else ""),
        f"- ranked by `{spec.metric}` ({spec.mode})"
        + (f"; ASHA stops trials early on `{spec.asha.metric}` ({spec.asha.mode}, grace "
           f"{spec.asha.grace_period} epoch(s), reduction factor {spec.asha.reduction_factor:g})"
           if spec.asha else ""),
        "- trials: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n),
        f"- resources: {plan.cfg.cpus_per_trial:g} CPU"
        + (f" and {plan.cfg.gpus_per_trial} GPU" if plan.cfg.gpus_per_trial else "")
        + f" per trial, up to {plan.cfg.max_concurrent_trials} at once",
        "",
        "## Trials",
        "",
    ]
    metrics = _table_metrics(plan, rows)
    head = ["trial", *spec.keys, "status", *[_metric_title(plan, m) for m in metrics],
            "epochs", "minutes"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(rows, key=lambda r: _sort_key(plan, r)):
        cells = [f"`{r['trial_id']}`", *[short_value(r.get(k)) for k in spec.keys], r["status"],
                 *[_fmt(plan, m, r.get(m), unit=False) for m in metrics], str(r["epochs"]),
                 "–" if r["wall_s"] is None else f"{r['wall_s'] / 60:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Best trial", ""]
    if best is None:
        lines.append(f"No finished trial has `{spec.metric}`.")
    else:
        lines += [f"`{best['trial_id']}` ({_label(plan, best)}): {spec.metric} "
                  f"{_fmt(plan, spec.metric, best[spec.metric])}. Its full config is "
                  f"`best.yaml`; train it again with",
                  "", "```", f"python -m mirror3d {spec.job} --config "
                  f"{plan.sweep_dir / 'best.yaml'}", "```"]
    if claims:
        lines += ["", "## The paper's direction", ""]
        if spec.source:
            lines += [spec.source, ""]
        lines += ["| claim | paper | here (a vs b) | holds here |", "|---|---|---|---|"]
        for res in claims:
            c: Claim = res["claim"]
            here = (f"{_fmt(plan, c.a.metric, res['a'])} vs {_fmt(plan, c.b.metric, res['b'])} "
                    f"({_claim_metric_text(c)}; {res['n_a']} vs {res['n_b']} trials)")
            if c.kind == "close":
                here += f"; |a − b| ≤ {_fmt(plan, c.a.metric, c.tolerance)}?"
            holds = {True: "yes", False: "no", None: "n/a (a side has no finished trial)"}[
                res["holds"]]
            lines.append(f"| {c.text} (a: {c.a.describe()}; b: {c.b.describe()}) | "
                         f"{c.paper or '–'} | {here} | {holds} |")
        lines += ["", "A side's value is the mean over its finished trials; a `better` claim "
                      "holds when a beats b, a `close` one when they differ by at most the "
                      "tolerance."]
    if pictures:
        lines += ["", "## Curves", ""]
        lines += [f"![{p.stem}]({p.name})" for p in pictures]
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        lines += ["", "## Failed trials", ""]
        lines += [f"- `{r['trial_id']}` ({_label(plan, r)}): {r['error'] or 'unknown error'}"
                  for r in failed]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ all of it
@dataclass
class SweepOutputs:
    """What :func:`write_outputs` wrote and found."""

    rows: list[dict]
    best: dict | None
    claims: list[dict]
    pictures: list[pathlib.Path]
    summary: pathlib.Path
    table: pathlib.Path
    best_yaml: pathlib.Path | None


def write_outputs(plan: SweepPlan, outcomes: Sequence[TrialOutcome]) -> SweepOutputs:
    """Write ``trials.parquet``, ``best.yaml`` (when a trial finished), the curves and
    ``summary.md`` into the sweep directory."""
    out = plan.sweep_dir
    rows = trial_rows(plan, outcomes)
    table = write_trials_table(rows, out / "trials.parquet")
    best = best_row(rows, plan.spec.metric, plan.spec.mode)
    best_yaml = None
    if best is not None:
        with atomic_path(out / "best.yaml") as tmp:
            save_config(best_config(plan, best), tmp)
        best_yaml = out / "best.yaml"
    claims = check_claims(plan, rows)
    pictures = plot_curves(plan, rows, out)
    summary = atomic_write(out / "summary.md", summary_markdown(plan, rows, best, claims, pictures))
    return SweepOutputs(rows, best, claims, pictures, summary, table, best_yaml)
