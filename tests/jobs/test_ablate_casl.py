"""Job ``ablate-casl`` (mirror3d/jobs/ablate_casl.py): its presets compose train-casl's into
``base``; the job prints the table and where it is. The runner itself (Ray Train) is tested in
tests/platform/test_casl.py."""

from __future__ import annotations

import mirror3d.jobs.ablate_casl as job
from mirror3d.cli import main
from mirror3d.engine.casl_ablation import AblationConfig
from mirror3d.jobs import presets, resolve_config


def test_presets_compose_train_casl_into_base():
    assert presets("ablate-casl") == ["default", "smoke"]
    assert resolve_config("ablate-casl") == AblationConfig()
    smoke = resolve_config("ablate-casl", "smoke")
    assert smoke.base == resolve_config("train-casl", "smoke")
    assert smoke.eval_chamfer_points == 1000 and smoke.minutes == AblationConfig().minutes
    # options on top of the composed base
    cfg = resolve_config("ablate-casl", "smoke", overrides=["--base.optim.lr", "1e-3",
                                                            "--variants", "full,no-im"])
    assert cfg.base.optim.lr == 1e-3 and cfg.base.optim.epochs == 2
    assert cfg.variants == ("full", "no-im")


def test_ablate_casl_prints_the_table(tmp_path, monkeypatch, capsys):
    seen = []

    def fake_run(cfg):
        seen.append(cfg)
        md = tmp_path / "ablation.md"
        md.write_text("# CASL ablation\n")
        return md

    monkeypatch.setattr(job, "run_ablation", fake_run)
    monkeypatch.setattr(job, "ensure_ray", lambda: None)
    assert main(["ablate-casl", "--smoke", "--variants", "full", "--minutes", "0",
                 "--base.data.root", str(tmp_path)]) == 0  # checked before Ray: must exist
    out = capsys.readouterr().out
    assert "# CASL ablation" in out and f"ablate-casl: table -> {tmp_path / 'ablation.md'}" in out
    assert seen[0].variants == ("full",) and seen[0].base.optim.epochs == 2
