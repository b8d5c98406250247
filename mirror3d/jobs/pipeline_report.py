"""``report.md`` / ``report.json`` of the main job (:mod:`mirror3d.jobs.pipeline`).

Sections: stages and wall times, the CASL metrics (eval-casl's tables), lifting counts, the re-id
table (R1, R5, mAP per input mode and the 2D baseline, parameter counts, epochs reached in the
budget), and the pictures linked relative to the report (turntables, lifted clouds, ranked
lists). Everything in it is read from the stages' results; nothing is typed in by hand. Pure:
it reads result dicts and writes two files (no training, no Ray).
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

from mirror3d.engine.casl_eval import markdown_report
from mirror3d.utils.files import atomic_write

__all__ = ["write_report", "reid_rows"]


def _rel(path: str | os.PathLike, base: pathlib.Path) -> str:
    return os.path.relpath(pathlib.Path(path), base).replace(os.sep, "/")


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100.0 * v:.1f}"


def _minutes(s: float) -> str:
    return f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


def reid_rows(reids: dict, baseline: dict | None, model_name: str, baseline_name: str) -> list[dict]:
    """One row per trained re-id model: input, model, params, epochs, minutes, R1/R5/mAP (0–1)."""
    rows = []
    for mode, r in reids.items():
        rows.append({"input": mode, "model": model_name, **_row(r)})
    if baseline:
        rows.append({"input": "image (2D baseline)", "model": baseline_name, **_row(baseline)})
    return rows


def _row(r: dict) -> dict:
    ev = r["eval"]
    return {"params": r["params"], "epochs": r["epochs"], "train_minutes": r["train_minutes"],
            "train_acc": r.get("train_acc"), "rank1": ev["rank1"], "rank5": ev["rank5"],
            "map": ev["map_trapezoid"], "map_mean_precision": ev["map_mean_precision"],
            "num_queries": ev["num_queries"], "num_gallery": ev["num_gallery"],
            "run_dir": r["run_dir"], "ranked": r["ranked"]}


def _casl_section(eval_casl: dict, casl: dict, base: pathlib.Path) -> list[str]:
    m = eval_casl["metrics"]
    s = casl["summary"]
    # eval-casl's own document without its title and picture list (linked below instead)
    body = markdown_report(m).split("\n", 1)[1].replace("\n## ", "\n### ")
    body = body.split("\n### Pictures", 1)[0]
    out = ["## CASL reconstruction", "",
           f"Trained {s['epochs_run']} epochs / {s['steps']} steps in {s['minutes']:.1f} min "
           f"({casl['params']:,} parameters, template updates: {s['template_updates']}); "
           f"run: [{_rel(casl['run_dir'], base)}]({_rel(casl['run_dir'], base)}).", body.strip(), ""]
    eval_dir = pathlib.Path(eval_casl["eval_dir"])
    pics = m.get("pictures") or []
    gifs = [p for p in pics if p.startswith("turntables/") and p.endswith(".gif")]
    show = [p for p in ("reconstructions.png", "texture_swap.png", "histograms.png",
                        "template_evolution.gif") if p in pics]
    if gifs:
        out.append(f"![turntable]({_rel(eval_dir / gifs[0], base)})")
    for p in show:
        out.append(f"- [{p}]({_rel(eval_dir / p, base)})")
    if gifs:
        out.append("- turntables: " + ", ".join(f"[{pathlib.Path(g).stem}]"
                                                f"({_rel(eval_dir / g, base)})" for g in gifs))
    out.append("")
    return out


def _lift_section(lifts: dict, base: pathlib.Path) -> list[str]:
    out = ["## Lifting (2D → 3D, Ray Data)", "",
           "| mode | samples | points/sample (min / mean / max) | unreadable | no mask | "
           "estimated masks | padded | rejected | images/s |",
           "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for mode, r in lifts.items():
        s, c = r["summary"], r["summary"]["counts"]
        ips = s.get("images_per_second")
        out.append(f"| {mode} | {s['rows']} | {s['points_min']} / {s['points_mean']:.0f} / "
                   f"{s['points_max']} | {c['bad']} | {c['no_mask']} | {c['estimated']} | "
                   f"{c['padded']} | {c['rejected']} | {ips if ips is not None else 'reused'} |")
    out.append("")
    for mode, r in lifts.items():
        if r["pictures"]:
            out.append(f"![{mode}]({_rel(r['pictures'][0], base)})")
    out.append("")
    return out


def _reid_section(rows: list[dict], base: pathlib.Path, budget: float) -> list[str]:
    if not rows:
        return []
    q, g = rows[0]["num_queries"], rows[0]["num_gallery"]
    budget_text = f"{budget:g} min each" if budget else "equal epochs"
    out = ["## Re-identification", "",
           f"SynthPeople Market-1501 protocol: {q} queries, {g} gallery images (distractors "
           f"and junk included); training budget {budget_text}. mAP: trapezoid (the OG-Net "
           f"reference's), mean precision in brackets.", "",
           "| input | model | parameters | epochs | train acc | R1 (%) | R5 (%) | mAP (%) |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        acc = "n/a" if r["train_acc"] is None else f"{100 * r['train_acc']:.0f} %"
        out.append(f"| {r['input']} | {r['model']} | {r['params']:,} | {r['epochs']} | {acc} | "
                   f"{_pct(r['rank1'])} | {_pct(r['rank5'])} | {_pct(r['map'])} "
                   f"({_pct(r['map_mean_precision'])}) |")
    out.append("")
    by = {r["input"]: r for r in rows}
    if "flat" in by and "casl-visible+bg" in by:
        d = 100 * (by["casl-visible+bg"]["map"] - by["flat"]["map"])
        word = "≥" if d >= 0 else "<"
        out.append(f"OG-Net paper's Table I direction (casl-visible+bg ≥ flat in mAP): "
                   f"{_pct(by['casl-visible+bg']['map'])} {word} {_pct(by['flat']['map'])} "
                   f"({d:+.1f} points): {'holds' if d >= 0 else 'does not hold'} in this run.")
        out.append("")
    for r in rows:
        if pathlib.Path(r["ranked"]).exists():
            out.append(f"- ranked lists, {r['input']}: [{_rel(r['ranked'], base)}]"
                       f"({_rel(r['ranked'], base)})")
    first = next((r for r in rows if pathlib.Path(r["ranked"]).exists()), None)
    if first:
        out += ["", f"![ranked lists]({_rel(first['ranked'], base)})"]
    out.append("")
    return out


def write_report(run_dir: pathlib.Path, cfg, records: dict, synth: dict, casl: dict,
                 eval_casl: dict, lifts: dict, reids: dict, baseline: dict | None,
                 total_seconds: float, machine: dict) -> pathlib.Path:
    """Write ``report.md`` and ``report.json`` into ``run_dir``; returns the markdown path."""
    counts = synth["counts"]
    rows = reid_rows(reids, baseline, cfg.reid.model.name, cfg.baseline)
    stage_seconds = sum(r.seconds for r in records.values())
    lines = [
        f"# mirror3d pipeline: {cfg.name}{f' ({cfg.title_note})' if cfg.title_note else ''}", "",
        f"SynthPeople → CASL → lifting ({', '.join(cfg.modes)}) → {cfg.reid.model.name} per mode"
        + (f" and the 2D baseline {cfg.baseline}" if cfg.baseline else "") + " → evaluation. "
        f"Python {machine['python']}, {machine['cpus']} CPUs ({machine['machine']}). "
        f"Config: [config.yaml](config.yaml).", "",
        f"Data: `{synth['root']}`: {counts['identities']} identities, {counts['market_images']} "
        f"Market-1501 images (train {counts['train']}, query {counts['query']}, gallery "
        f"{counts['gallery']}), {counts['hq_images']} Market-HQ image/mask pairs.", "",
        "## Stages", "",
        "| stage | wall time | this run |", "|---|---:|---|"]
    for r in records.values():
        lines.append(f"| {r.name} | {_minutes(r.seconds)} | {'reused' if r.reused else 'ran'} |")
    lines += [f"| **total** | **{_minutes(stage_seconds)}** | this invocation: "
              f"{_minutes(total_seconds)} |", ""]
    lines += _casl_section(eval_casl, casl, run_dir)
    lines += _lift_section(lifts, run_dir)
    lines += _reid_section(rows, run_dir, cfg.reid.optim.max_minutes)
    text = "\n".join(lines).rstrip() + "\n"
    md = atomic_write(run_dir / "report.md", text)
    data: dict[str, Any] = {
        "name": cfg.name, "title_note": cfg.title_note, "machine": machine,
        "stages": {k: {"seconds": r.seconds, "reused": r.reused} for k, r in records.items()},
        "total_stage_seconds": stage_seconds, "invocation_seconds": total_seconds,
        "synth": synth, "casl": {"summary": casl["summary"], "params": casl["params"],
                                 "run_dir": casl["run_dir"]},
        "casl_eval": {k: eval_casl["metrics"].get(k) for k in
                      ("mask_iou_pct", "ssim_pct", "fd", "synthpeople")},
        "lift": {m: r["summary"] for m, r in lifts.items()}, "reid": rows}
    atomic_write(run_dir / "report.json", json.dumps(data, indent=2, default=str))
    return md
