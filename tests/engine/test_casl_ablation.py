"""CASL ablations without Ray (mirror3d.engine.casl_ablation): variants as config overrides,
reuse of finished variants, the table."""

from __future__ import annotations

import json

import pytest

from mirror3d.engine.casl_ablation import (PAPER_TABLE4, VARIANTS, AblationConfig, ablation_markdown,
                                           ablation_row, finished_metrics, variant_config)
from mirror3d.utils.config import load_config, save_config, update_config


def test_variants_are_the_papers_switches(tmp_path):
    cfg = AblationConfig()
    got = {v: variant_config(cfg, v, tmp_path) for v in VARIANTS}
    assert got["full"].net.use_im and got["full"].prototype.enabled
    assert got["full"].encoder_loop.schedule != "all"
    assert not got["no-im"].net.use_im
    assert not got["no-prototype"].prototype.enabled
    assert got["no-encoder-loop"].encoder_loop.schedule == "all"
    # one budget for all, one run directory each
    assert {c.optim.max_minutes for c in got.values()} == {cfg.minutes}
    assert {c.name for c in got.values()} == set(VARIANTS)
    assert {c.out_dir for c in got.values()} == {str(tmp_path)}
    no_budget = update_config(cfg, {"minutes": 0.0})
    assert variant_config(no_budget, "full", tmp_path).optim.max_minutes == 0.0


def _row(v, iou, side, fd90):
    return {"variant": v, "mask_iou": iou, "ssim": 50.0, "fd_metric": "FD_randcnn",
            "fd_recon": 1.0, "fd_novel": 2.0, "fd_90": fd90, "chamfer": 0.01,
            "chamfer_template_init": 0.02, "chamfer_ratio": 0.5, "azimuth_median_deg": 20.0,
            "novel_view_mask_iou": side, "n_images": 4, "epochs": 1, "steps": 2, "minutes": 1.0}


def test_markdown_states_which_directions_hold():
    rows = [_row("full", 70.0, 60.0, 5.0), _row("no-im", 65.0, 55.0, 6.0),
            _row("no-prototype", 72.0, 58.0, 6.0), _row("no-encoder-loop", 75.0, 50.0, 9.0)]
    md = ablation_markdown(rows, "8 min")
    assert "| full | 70.0 | 50.0 | 1.00 | 2.00 | 5.00 | 0.0100 (0.50×) | 20.0 | 60.0 | 1 / 2 |" in md
    assert "no-im worse than full on MaskIoU (65.0 vs 70.0): holds" in md
    assert "no-prototype worse than full on MaskIoU (72.0 vs 70.0): does not hold" in md
    assert "no-encoder-loop better front view (MaskIoU 75.0 vs 70.0): holds" in md
    assert "no-encoder-loop worse at +90° (MaskIoU +90° 50.0 vs 60.0): holds" in md
    for k, v in PAPER_TABLE4.items():
        assert f"| {k} | {v[0]:.1f} |" in md


def test_row_from_eval_metrics():
    m = {"mask_iou_pct": 70.0, "ssim_pct": 50.0, "data": {"n_images": 4},
         "fd": {"metric": "FD_randcnn", "recon": {"value": 1.0}, "novel": {"value": 2.0},
                "90": {"value": 3.0}},
         "synthpeople": {"chamfer_l2": {"prediction_mean": 0.01, "template_init_mean": 0.04},
                         "camera": {"azimuth_median_deg": 12.0}, "novel_view_mask_iou_pct": 40.0}}
    r = ablation_row("full", m, {"epochs_run": 2, "steps": 8, "minutes": 0.5})
    assert (r["chamfer_ratio"], r["fd_90"], r["azimuth_median_deg"], r["epochs"]) == (0.25, 3.0, 12.0, 2)
    r = ablation_row("full", {**m, "synthpeople": None}, {})
    assert r["chamfer"] is None and r["chamfer_ratio"] is None and r["epochs"] is None


def test_finished_variant_is_reused_only_with_the_same_settings(tmp_path):
    cfg = AblationConfig()
    vcfg = variant_config(cfg, "full", tmp_path)
    run = tmp_path / "full"
    assert finished_metrics(run, vcfg) is None
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "metrics.json").write_text(json.dumps({"mask_iou_pct": 1.0}))
    (run / "model_final.pt").write_bytes(b"")
    # the trainer stores the absolute data root: that difference does not count
    save_config(update_config(vcfg, {"data.root": "/abs/elsewhere"}), run / "config.yaml")
    assert finished_metrics(run, vcfg) == {"mask_iou_pct": 1.0}
    save_config(update_config(vcfg, {"optim.lr": 2e-3}), run / "config.yaml")
    assert finished_metrics(run, vcfg) is None
    (run / "config.yaml").write_text("optim: [not a mapping")
    assert finished_metrics(run, vcfg) is None


def test_bad_variant_is_rejected():
    with pytest.raises(Exception, match="variants"):
        load_config(AblationConfig, None, ["--variants", "full,no-gan"])
