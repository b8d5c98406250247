"""CASL ablations (Zheng et al. 2022, "3D Magic Mirror", Table 4): the variants, their configs,
reuse of finished variants, and the table (no Ray here; the runner that trains them is
:func:`mirror3d.platform.casl.run_ablation`).

Variants are config overrides of one base :class:`~mirror3d.engine.casl_train.CaslTrainConfig`:

    full              (the base config)
    no-im             net.use_im false
    no-prototype      prototype.enabled false
    no-encoder-loop   encoder_loop.schedule all

The table has MaskIoU, SSIM and the three Fréchet distances like the paper's table, plus
SynthPeople's 3D-truth columns (Chamfer-L2 against the initial template's, median azimuth
error, novel-view MaskIoU at +90°), the paper's own numbers and which of its directions hold.
"""

from __future__ import annotations

import json
import os
import pathlib
from dataclasses import dataclass, field

from mirror3d.engine.casl_train import CaslTrainConfig
from mirror3d.utils.config import config_to_dict, load_config, update_config

__all__ = ["VARIANTS", "PAPER_TABLE4", "AblationConfig", "variant_config", "finished_metrics",
           "ablation_row", "ablation_markdown"]

#: The paper's encoder loop (one encoder group per step), which every variant but
#: "no-encoder-loop" runs: the CPU default trains every group every step (docs/casl-on-cpu.md),
#: so the ablation sets the paper's loop explicitly.
PAPER_ENCODER_LOOP = "shape,texture,camera"

#: variant → overrides of the base config
VARIANTS: dict[str, dict] = {
    "full": {"encoder_loop.schedule": PAPER_ENCODER_LOOP},
    "no-im": {"net.use_im": False, "encoder_loop.schedule": PAPER_ENCODER_LOOP},
    "no-prototype": {"prototype.enabled": False, "encoder_loop.schedule": PAPER_ENCODER_LOOP},
    "no-encoder-loop": {"encoder_loop.schedule": "all"},
}

#: The CASL paper's Table 4 on Market-HQ (MaskIoU, SSIM, FID_recon, FID_novel, FID_90).
PAPER_TABLE4: dict[str, tuple[float, float, float, float, float]] = {
    "full": (81.1, 61.8, 29.9, 58.2, 109.0),
    "no-im": (71.5, 55.8, 49.1, 83.1, 123.8),
    "no-prototype": (77.7, 59.6, 38.1, 66.1, 116.0),
    "no-encoder-loop": (85.3, 70.6, 19.5, 65.4, 190.1),
}


@dataclass
class AblationConfig:
    """The ablation job."""

    name: str = field(default="default", metadata={"help": "run name under out_dir"})
    out_dir: str = field(default="runs/ablate_casl", metadata={"help": "job directory"})
    variants: tuple[str, ...] = field(default=tuple(VARIANTS), metadata={
        "choices": list(VARIANTS), "help": "variants to train"})
    minutes: float = field(default=8.0, metadata={
        "range": (0.0, None), "help": "training budget per variant (base.optim.max_minutes); "
                                      "0 = base.optim.epochs"})
    eval_images: int = field(default=0, metadata={
        "range": (0, None), "help": "eval-casl: held-out images (0 = all)"})
    eval_samples: int = field(default=2, metadata={
        "range": (0, 100), "help": "eval-casl: samples drawn (turntables, meshes)"})
    eval_chamfer_points: int = field(default=10000, metadata={
        "range": (1, None), "help": "eval-casl: surface points per mesh for the Chamfer distance"})
    base: CaslTrainConfig = field(default_factory=CaslTrainConfig)


def variant_config(cfg: AblationConfig, variant: str, run_root: str | os.PathLike) -> CaslTrainConfig:
    """The training config of one variant: the base + its overrides, the budget, and the run
    directory ``run_root/<variant>`` (never resumed)."""
    updates = dict(VARIANTS[variant])
    if cfg.minutes:
        updates["optim.max_minutes"] = cfg.minutes
    updates.update({"out_dir": str(run_root), "name": variant, "resume": ""})
    return update_config(cfg.base, updates)


def finished_metrics(run: pathlib.Path, vcfg: CaslTrainConfig) -> dict | None:
    """The eval metrics of a finished variant trained with exactly ``vcfg``, else None."""
    metrics, saved = run / "eval" / "metrics.json", run / "config.yaml"
    if not (metrics.exists() and saved.exists() and (run / "model_final.pt").exists()):
        return None
    try:
        old = load_config(CaslTrainConfig, saved, [])
    except Exception:  # an unreadable config: train again
        return None
    a, b = config_to_dict(old), config_to_dict(vcfg)
    a["data"]["root"] = b["data"]["root"] = ""  # the trainer stores the absolute root
    a.pop("tracking", None)  # where the run was logged (resolved by the driver) is not a setting
    b.pop("tracking", None)
    return json.loads(metrics.read_text()) if a == b else None


