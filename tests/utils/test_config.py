"""Tests for mirror3d/utils/config.py: typed dataclass configs, YAML, dotted overrides, errors."""

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import yaml

from mirror3d.jobs.turntable import TurntableConfig
from mirror3d.render.config import RenderConfig
from mirror3d.utils.config import (
    ConfigError,
    config_fields,
    config_from_dict,
    config_to_dict,
    flatten_config,
    format_value,
    get_by_dotted,
    load_config,
    parse_overrides,
    save_config,
    set_by_dotted,
    update_config,
    validate_config,
)


@dataclass
class Inner:
    size: tuple[int, int] = field(default=(64, 128), metadata={"range": (1, 4096)})
    scale: float = field(default=1.0, metadata={"range": (0.0, 10.0)})

    def validate(self):
        if self.size[0] * self.size[1] > 1_000_000:
            raise ValueError("size: at most 1000000 pixels")


@dataclass
class Every:
    inner: Inner = field(default_factory=Inner)
    count: int = field(default=3, metadata={"range": (0, None), "help": "how many"})
    lr: float = 0.1
    flag: bool = False
    name: str = "abc"
    maybe_int: int | None = None
    maybe_str: str | None = "x"
    mode: Literal["a", "b"] = "a"
    level: Literal[1, 2, 3] = 1
    weights: tuple[float, ...] = (1.0, 2.0)
    ids: list[int] = field(default_factory=lambda: [1, 2])
    tags: list[str] = field(default_factory=list)
    ratios: list[float] = field(default_factory=lambda: [0.5])
    path: Path = Path("data/x")
    color: str = field(default="red", metadata={"choices": ["red", "green"]})
    extra: Inner | None = None

    def validate(self):
        if self.flag and self.count > 100:
            raise ValueError("count: must be <= 100 when flag is set")


def _msg(excinfo) -> str:
    return str(excinfo.value)


# ---------------------------------------------------------------- defaults and YAML round trip


def test_defaults_match_the_dataclass():
    cfg = load_config(Every)
    assert cfg == Every()
    assert isinstance(cfg.inner, Inner) and cfg.extra is None


def test_yaml_round_trip(tmp_path):
    cfg = load_config(
        Every,
        overrides=[
            "--inner.size", "32,16", "--count", "9", "--lr=0.25", "--flag", "true",
            "--name", "hello world", "--maybe_int", "4", "--maybe_str", "none", "--mode", "b",
            "--level", "3", "--weights", "0.5,1.5,2.5", "--ids", "7,8", "--tags", "p,q",
            "--ratios", "0.1", "--path", "/tmp/z", "--color", "green", "--extra.scale", "2",
        ],
    )
    path = save_config(cfg, tmp_path / "sub" / "cfg.yaml")
    raw = yaml.safe_load(path.read_text())
    assert raw["inner"]["size"] == [32, 16]  # tuples are written as lists
    assert raw["path"] == "/tmp/z"  # paths as str
    assert raw["extra"] == {"size": [64, 128], "scale": 2.0}
    back = load_config(Every, path)
    assert back == cfg
    assert isinstance(back.inner.size, tuple) and isinstance(back.path, Path)
    assert back.extra == Inner(scale=2.0)


def test_turntable_round_trip_and_key_order(tmp_path):
    cfg = load_config(TurntableConfig, overrides=["--render.background", "black", "--seed", "5"])
    path = save_config(cfg, tmp_path / "t.yaml")
    assert load_config(TurntableConfig, path) == cfg
    assert list(yaml.safe_load(path.read_text())) == [f.name for f in dataclasses.fields(TurntableConfig)]


