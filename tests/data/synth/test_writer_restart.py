"""SynthPeople's resume state never blocks a corrected re-run after a failed start
(mirror3d/data/synth/writer.py): settings only count once a shard was finished with them.
The shard writer is replaced, so nothing is rendered."""

from __future__ import annotations

import json

import pytest

from mirror3d.data.synth.config import SynthConfig
from mirror3d.data.synth.writer import generate_dataset


def _cfg(out, **kw) -> SynthConfig:
    base = dict(out=str(out), ids=4, images_per_id=3, seed=5, image_size=(32, 64), cameras=4,
                shard_size=2, floor=False, progress=False)
    return SynthConfig(**{**base, **kw})


def _crash(cfg, root, shards, todo, advance):
    raise RuntimeError("killed before the first shard")


def test_a_failed_start_leaves_nothing_behind(tmp_path):
    out = tmp_path / "people"
    with pytest.raises(RuntimeError, match="killed"):
        generate_dataset(_cfg(out), write_shards=_crash)
    assert not out.exists()
    # an existing, empty folder stays (the user made it), without our state
    out.mkdir()
    with pytest.raises(RuntimeError, match="killed"):
        generate_dataset(_cfg(out), write_shards=_crash)
    assert out.is_dir() and list(out.iterdir()) == []


def test_state_without_a_finished_shard_does_not_block_other_settings(tmp_path):
    out = tmp_path / "people"
    state = out / ".synth"
    state.mkdir(parents=True)
    (state / "config.json").write_text(json.dumps({"seed": 1, "ids": 9}))
    stray = out / "Market-1501" / "query" / "0001_c1s1_000000_00.jpg"  # a shard cut off mid-move
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"half")
    seen = []

    def record(cfg, root, shards, todo, advance):
        seen.append((json.loads((root / ".synth" / "config.json").read_text())["seed"], todo))
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        generate_dataset(_cfg(out), write_shards=record)
    assert seen and seen[0][0] == 5 and seen[0][1] == list(range(len(seen[0][1])))
    assert not stray.exists()  # the old, unfinished tree went first


def test_a_finished_shard_with_other_settings_still_refuses(tmp_path):
    out = tmp_path / "people"
    shards = out / ".synth" / "shards"
    shards.mkdir(parents=True)
    (out / ".synth" / "config.json").write_text(json.dumps({"seed": 1}))
    (shards / "00000.done").write_text(json.dumps({"shard": 0, "units": [1], "files": []}))
    with pytest.raises(ValueError, match="made with other settings"):
        generate_dataset(_cfg(out), write_shards=_crash)
    assert (shards / "00000.done").exists() and (out / ".synth" / "config.json").exists()
