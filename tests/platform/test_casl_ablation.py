"""jobs/ablate_casl.py: variants as config overrides, the table, reuse of finished variants."""

from __future__ import annotations

import json

import pytest

from mirror3d.utils.config import load_config
from mirror3d.platform.casl_ablation import (PAPER_TABLE4, VARIANTS, AblationConfig,
                                             _variant_config, ablation_markdown, run_ablation)


def test_variants_are_the_papers_switches(tmp_path):
    cfg = AblationConfig()
    got = {v: _variant_config(cfg, v, tmp_path) for v in VARIANTS}
    assert got["full"].net.use_im and got["full"].prototype.enabled
    assert got["full"].encoder_loop.schedule != "all"
    assert not got["no-im"].net.use_im
    assert not got["no-prototype"].prototype.enabled
    assert got["no-encoder-loop"].encoder_loop.schedule == "all"
    # one budget for all
    assert {c.optim.max_minutes for c in got.values()} == {cfg.minutes}
    assert {c.name for c in got.values()} == set(VARIANTS)


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


def test_smoke_ablation_trains_evaluates_and_reuses(ray_session, tmp_path, data_fixtures):
    hq = data_fixtures.make_market_hq(tmp_path / "d", size=(32, 64))
    cfg = load_config(AblationConfig, None, [
        "--smoke", "--minutes", "0", "--variants", "full,no-encoder-loop",
        "--out_dir", str(tmp_path / "abl"), "--name", "t", "--eval_samples", "1",
        "--base.data.root", str(hq), "--base.data.ratio_range", "0.0,1.0",
        "--base.data.clean_range", "0.0,1.0"])
    md = run_ablation(cfg, progress=False)
    data = json.loads((md.parent / "ablation.json").read_text())
    assert [r["variant"] for r in data["rows"]] == ["full", "no-encoder-loop"]
    for r in data["rows"]:
        assert 0.0 <= r["mask_iou"] <= 100.0 and r["epochs"] == 2
        assert (md.parent / r["variant"] / "eval" / "metrics.json").exists()
    saved = load_config(type(cfg.base), md.parent / "no-encoder-loop" / "config.yaml", [])
    assert saved.encoder_loop.schedule == "all"
    text = md.read_text()
    assert "| no-encoder-loop |" in text and "better front view" in text
    stamp = (md.parent / "full" / "model_final.pt").stat().st_mtime_ns
    run_ablation(cfg, progress=False)  # finished variants are reused, not retrained
    assert (md.parent / "full" / "model_final.pt").stat().st_mtime_ns == stamp


def test_bad_variant_is_rejected():
    with pytest.raises(Exception, match="variants"):
        load_config(AblationConfig, None, ["--variants", "full,no-gan"])