def test_yaml_then_overrides_precedence(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("count: 5\ninner:\n  scale: 3\nlr: 1e-3\n")  # PyYAML reads 1e-3 as a string
    cfg = load_config(Every, p, ["--count", "6", "--inner.size", "8,8"])
    assert cfg.count == 6
    assert cfg.inner == Inner(size=(8, 8), scale=3.0)
    assert cfg.lr == pytest.approx(1e-3) and isinstance(cfg.lr, float)
    assert load_config(Every, p).count == 5


def test_empty_yaml_gives_defaults(tmp_path):
    p = tmp_path / "empty.yaml"
    p.write_text("# nothing\n")
    assert load_config(Every, p) == Every()


# ---------------------------------------------------------------- overrides of every type


@pytest.mark.parametrize(
    "tokens, key, expected",
    [
        (["--count", "7"], "count", 7),
        (["--count=7"], "count", 7),
        (["count=7"], "count", 7),
        (["--lr", "1e-3"], "lr", 1e-3),
        (["--lr", "-0.5"], "lr", -0.5),
        (["--flag", "true"], "flag", True),
        (["--flag", "YES"], "flag", True),
        (["--flag", "on"], "flag", True),
        (["--flag=1"], "flag", True),
        (["--flag"], "flag", True),
        (["--flag", "--count", "2"], "flag", True),
        (["--flag", "no"], "flag", False),
        (["--flag", "0"], "flag", False),
        (["--flag", "False"], "flag", False),
        (["--name", "hello world"], "name", "hello world"),
        (["--maybe_int", "5"], "maybe_int", 5),
        (["--maybe_int", "null"], "maybe_int", None),
        (["--maybe_str", "none"], "maybe_str", None),
        (["--maybe_str", "y"], "maybe_str", "y"),
        (["--mode", "b"], "mode", "b"),
        (["--level", "2"], "level", 2),
        (["--weights", "1,2.5, 3"], "weights", (1.0, 2.5, 3.0)),
        (["--weights", ""], "weights", ()),
        (["--ids", "4,5,6"], "ids", [4, 5, 6]),
        (["--ids", "[4, 5]"], "ids", [4, 5]),
        (["--tags", "a,b"], "tags", ["a", "b"]),
        (["--ratios", "0.1,0.2"], "ratios", [0.1, 0.2]),
        (["--path", "/tmp/y"], "path", Path("/tmp/y")),
        (["--inner.size", "32,16"], "inner.size", (32, 16)),
        (["--inner.scale", "2"], "inner.scale", 2.0),
        (["--extra.scale", "2"], "extra", Inner(scale=2.0)),
        (["--extra.size", "2,2", "--extra", "none"], "extra", None),
        (["--color", "green"], "color", "green"),
    ],
)
def test_override_each_type(tokens, key, expected):
    cfg = load_config(Every, overrides=tokens)
    value = get_by_dotted(cfg, key)
    assert value == expected
    assert type(value) is type(expected)
    if isinstance(expected, (tuple, list)):
        assert all(type(a) is type(b) for a, b in zip(value, expected))
    # every key the tokens do not touch keeps its default
    touched = {k.split(".")[0] for k, _ in parse_overrides(Every, tokens)}
    defaults = flatten_config(Every())
    rest = {k: v for k, v in flatten_config(cfg).items() if k.split(".")[0] not in touched}
    assert rest == {k: v for k, v in defaults.items() if k.split(".")[0] not in touched}
    assert len(rest) >= len(defaults) - 3


def test_formatted_defaults_parse_back():
    """format_value (used by --help) is the inverse of override parsing for every field."""
    for f in config_fields(Every) + config_fields(TurntableConfig):
        cls = Every if f in config_fields(Every) else TurntableConfig
        cfg = load_config(cls, overrides=[f"--{f.key}={format_value(f.default)}"])
        assert get_by_dotted(cfg, f.key) == f.default, f.key


def test_int_and_float_coercion_from_values():
    cfg = config_from_dict(Every, {"count": 64.0, "lr": 2, "inner": {"size": [3, "4"]}})
    assert cfg.count == 64 and type(cfg.count) is int
    assert cfg.lr == 2.0 and type(cfg.lr) is float
    assert cfg.inner.size == (3, 4)
    assert config_from_dict(Every, {"flag": 1}).flag is True


# ---------------------------------------------------------------- error messages


def test_unknown_override_key_suggests():
    with pytest.raises(ConfigError) as e:
        load_config(TurntableConfig, overrides=["--render.image_sise", "64,128"])
    assert _msg(e) == "unknown config key 'render.image_sise'; did you mean: render.image_size?"


def test_unknown_key_in_wrong_section_suggests_leaf_name():
    with pytest.raises(ConfigError) as e:
        load_config(TurntableConfig, overrides=["--image_size", "64,128"])
    assert "'image_size'" in _msg(e) and "render.image_size" in _msg(e)


def test_unknown_key_without_close_match_lists_valid_keys():
    with pytest.raises(ConfigError) as e:
        load_config(Every, overrides=["--inner.zzzzzzzz", "1"])
    assert "'inner.zzzzzzzz'" in _msg(e) and "valid keys in inner: inner.size, inner.scale" in _msg(e)


def test_unknown_key_in_yaml_names_file_key_and_suggestion(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("render:\n  image_sise: [64, 128]\n")
    with pytest.raises(ConfigError) as e:
        load_config(TurntableConfig, p)
    assert str(p) in _msg(e)
    assert "'render.image_sise'" in _msg(e) and "did you mean: render.image_size?" in _msg(e)


def test_wrong_type_names_key_value_and_type():
    with pytest.raises(ConfigError) as e:
        load_config(TurntableConfig, overrides=["--render.image_size", "abc"])
    assert _msg(e) == "render.image_size: expected tuple[int, int] (e.g. 64,128), got 'abc'"
    with pytest.raises(ConfigError) as e:
        load_config(TurntableConfig, overrides=["--render.image_size", "1,2,3"])
    assert "render.image_size" in _msg(e) and "'1,2,3'" in _msg(e) and "tuple[int, int]" in _msg(e)


@pytest.mark.parametrize(
    "tokens, parts",
    [
        (["--count", "1.5"], ["count", "expected int", "'1.5'"]),
        (["--count", "none"], ["count", "expected int", "'none'"]),
        (["--lr", "fast"], ["lr", "expected float", "'fast'"]),
        (["--lr", "nan"], ["lr", "expected float", "'nan'"]),
        (["--flag", "maybe"], ["flag", "expected bool", "'maybe'"]),
        (["--maybe_int", "x"], ["maybe_int", "int or none", "'x'"]),
        (["--mode", "c"], ["mode", "one of 'a', 'b'", "'c'"]),
        (["--level", "4"], ["level", "one of 1, 2, 3", "'4'"]),
        (["--ids", "1,x"], ["ids", "list[int]", "'1,x'"]),
        (["--inner", "3"], ["inner", "config section", "inner.size"]),
        (["--count"], ["count", "missing value"]),
        (["stray"], ["unexpected argument", "'stray'"]),
    ],
)
def test_bad_override_messages(tokens, parts):
    with pytest.raises(ConfigError) as e:
        load_config(Every, overrides=tokens)
    for part in parts:
        assert part in _msg(e)
    assert "\n" not in _msg(e)


@pytest.mark.parametrize(
    "data, parts",
    [
        ({"count": 1.5}, ["count", "expected int", "1.5"]),
        ({"count": True}, ["count", "expected int", "True"]),
        ({"flag": "maybe"}, ["flag", "expected bool", "'maybe'"]),
        ({"flag": 2}, ["flag", "expected bool", "2"]),
        ({"lr": True}, ["lr", "expected float"]),
        ({"name": 123}, ["name", "expected str", "123"]),
        ({"inner": 5}, ["inner", "mapping", "5"]),
        ({"inner": None}, ["inner", "got None"]),
        ({"weights": 3.0}, ["weights", "tuple[float, ...]", "3.0"]),
    ],
)
def test_bad_values_from_dict(data, parts):
    with pytest.raises(ConfigError) as e:
        config_from_dict(Every, data)
    for part in parts:
        assert part in _msg(e)


@pytest.mark.parametrize(
    "tokens, parts",
    [
        (["--count", "-1"], ["count", ">= 0", "-1"]),
        (["--inner.scale", "11"], ["inner.scale", "in [0.0, 10.0]", "11"]),
        (["--inner.size", "0,5"], ["inner.size", "every element", "in [1, 4096]", "(0, 5)"]),
        (["--color", "blue"], ["color", "one of 'red', 'green'", "'blue'"]),
    ],
)
def test_range_and_choices_messages(tokens, parts):
    with pytest.raises(ConfigError) as e:
        load_config(Every, overrides=tokens)
    for part in parts:
        assert part in _msg(e)


def test_ranges_are_inclusive():
    cfg = load_config(Every, overrides=["--inner.scale", "10", "--inner.size", "1,4096", "--count", "0"])
    assert cfg.inner.scale == 10.0 and cfg.inner.size == (1, 4096) and cfg.count == 0


def test_validate_hooks_run_with_section_prefix():
    with pytest.raises(ConfigError) as e:
        load_config(Every, overrides=["--flag", "--count", "200"])
    assert _msg(e) == "count: must be <= 100 when flag is set"
    with pytest.raises(ConfigError) as e:
        load_config(Every, overrides=["--inner.size", "4096,4096"])
    assert _msg(e) == "inner: size: at most 1000000 pixels"
    assert load_config(Every, overrides=["--count", "200"]).count == 200


def test_turntable_light_needs_nine_values():
    with pytest.raises(ConfigError) as e:
        load_config(TurntableConfig, overrides=["--light", "1,2,3"])
    assert "light" in _msg(e) and "exactly 9" in _msg(e) and "got 3" in _msg(e)


@pytest.mark.parametrize(
    "text, parts",
    [
        (None, ["config file not found"]),
        ("- 1\n- 2\n", ["expected a mapping", "list"]),
        ("a: [1, 2\nb: 3\n", ["cannot parse config file", "line"]),
    ],
)
def test_bad_yaml_files(tmp_path, text, parts):
    p = tmp_path / "x.yaml"
    if text is not None:
        p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(Every, p)
    assert str(p) in _msg(e) and "\n" not in _msg(e)
    for part in parts:
        assert part in _msg(e)


def test_config_error_is_value_error():
    assert issubclass(ConfigError, ValueError)


def test_unsupported_field_type_is_reported():
    @dataclass
    class Bad:
        table: dict[str, int] = field(default_factory=dict)

    with pytest.raises(TypeError, match="Bad.table"):
        load_config(Bad)


# ---------------------------------------------------------------- dotted access


def test_get_by_dotted():
    cfg = Every()
    assert get_by_dotted(cfg, "inner.size") == (64, 128)
    assert get_by_dotted(cfg, "inner") is cfg.inner
    assert get_by_dotted(cfg, "extra.scale") is None  # unset optional section
    with pytest.raises(ConfigError, match="did you mean: inner.scale"):
        get_by_dotted(cfg, "inner.scal")


def test_set_by_dotted_returns_new_validated_config():
    cfg = Every()
    new = set_by_dotted(cfg, "inner.size", [32, 32])
    assert new.inner.size == (32, 32) and cfg.inner.size == (64, 128)
    assert set_by_dotted(cfg, "inner.size", "16,8").inner.size == (16, 8)
    assert set_by_dotted(cfg, "inner", {"scale": 4}).inner == Inner(scale=4.0)
    with pytest.raises(ConfigError, match=r"inner.scale: must be in \[0.0, 10.0\], got -1"):
        set_by_dotted(cfg, "inner.scale", -1)
    with pytest.raises(ConfigError, match="unknown config key 'inner.sizes'"):
        set_by_dotted(cfg, "inner.sizes", (1, 1))


def test_update_config_takes_tune_values_and_validates_once():
    cfg = Every()
    new = update_config(cfg, {"inner.scale": np.float64(2.5), "count": np.int64(4), "flag": np.bool_(True)})
    assert new.inner.scale == 2.5 and type(new.inner.scale) is float
    assert new.count == 4 and type(new.count) is int
    assert new.flag is True
    # cross-field check sees both keys at once
    with pytest.raises(ConfigError, match="when flag is set"):
        update_config(cfg, {"count": 200, "flag": True})
    assert update_config(cfg, {"count": 200}).count == 200


def test_flatten_config_round_trips_through_update():
    cfg = load_config(Every, overrides=["--inner.size", "3,4", "--tags", "u", "--extra.scale", "1.5"])
    flat = flatten_config(cfg)
    assert flat["inner.size"] == (3, 4) and flat["extra.scale"] == 1.5 and flat["tags"] == ["u"]
    assert set(flat) == {
        "inner.size", "inner.scale", "count", "lr", "flag", "name", "maybe_int", "maybe_str",
        "mode", "level", "weights", "ids", "tags", "ratios", "path", "color", "extra.size",
        "extra.scale",
    }
    assert update_config(Every(), flat) == cfg
    assert flatten_config(Every())["extra"] is None


def test_dict_round_trip_and_types():
    cfg = load_config(TurntableConfig, overrides=["--frames", "12"])
    d = config_to_dict(cfg)
    assert d["render"]["image_size"] == [64, 128] and isinstance(d["light"], list)
    assert config_from_dict(TurntableConfig, d) == cfg
    with_instance = config_from_dict(TurntableConfig, {"render": RenderConfig(sigma=5.0)})
    assert with_instance.render.sigma == 5.0


def test_validate_config_normalises_and_checks():
    cfg = validate_config(TurntableConfig(light=(1, 0, 0, 0, 0, 0, 0, 0, 0)))
    assert all(type(x) is float for x in cfg.light)
    with pytest.raises(ConfigError, match="frames: must be in \\[1, 3600\\], got 0"):
        validate_config(TurntableConfig(frames=0))


def test_parse_overrides_pairs():
    pairs = parse_overrides(Every, ["--count", "-3", "--lr=2", "name=a=b", "--flag"])
    assert pairs == [("count", "-3"), ("lr", "2"), ("name", "a=b"), ("flag", "true")]


# ---------------------------------------------------------------- registry and fields


def test_load_config_files_in_order_sections_and_mappings(tmp_path):
    """Several files: later ones win; a mapping entry counts as an already-read file; a section
    file fills one section (how the pipeline composes its stages' presets)."""
    a = tmp_path / "a.yaml"
    a.write_text("frames: 5\nelevation: 3.0\n")
    b = tmp_path / "b.yaml"
    b.write_text("frames: 7\n")
    sec = tmp_path / "render.yaml"
    sec.write_text("sigma: 10.0\nimage_size: [8, 16]\n")
    cfg = load_config(TurntableConfig, [a, {"distance": 9.0}, b], ["--elevation", "4"],
                      sections={"render": sec})
    assert (cfg.frames, cfg.elevation, cfg.distance) == (7, 4.0, 9.0)
    assert (cfg.render.sigma, cfg.render.image_size) == (10.0, (8, 16))
    # a later file overrides a section file's key
    cfg = load_config(TurntableConfig, [{"render": {"sigma": 2.0}}], sections={"render": sec})
    assert (cfg.render.sigma, cfg.render.image_size) == (2.0, (8, 16))
    bad = tmp_path / "bad.yaml"
    bad.write_text("sigmaa: 1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key 'render.sigmaa'"):
        load_config(TurntableConfig, sections={"render": bad})
    with pytest.raises(ConfigError, match="frames: not a config section"):
        load_config(TurntableConfig, sections={"frames": sec})


def test_config_fields_describe_turntable():
    fields = {f.key: f for f in config_fields(TurntableConfig)}
    assert list(fields)[:4] == ["render.image_size", "render.sigma", "render.ellipsoid", "render.background"]
    f = fields["render.image_size"]
    assert (f.metavar, f.type, f.default, f.range) == ("W,H", "tuple[int, int]", (64, 128), (1, 4096))
    assert fields["render.background"].metavar == "{white,black,image}"
    assert fields["light"].metavar == "FLOAT,..."
    assert fields["frames"].range == (1, 3600) and fields["frames"].default == 36
    assert fields["frames"].describe() == "int; in [1, 3600]"
    assert fields["render.sigma"].describe() == "float; >= 0.0"
    assert fields["render.background"].describe() == ""  # the metavar lists the values
    every = {f.key: f for f in config_fields(Every)}
    assert every["color"].describe() == "str; one of red, green"
    assert every["maybe_int"].describe() == "int or none"
