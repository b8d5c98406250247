"""Tests for mirror3d/cli.py, mirror3d/__main__.py and the jobs registry (mirror3d/jobs/__init__.py)."""

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from mirror3d.cli import main
from mirror3d.jobs import JOBS, PRESETS_DIR, job_module, resolve_config
from mirror3d.jobs.turntable import TurntableConfig
from mirror3d.utils.config import config_to_dict, load_config

REPO = Path(__file__).resolve().parents[1]

DEMO_MODULE = '''
from dataclasses import dataclass, field

from mirror3d.render.config import RenderConfig
from mirror3d.utils.config import dump_yaml


@dataclass
class DemoConfig:
    render: RenderConfig = field(default_factory=RenderConfig)
    steps: int = field(default=3, metadata={"range": (1, 10), "help": "number of steps"})
    verbose: bool = False
    light: tuple[float, ...] = (1.0,)
    tag: str | None = None
    fail: str = field(default="", metadata={"choices": ["", "value", "file", "runtime"],
                                            "help": "raise an error of this kind"})


CONFIG = DemoConfig
POSITIONAL = ("tag",)


def run(cfg):
    if cfg.fail == "value":
        raise ValueError("bad thing\\non two lines")
    if cfg.fail == "file":
        raise FileNotFoundError("no such file: x.bin")
    if cfg.fail == "runtime":
        raise RuntimeError("a bug")
    print(dump_yaml(cfg), end="")
    return 0
'''


