"""Presets of the jobs registry (mirror3d/jobs/__init__.py): precedence and composition."""

import pytest
import yaml

import mirror3d.jobs as jobs
from mirror3d.jobs.turntable import TurntableConfig
from mirror3d.utils.config import ConfigError


@pytest.fixture
def presets_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(jobs, "PRESETS_DIR", tmp_path)
    return tmp_path


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))


def test_precedence_defaults_preset_file_overrides(presets_dir, tmp_path):
    write(presets_dir / "turntable" / "default.yaml", {"frames": 11})
    write(presets_dir / "turntable" / "fast.yaml", {"frames": 3, "elevation": 5.0})
    user = tmp_path / "user.yaml"
    write(user, {"elevation": 6.0})
    assert jobs.resolve_config("turntable").frames == 11
    cfg = jobs.resolve_config("turntable", "fast", str(user), ["--distance", "7"])
    assert (cfg.frames, cfg.elevation, cfg.distance) == (3, 6.0, 7.0)
    with pytest.raises(ConfigError, match="has no preset 'slow'; presets: default, fast"):
        jobs.resolve_config("turntable", "slow")


def test_compose_reads_other_jobs_presets_into_sections(presets_dir, monkeypatch):
    """``compose: {section: job}`` starts that section from the other job's preset of the same
    name (its default preset when it has none of that name); own keys then win."""
    from dataclasses import dataclass, field

    @dataclass
    class Outer:
        tt: TurntableConfig = field(default_factory=TurntableConfig)
        other: TurntableConfig = field(default_factory=TurntableConfig)
        budget: int = 1

    monkeypatch.setitem(jobs.JOBS, "outer", ("unused", "composite"))
    write(presets_dir / "turntable" / "smoke.yaml", {"frames": 2, "elevation": 1.0})
    write(presets_dir / "turntable" / "default.yaml", {"frames": 36})
    write(presets_dir / "outer" / "smoke.yaml",
          {"compose": {"tt": "turntable"}, "budget": 9, "tt": {"elevation": 4.0}})
    write(presets_dir / "outer" / "default.yaml", {"compose": {"tt": "turntable", "other": "turntable"}})
    cfg = jobs.resolve_config("outer", "smoke", cls=Outer)
    assert (cfg.tt.frames, cfg.tt.elevation, cfg.budget) == (2, 4.0, 9)
    assert cfg.other == TurntableConfig()
    write(presets_dir / "outer" / "paper.yaml", {"compose": {"tt": "turntable"}})
    assert jobs.resolve_config("outer", "paper", cls=Outer).tt.frames == 36  # no turntable/paper.yaml
