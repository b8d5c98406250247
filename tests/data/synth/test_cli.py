"""``python -m mirror3d synth``: config, aliases, errors, a tiny end-to-end run."""

from __future__ import annotations

import argparse

import pytest

from mirror3d.cli import COMMANDS, main
from mirror3d.utils.config import CONFIG_CLASSES, ConfigError, config_from_dict
from mirror3d.data.synth.cli import SynthConfig, add_arguments, config_with_aliases, resolved_counts


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_with_aliases(parser.parse_args(argv))


def test_command_and_config_are_registered():
    assert COMMANDS["synth"][0] == "mirror3d.data.synth.cli"
    assert CONFIG_CLASSES["synth"] == "mirror3d.data.synth.cli:SynthConfig"


def test_defaults_meet_the_budgeted_size():
    cfg = SynthConfig()
    assert cfg.ids >= 200 and cfg.images_per_id >= 10 and cfg.image_size == (64, 128)
    assert resolved_counts(cfg) == (200, 20, 10)
    assert resolved_counts(config_from_dict(SynthConfig, {"ids": 7, "junk_ids": 0})) == (7, 1, 0)


def test_aliases_and_dotted_options_resolve():
    cfg = _parse(["--ids", "4", "--images-per-id", "5", "--no-ray", "--image_size", "16,32"])
    assert (cfg.ids, cfg.images_per_id, cfg.no_ray, cfg.image_size) == (4, 5, True, (16, 32))
    cfg = _parse(["--images_per_id", "3", "--images-per-id", "6"])
    assert cfg.images_per_id == 6  # the alias is an option like the others
    assert _parse([]).no_ray is False


def test_too_many_frames_is_a_config_error():
    with pytest.raises(ConfigError, match="frame"):
        config_from_dict(SynthConfig, {"ids": 9999, "images_per_id": 1000})


@pytest.mark.parametrize("argv,key,code", [
    (["--ids", "1"], "ids", 2),
    (["--images-per-id", "1"], "images_per_id", 2),
    (["--cameras", "12"], "cameras", 2),
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
    rc = main(["synth", "--ids", "2", "--images-per-id", "2", "--out", str(out), "--seed", "3",
               "--no-ray", "--image_size", "16,32", "--cameras", "2", "--progress", "false"])
    text = capsys.readouterr().out
    assert rc == 0 and "synth: wrote" in text and "raw-pixel floor" in text
    assert (out / "gt" / "images.parquet").is_file() and (out / "README.txt").is_file()
    assert (out / "gt" / "raw_pixel_floor.json").is_file()
    assert len(list((out / "Market-1501" / "bounding_box_train").glob("0001_c*.jpg"))) == 2
