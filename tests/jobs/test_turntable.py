import pytest
from PIL import Image

import mirror3d.jobs.turntable as tt
from mirror3d.jobs.turntable import TurntableConfig, run_turntable
from mirror3d.utils.config import load_config


def test_turntable_writes_gif_sheet_and_config(tmp_path):
    cfg = load_config(TurntableConfig, overrides=[
        "--frames", "6", "--render.image_size", "16,32", "--out_dir", str(tmp_path / "tt"), "--name", "r1"])
    out = run_turntable(cfg, progress=False)
    assert out == tmp_path / "tt" / "r1"
    gif = Image.open(out / "turntable.gif")
    assert gif.n_frames == 6 and gif.size == (32, 64)
    sheet = Image.open(out / "turntable_sheet.png")
    assert sheet.size[0] > 32 and sheet.size[1] > 32
    assert load_config(TurntableConfig, out / "config.yaml") == cfg
    # frames differ as the object turns (the texture is not rotation-symmetric)
    gif.seek(0)
    a = gif.convert("RGB").tobytes()
    gif.seek(2)
    assert gif.convert("RGB").tobytes() != a
    assert [p.name for p in (tmp_path / "tt").iterdir()] == ["r1"]


def test_failure_leaves_no_partial_run(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(tt, "save_gif", boom)
    cfg = load_config(TurntableConfig, overrides=["--frames", "2", "--render.image_size", "8,16",
                                                  "--out_dir", str(tmp_path / "tt"), "--name", "bad"])
    with pytest.raises(RuntimeError):
        run_turntable(cfg, progress=False)
    assert list((tmp_path / "tt").iterdir()) == []


def test_turntable_cli_reports_where_it_wrote(tmp_path):
    import pathlib
    import subprocess
    import sys
    root = pathlib.Path(__file__).resolve().parents[2]
    res = subprocess.run(
        [sys.executable, "-m", "mirror3d", "turntable", "--name", "cli", "--frames", "3",
         "--render.image_size", "16,32", "--out_dir", str(tmp_path / "tt")],
        capture_output=True, text=True, timeout=300, cwd=root)
    assert res.returncode == 0, res.stderr
    assert str(tmp_path / "tt" / "cli" / "turntable.gif") in res.stdout
    bad = subprocess.run([sys.executable, "-m", "mirror3d", "turntable", "--frames", "0"],
                         capture_output=True, text=True, timeout=300, cwd=root)
    assert bad.returncode != 0 and "frames" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