@pytest.fixture
def demo(tmp_path, monkeypatch):
    """Jobs `demo` (a config-backed job), `norun` (no run()) and `missing`, from modules in tmp_path."""
    (tmp_path / "m3d_demo_job.py").write_text(DEMO_MODULE)
    (tmp_path / "m3d_norun_job.py").write_text("CONFIG = dict\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(JOBS, "demo", ("m3d_demo_job", "a config-backed demo"))
    monkeypatch.setitem(JOBS, "norun", ("m3d_norun_job", "lacks run"))
    monkeypatch.setitem(JOBS, "missing", ("m3d_no_such_module_xyz", "not written yet"))
    return tmp_path


def run_main(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def single_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# ---------------------------------------------------------------- top level


def test_top_level_help_lists_commands(capsys):
    code, out, _ = run_main(capsys, ["--help"])
    assert code == 0
    for name, (_, help) in JOBS.items():
        assert name in out and help in out
    assert "turntable" in out and "config" in out


def test_every_job_module_exists_with_config_and_run():
    for name, (module, _) in JOBS.items():
        mod = job_module(name)
        assert mod.__name__ == module == f"mirror3d.jobs.{name.replace('-', '_')}"
        assert dataclasses.is_dataclass(mod.CONFIG) and callable(mod.run)
        for key in getattr(mod, "POSITIONAL", ()):
            assert key in {f.name for f in dataclasses.fields(mod.CONFIG)}, (name, key)


def test_every_job_has_default_and_smoke_presets_that_load():
    """default.yaml is the config's defaults written out (no drift); smoke.yaml loads."""
    for name in JOBS:
        cls = job_module(name).CONFIG
        default = yaml.safe_load((PRESETS_DIR / name / "default.yaml").read_text())
        default.pop("compose", None)
        assert load_config(cls, [default]) == cls() or name == "pipeline", name
        assert resolve_config(name, "default") == cls(), name
        smoke = resolve_config(name, "smoke")
        keys = yaml.safe_load((PRESETS_DIR / name / "smoke.yaml").read_text()) or {}
        assert isinstance(smoke, cls) and (smoke != cls()) == bool(keys), name


def test_no_command_prints_help_and_fails(capsys):
    code, out, err = run_main(capsys, [])
    assert code == 2 and "commands:" in err and out == ""


def test_unknown_command_suggests(capsys):
    code, _, err = run_main(capsys, ["confg"])
    assert code == 2
    assert single_error_line(err) == "mirror3d: error: unknown command 'confg'; did you mean: config?"


def test_missing_job_module_is_a_clear_error(demo, capsys):
    code, out, _ = run_main(capsys, ["--help"])  # listing it needs no import
    assert code == 0 and "not written yet" in out
    code, _, err = run_main(capsys, ["missing", "--help"])
    assert code == 1
    line = single_error_line(err)
    assert line.startswith("mirror3d missing: error: command 'missing' is not available")
    assert "m3d_no_such_module_xyz" in line


def test_job_module_without_run(demo, capsys):
    code, _, err = run_main(capsys, ["norun"])
    assert code == 1 and "does not define run" in single_error_line(err)


# ---------------------------------------------------------------- config-backed command


def test_config_command_help_shows_fields_with_defaults(demo, capsys):
    code, out, _ = run_main(capsys, ["demo", "--help"])
    assert code == 0
    flat = " ".join(out.split())  # help text is wrapped
    assert "--render.image_size W,H" in flat
    assert "[tuple[int, int]; in [1, 4096]] (default: 64,128)" in flat
    assert "--steps INT number of steps [int; in [1, 10]] (default: 3)" in flat
    assert "--render.background {white,black,image}" in flat and "(default: white)" in flat
    assert "--light FLOAT,..." in flat and "(default: 1.0)" in flat
    assert "--tag STR" in flat and "str or none" in flat and "(default: none)" in flat
    assert "--config FILE" in flat
    # the usage line stays short: config keys are summarised
    usage = out.split("\n\n")[0]
    assert "--KEY VALUE ..." in usage and "--render.sigma" not in usage


def test_config_command_resolves_overrides(demo, capsys):
    code, out, err = run_main(
        capsys,
        ["demo", "--render.image_size", "32,16", "--steps=4", "--verbose", "--light", "-1,2.5",
         "--render.sigma", "-0", "tag=hi"],
    )
    assert code == 0, err
    got = yaml.safe_load(out)
    assert got["render"]["image_size"] == [32, 16]
    assert got["steps"] == 4 and got["verbose"] is True and got["light"] == [-1.0, 2.5]
    assert got["tag"] == "hi" and got["render"]["sigma"] == 0.0
    code, out, _ = run_main(capsys, ["demo", "--verbose", "false"])
    assert code == 0 and yaml.safe_load(out)["verbose"] is False
    code, out, _ = run_main(capsys, ["demo", "positional-tag", "--steps", "2"])
    assert code == 0 and yaml.safe_load(out)["tag"] == "positional-tag"


def test_config_command_file_then_overrides(demo, capsys, tmp_path):
    p = tmp_path / "d.yaml"
    p.write_text("steps: 8\nrender:\n  background: black\n")
    code, out, _ = run_main(capsys, ["demo", "--config", str(p), "--steps", "2"])
    got = yaml.safe_load(out)
    assert code == 0 and got["steps"] == 2 and got["render"]["background"] == "black"


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--render.image_sise", "3,4"],
         "mirror3d demo: error: unknown config key 'render.image_sise'; did you mean: render.image_size?"),
        (["stepz=3"], "mirror3d demo: error: unknown config key 'stepz'; did you mean: steps?"),
        (["--step", "4"], "mirror3d demo: error: unknown config key 'step'; did you mean: steps?"),
        (["--render.image_size", "abc"],
         "mirror3d demo: error: render.image_size: expected tuple[int, int] (e.g. 64,128), got 'abc'"),
        (["--steps", "1.5"], "mirror3d demo: error: steps: expected int (e.g. 3), got '1.5'"),
        (["--steps", "11"], "mirror3d demo: error: steps: must be in [1, 10], got 11"),
        (["--verbose", "maybe"],
         "mirror3d demo: error: verbose: expected bool (true/false/1/0/yes/no), got 'maybe'"),
        (["--render.background", "red"],
         "mirror3d demo: error: render.background: expected one of 'white', 'black', 'image', got 'red'"),
    ],
)
def test_bad_override_is_one_line_exit_2(demo, capsys, argv, expected):
    code, out, err = run_main(capsys, ["demo", *argv])
    assert code == 2 and out == ""
    assert single_error_line(err) == expected


def test_missing_config_file(demo, capsys, tmp_path):
    code, _, err = run_main(capsys, ["demo", "--config", str(tmp_path / "nope.yaml")])
    assert code == 2
    line = single_error_line(err)
    assert "config file not found" in line and "nope.yaml" in line


