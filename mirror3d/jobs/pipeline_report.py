"""``report.md`` / ``report.json`` of the main job (:mod:`mirror3d.jobs.pipeline`).

Sections: stages and wall times, the CASL metrics (eval-casl's tables), lifting counts, the re-id
table (R1, R5, mAP per input mode and the 2D baseline, parameter counts, epochs reached in the
budget), and the pictures linked relative to the report (turntables, lifted clouds, ranked
lists). Everything in it is read from the stages' results; nothing is typed in by hand. Pure:
it reads result dicts and writes two files (no training, no Ray).

Inputs keyed ``oracle:<mode>`` were lifted with SynthPeople's true meshes and cameras (the
``synth-truth`` reconstructor): their rows are marked as an upper bound that needs ground truth,
not a method. :func:`table1_orderings` computes which orderings of the OG-Net paper's Table I
(3D visible part + 2D background ≥ 3D visible part ≥ 2D flat, in mAP; Zheng et al. 2021,
Table I) hold with CASL's meshes and with the true ones, and the mAP gap CASL leaves per mode.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

from mirror3d.engine.casl_eval import markdown_report
from mirror3d.utils.files import atomic_write

__all__ = ["ORACLE_PREFIX", "ORACLE_NOTE", "TABLE1_ORDER", "write_report", "reid_rows",
           "table1_orderings", "table1_lines"]

#: Report key prefix of the inputs lifted with SynthPeople's true meshes (``oracle:<mode>``).
ORACLE_PREFIX = "oracle:"
#: What an oracle row is, shown under every table that has one.
ORACLE_NOTE = ("oracle: true SynthPeople meshes and cameras — an upper bound that needs ground "
               "truth, not a method")
#: The OG-Net paper's Table I order of the inputs, best first (Zheng et al. 2021, Table I).
TABLE1_ORDER = ("casl-visible+bg", "casl-visible", "flat")
_MESHES = {"casl": "CASL meshes", "true": "true meshes (oracle)"}


def _rel(path: str | os.PathLike, base: pathlib.Path) -> str:
    return os.path.relpath(pathlib.Path(path), base).replace(os.sep, "/")


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100.0 * v:.1f}"


def _minutes(s: float) -> str:
    return f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


def _split_key(key: str) -> tuple[str, bool]:
    """``<mode>`` or ``oracle:<mode>`` → (mode, oracle)."""
    if key.startswith(ORACLE_PREFIX):
        return key[len(ORACLE_PREFIX):], True
    return key, False


def _label(key: str) -> str:
    """How the report's tables name an input: oracle inputs carry the mark †."""
    mode, oracle = _split_key(key)
    return f"{mode}, **true mesh (oracle)** †" if oracle else mode


def reid_rows(reids: dict, baseline: dict | None, model_name: str, baseline_name: str) -> list[dict]:
    """One row per trained re-id model: input, mode, mesh (``casl``, ``true`` or None), oracle,
    model, params, epochs, minutes, R1/R5/mAP (0–1). The methods first (the lifting modes, the
    2D baseline), then the oracle rows."""
    rows, oracles = [], []
    for key, r in reids.items():
        mode, oracle = _split_key(key)
        mesh = "true" if oracle else (None if mode == "flat" else "casl")
        (oracles if oracle else rows).append({"input": key, "mode": mode, "mesh": mesh,
                                              "oracle": oracle, "model": model_name, **_row(r)})
    if baseline:
        rows.append({"input": "image (2D baseline)", "mode": None, "mesh": None, "oracle": False,
                     "model": baseline_name, **_row(baseline)})
    return rows + oracles


def table1_orderings(rows: list[dict]) -> dict:
    """Which orderings of the OG-Net paper's Table I hold in ``rows`` (:func:`reid_rows`).

    For each mesh source with a row (``casl``: the lifting modes' rows; ``true``: the oracle
    rows), each consecutive pair of :data:`TABLE1_ORDER` (``flat`` is the same row for both: it
    has no mesh) is compared in mAP. ``gaps``: per mode with both rows, the true mesh's mAP
    minus CASL's in points, and CASL's share of the true mesh's gain over ``flat``
    ((CASL − flat) / (true − flat), None unless the true mesh gains over flat).

    Returns:
        ``{"order": [...], "meshes": {mesh: {"pairs": [{"better", "worse", "map_better",
        "map_worse", "points", "holds"}], "holds"}}, "gaps": {mode: {"casl", "true", "points",
        "casl_share_of_true_gain"}}}``; mAPs in 0–1, points in mAP percentage points; a pair
        with a missing row has ``points`` and ``holds`` None, and ``holds`` of the chain is None
        unless every pair is known.
    """
    by = {(r["mode"], r["mesh"]): r["map"] for r in rows if r.get("mode")}
    flat = by.get(("flat", None))
    out: dict[str, Any] = {"order": list(TABLE1_ORDER), "meshes": {}, "gaps": {}}
    for mesh in _MESHES:
        if not any(m == mesh for _, m in by):
            continue
        maps = {mode: by.get((mode, mesh)) for mode in TABLE1_ORDER if mode != "flat"}
        maps["flat"] = flat
        pairs = []
        for better, worse in zip(TABLE1_ORDER, TABLE1_ORDER[1:]):
            a, b = maps[better], maps[worse]
            known = a is not None and b is not None
            pairs.append({"better": better, "worse": worse, "map_better": a, "map_worse": b,
                          "points": 100.0 * (a - b) if known else None,
                          "holds": a >= b if known else None})
        held = [p["holds"] for p in pairs]
        out["meshes"][mesh] = {"pairs": pairs, "holds": None if None in held else all(held)}
    for mode in TABLE1_ORDER:
        c, t = by.get((mode, "casl")), by.get((mode, "true"))
        if c is None or t is None:
            continue
        share = (c - flat) / (t - flat) if flat is not None and t > flat else None
        out["gaps"][mode] = {"casl": c, "true": t, "points": 100.0 * (t - c),
                             "casl_share_of_true_gain": share}
    return out