def ablation_row(variant: str, m: dict, summary: dict) -> dict:
    """One table row from a variant's eval metrics and its ``train_summary.json``."""
    fd = m["fd"]
    s = m.get("synthpeople") or {}
    c = s.get("chamfer_l2") or {}
    cam = s.get("camera") or {}
    init = c.get("template_init_mean")
    pred = c.get("prediction_mean")
    return {
        "variant": variant, "mask_iou": m["mask_iou_pct"], "ssim": m["ssim_pct"],
        "fd_metric": fd["metric"], "fd_recon": fd["recon"]["value"],
        "fd_novel": fd["novel"]["value"], "fd_90": fd["90"]["value"],
        "chamfer": pred, "chamfer_template_init": init,
        "chamfer_ratio": (pred / init) if pred is not None and init else None,
        "azimuth_median_deg": cam.get("azimuth_median_deg"),
        "novel_view_mask_iou": s.get("novel_view_mask_iou_pct"),
        "n_images": m["data"]["n_images"], "epochs": summary.get("epochs_run"),
        "steps": summary.get("steps"), "minutes": summary.get("minutes"),
    }


def _f(v, d: int = 1) -> str:
    return "n/a" if v is None else f"{v:.{d}f}"


def ablation_markdown(rows: list[dict], budget_text: str) -> str:
    """The table like the paper's Table 4 plus the 3D-truth columns, and the paper's numbers."""
    fd = rows[0]["fd_metric"] if rows else "FD"
    lines = [
        "# CASL ablation", "",
        f"Same data, same budget ({budget_text}) per variant; held-out split, eval-casl. "
        f"{fd} is a Fréchet distance of fixed random-CNN features, not FID (compare rows only).",
        "", f"| variant | MaskIoU (%) ↑ | SSIM (%) ↑ | {fd}_recon ↓ | {fd}_novel ↓ | {fd}_90 ↓ | "
            f"Chamfer-L2 ↓ (× template) | azimuth err. median (°) ↓ | MaskIoU +90° (%) ↑ | "
            f"epochs / steps |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = f" ({r['chamfer_ratio']:.2f}×)" if r["chamfer_ratio"] is not None else ""
        lines.append(
            f"| {r['variant']} | {_f(r['mask_iou'])} | {_f(r['ssim'])} | {_f(r['fd_recon'], 2)} | "
            f"{_f(r['fd_novel'], 2)} | {_f(r['fd_90'], 2)} | {_f(r['chamfer'], 4)}{ratio} | "
            f"{_f(r['azimuth_median_deg'])} | {_f(r['novel_view_mask_iou'])} | "
            f"{r['epochs']} / {r['steps']} |")
    lines += ["", "The CASL paper's Table 4 (Market-HQ, GPU, full schedule):", "",
              "| variant | MaskIoU | SSIM | FID_recon | FID_novel | FID_90 |",
              "|---|---:|---:|---:|---:|---:|"]
    for k, v in PAPER_TABLE4.items():
        lines.append(f"| {k} | " + " | ".join(f"{x:.1f}" for x in v) + " |")
    by = {r["variant"]: r for r in rows}
    checks = []
    full = by.get("full")
    if full:
        for v in ("no-im", "no-prototype"):
            if v in by:
                worse = by[v]["mask_iou"] < full["mask_iou"]
                checks.append(f"- {v} worse than full on MaskIoU ({_f(by[v]['mask_iou'])} vs "
                              f"{_f(full['mask_iou'])}): {'holds' if worse else 'does not hold'}")
        if "no-encoder-loop" in by:
            r = by["no-encoder-loop"]
            front = r["mask_iou"] > full["mask_iou"]
            side = None
            if r["novel_view_mask_iou"] is not None and full["novel_view_mask_iou"] is not None:
                side = r["novel_view_mask_iou"] < full["novel_view_mask_iou"]
            checks.append(f"- no-encoder-loop better front view (MaskIoU {_f(r['mask_iou'])} vs "
                          f"{_f(full['mask_iou'])}): {'holds' if front else 'does not hold'}")
            if side is not None:
                checks.append(f"- no-encoder-loop worse at +90° (MaskIoU +90° "
                              f"{_f(r['novel_view_mask_iou'])} vs {_f(full['novel_view_mask_iou'])}"
                              f"): {'holds' if side else 'does not hold'}")
            if r["fd_90"] is not None and full["fd_90"] is not None:
                worse90 = r["fd_90"] > full["fd_90"]
                checks.append(f"- no-encoder-loop worse {fd}_90 ({_f(r['fd_90'], 2)} vs "
                              f"{_f(full['fd_90'], 2)}): {'holds' if worse90 else 'does not hold'}")
    if checks:
        lines += ["", "The paper's directions in this run:", ""] + checks
    return "\n".join(lines) + "\n"
