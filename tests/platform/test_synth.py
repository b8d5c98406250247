"""SynthPeople shards as Ray tasks (mirror3d/platform/synth.py): the same files as the plain loop."""

from __future__ import annotations

import pytest

from mirror3d.data.synth.config import SynthConfig
from mirror3d.data.synth.writer import file_hashes
from mirror3d.data.synth.writer import generate_dataset as generate_in_one_process
from mirror3d.platform import synth


def _cfg(out, **kw) -> SynthConfig:
    base = dict(out=str(out), ids=4, images_per_id=3, seed=5, image_size=(32, 64), cameras=4,
                shard_size=2, floor=False, progress=False)
    return SynthConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def loop_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "loop"
    generate_in_one_process(_cfg(out))
    return out


def test_ray_shards_give_the_same_files(loop_dataset, ray_session, tmp_path):
    other = tmp_path / "ray"
    summary = synth.generate_dataset(_cfg(other, workers=2, shard_size=4))
    assert summary["shards"] == 2 and summary["shards_generated"] == 2
    assert file_hashes(other) == file_hashes(loop_dataset)
    assert ray_session.is_initialized()  # a running Ray instance is used and left running


def test_no_ray_is_the_plain_loop(loop_dataset, tmp_path, monkeypatch):
    def no_ray(*a, **k):
        raise AssertionError("Ray used with no_ray=true")

    monkeypatch.setattr(synth, "write_shards_with_ray", no_ray)
    other = tmp_path / "loop"
    summary = synth.generate_dataset(_cfg(other, no_ray=True))
    assert summary["shards_generated"] == 3 and file_hashes(other) == file_hashes(loop_dataset)