def _pair_text(p: dict) -> str:
    if p["holds"] is None:
        missing = p["better"] if p["map_better"] is None else p["worse"]
        return f"{p['better']} ≥ {p['worse']}: n/a (no {missing} row)"
    sign = "≥" if p["holds"] else "<"
    return (f"{p['better']} {_pct(p['map_better'])} {sign} {p['worse']} {_pct(p['map_worse'])} "
            f"({p['points']:+.1f} points): {'holds' if p['holds'] else 'does not hold'}")


def table1_lines(t: dict) -> list[str]:
    """The report's paragraph on :func:`table1_orderings` (markdown lines)."""
    if not t["meshes"]:
        return []
    out = [f"OG-Net paper's Table I ordering ({' ≥ '.join(t['order'])} in mAP; Zheng et al. "
           f"2021, Table I), in this run:"]
    for mesh, m in t["meshes"].items():
        whole = {True: "the ordering holds", False: "the ordering does not hold",
                 None: "the ordering cannot be checked"}[m["holds"]]
        out.append(f"- with {_MESHES[mesh]}: " + "; ".join(_pair_text(p) for p in m["pairs"])
                   + f" — {whole}.")
    for mode, g in t["gaps"].items():
        share = g["casl_share_of_true_gain"]
        extra = (f"; CASL's gain over flat is {100 * share:.0f} % of the true mesh's"
                 if share is not None else "")
        out.append(f"- gap CASL leaves in {mode}: true mesh {_pct(g['true'])} − CASL "
                   f"{_pct(g['casl'])} = {g['points']:+.1f} mAP points{extra}.")
    return out


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


def _oracle_note(keys) -> list[str]:
    if not any(_split_key(k)[1] for k in keys):
        return []
    return [f"† {ORACLE_NOTE}. Lifted with the same masks and settings (and trained with the same "
            f"model and budget) as the CASL row of its mode; only the mesh and camera differ.", ""]


def _lift_section(lifts: dict, base: pathlib.Path) -> list[str]:
    out = ["## Lifting (2D → 3D, Ray Data)", "",
           "| mode | samples | points/sample (min / mean / max) | unreadable | no mask | "
           "estimated masks | padded | rejected | images/s |",
           "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for mode, r in lifts.items():
        s, c = r["summary"], r["summary"]["counts"]
        ips = s.get("images_per_second")
        out.append(f"| {_label(mode)} | {s['rows']} | {s['points_min']} / {s['points_mean']:.0f} / "
                   f"{s['points_max']} | {c['bad']} | {c['no_mask']} | {c['estimated']} | "
                   f"{c['padded']} | {c['rejected']} | {ips if ips is not None else 'reused'} |")
    out.append("")
    out += _oracle_note(lifts)
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
        out.append(f"| {_label(r['input'])} | {r['model']} | {r['params']:,} | {r['epochs']} | "
                   f"{acc} | {_pct(r['rank1'])} | {_pct(r['rank5'])} | {_pct(r['map'])} "
                   f"({_pct(r['map_mean_precision'])}) |")
    out.append("")
    out += _oracle_note(r["input"] for r in rows)
    t1 = table1_lines(table1_orderings(rows))
    if t1:
        out += t1 + [""]
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
    oracle = (f"; with true meshes, an oracle: {', '.join(cfg.oracle_modes)}"
              if cfg.oracle_modes else "")
    lines = [
        f"# mirror3d pipeline: {cfg.name}{f' ({cfg.title_note})' if cfg.title_note else ''}", "",
        f"SynthPeople → CASL → lifting ({', '.join(cfg.modes)}{oracle}) → {cfg.reid.model.name} "
        f"per input"
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
        "lift": {m: r["summary"] for m, r in lifts.items()}, "reid": rows,
        "oracle_note": ORACLE_NOTE, "table1": table1_orderings(rows)}
    atomic_write(run_dir / "report.json", json.dumps(data, indent=2, default=str))
    return md