def test_command_errors_are_one_line_and_debug_shows_traceback(demo, capsys):
    code, _, err = run_main(capsys, ["demo", "--fail", "value"])
    assert code == 1
    assert single_error_line(err) == "mirror3d demo: error: bad thing on two lines"
    code, _, err = run_main(capsys, ["demo", "--fail", "file"])
    assert code == 1 and single_error_line(err) == "mirror3d demo: error: no such file: x.bin"
    for argv in (["--debug", "demo", "--fail", "value"], ["demo", "--fail", "value", "--debug"]):
        code, _, err = run_main(capsys, argv)
        assert code == 1 and "Traceback" in err and "ValueError: bad thing" in err
    with pytest.raises(RuntimeError, match="a bug"):  # bugs are not hidden
        main(["demo", "--fail", "runtime"])


# ---------------------------------------------------------------- the `config` command


def test_config_show_prints_resolved_yaml(capsys):
    code, out, _ = run_main(capsys, ["config", "show", "turntable"])
    assert code == 0
    assert yaml.safe_load(out) == config_to_dict(TurntableConfig())
    code, out, _ = run_main(
        capsys, ["config", "show", "turntable", "--render.image_size", "32,16", "render.background=black"]
    )
    assert code == 0
    assert yaml.safe_load(out)["render"] == {
        "image_size": [32, 16], "sigma": 7000.0, "ellipsoid": 2.0, "background": "black",
    }
    # --smoke is the smoke preset, for `config show` as for the job itself
    code, out, _ = run_main(capsys, ["config", "show", "turntable", "--smoke"])
    smoke = yaml.safe_load((PRESETS_DIR / "turntable" / "smoke.yaml").read_text())
    assert code == 0 and yaml.safe_load(out)["frames"] == smoke["frames"] != TurntableConfig().frames


def test_config_show_works_for_every_job(capsys):
    for name in JOBS:
        code, out, err = run_main(capsys, ["config", "show", name])
        assert code == 0, (name, err)
        assert yaml.safe_load(out) == config_to_dict(job_module(name).CONFIG()), name


def test_config_dump_writes_loadable_yaml(capsys, tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("frames: 12\n")
    out_file = tmp_path / "out" / "turntable.yaml"
    code, out, _ = run_main(
        capsys,
        ["config", "dump", "turntable", "--config", str(base), "--out", str(out_file),
         "--elevation", "-20", "--render.sigma=100"],
    )
    assert code == 0 and str(out_file) in out
    cfg = load_config(TurntableConfig, out_file)
    assert (cfg.frames, cfg.elevation, cfg.render.sigma) == (12, -20.0, 100.0)
    assert cfg == load_config(TurntableConfig, base, ["--elevation=-20", "--render.sigma=100"])


def test_config_command_errors(capsys):
    code, _, err = run_main(capsys, ["config", "show", "turntabel"])
    assert code == 2 and "did you mean: turntable" in single_error_line(err)
    code, _, err = run_main(capsys, ["config", "show", "turntable", "--frame", "3"])
    assert code == 2
    assert single_error_line(err) == (
        "mirror3d config: error: unknown config key 'frame'; did you mean: frames?"
    )
    code, _, err = run_main(capsys, ["config", "dump", "turntable"])
    assert code == 2 and "--out" in single_error_line(err)
    code, _, err = run_main(capsys, ["config", "show", "turntable", "--preset", "nope"])
    assert code == 2 and "has no preset 'nope'; presets: default, smoke" in single_error_line(err)


def test_config_help(capsys):
    code, out, _ = run_main(capsys, ["config", "--help"])
    assert code == 0 and "show" in out and "dump" in out
    code, out, _ = run_main(capsys, ["config", "dump", "--help"])
    assert code == 0 and "--out FILE" in out and ", ".join(sorted(JOBS)) in " ".join(out.split())


# ---------------------------------------------------------------- subprocesses


def test_python_m_mirror3d_help():
    res = subprocess.run(
        [sys.executable, "-m", "mirror3d", "--help"], cwd=REPO, capture_output=True, text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert "config" in res.stdout and "turntable" in res.stdout
    assert "render a turntable of the template sphere" in res.stdout


def test_help_does_not_import_torch_or_ray():
    code = textwrap.dedent(
        """
        import contextlib, io, sys
        from mirror3d.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            codes = [main(["--help"]), main(["config", "--help"]), main(["config", "show", "--help"])]
        print(codes, "torch" in sys.modules, "ray" in sys.modules)
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[0, 0, 0] False False"
