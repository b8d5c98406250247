"""``python -m mirror3d synth`` (mirror3d/jobs/synth.py): config, presets, errors, a tiny
end-to-end run."""

from __future__ import annotations

import pytest

from mirror3d.cli import main
from mirror3d.data.synth.config import SynthConfig, resolved_counts
from mirror3d.jobs import JOBS, job_module, resolve_config
from mirror3d.utils.config import ConfigError, config_from_dict


def test_job_is_registered_with_the_synth_config():
    assert "synth" in JOBS
    mod = job_module("synth")
    assert mod.__name__ == "mirror3d.jobs.synth" and mod.CONFIG is SynthConfig


def test_defaults_meet_the_budgeted_size():
    cfg = SynthConfig()
    assert cfg.ids >= 200 and cfg.images_per_id >= 10 and cfg.image_size == (64, 128)
    assert resolved_counts(cfg) == (200, 20, 10)
    assert resolved_counts(config_from_dict(SynthConfig, {"ids": 7, "junk_ids": 0})) == (7, 1, 0)


def test_presets_and_options_resolve():
    assert resolve_config("synth") == SynthConfig()
    smoke = resolve_config("synth", "smoke")
    assert sum(resolved_counts(smoke)) * smoke.images_per_id <= 100 and smoke.out != SynthConfig().out
    cfg = resolve_config("synth", "smoke", overrides=["--ids", "4", "--images_per_id", "5",
                                                      "--no_ray", "--image_size", "16,32"])
    assert (cfg.ids, cfg.images_per_id, cfg.no_ray, cfg.image_size) == (4, 5, True, (16, 32))
    assert cfg.cameras == smoke.cameras  # the rest is the preset's


def test_too_many_frames_is_a_config_error():
    with pytest.raises(ConfigError, match="frame"):
        config_from_dict(SynthConfig, {"ids": 9999, "images_per_id": 1000})


@pytest.mark.parametrize("argv,key,code", [
    (["--ids", "1"], "ids", 2),
    (["--images_per_id", "1"], "images_per_id", 2),
    (["--cameras", "12"], "cameras", 2),
    (["--images-per-id", "5"], "images-per-id", 2),  # one spelling: the config key's
])
def test_bad_arguments_give_one_error_line(argv, key, code, tmp_path, capsys):
    rc = main(["synth", "--out", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == code and len(err) == 1 and key in err[0] and err[0].startswith("mirror3d synth: error:")
    assert not (tmp_path / "o").exists()


def test_foreign_output_dir_is_refused(tmp_path, capsys):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "photo.jpg").write_bytes(b"x")
    rc = main(["synth", "--out", str(tmp_path / "o"), "--ids", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "not empty" in err[0]


def test_tiny_end_to_end_run(tmp_path, capsys):
    out = tmp_path / "synth"
    rc = main(["synth", "--ids", "2", "--images_per_id", "2", "--out", str(out), "--seed", "3",
               "--no_ray", "--image_size", "16,32", "--cameras", "2", "--progress", "false"])
    text = capsys.readouterr().out
    assert rc == 0 and "synth: wrote" in text and "raw-pixel floor" in text
    assert (out / "gt" / "images.parquet").is_file() and (out / "README.txt").is_file()
    assert (out / "gt" / "raw_pixel_floor.json").is_file()
    assert len(list((out / "Market-1501" / "bounding_box_train").glob("0001_c*.jpg"))) == 2
    # the README's command line is one the CLI takes
    readme = (out / "README.txt").read_text()
    assert "--images_per_id 2" in readme and "--images-per-id" not in readme


def test_smoke_preset_runs(tmp_path, capsys):
    out = tmp_path / "smoke"
    rc = main(["synth", "--smoke", "--out", str(out), "--no_ray"])
    text = capsys.readouterr().out
    smoke = resolve_config("synth", "smoke")
    assert rc == 0 and f"{smoke.ids} ids" in text
    assert len(list((out / "gt" / "meshes").glob("*.obj"))) == sum(resolved_counts(smoke))
