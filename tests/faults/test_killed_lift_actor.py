"""A lifting actor killed mid-shard (SIGKILL right after its shard's parquet file is in place and
before the shard's meta, the job's "done" record, is written): Ray Data restarts the actor (its
pool's actors have ``max_restarts=-1``, ``max_task_retries=-1``) and retries the shard; the job
finishes with every row exactly once, byte-identical to a run in one process without Ray."""

from __future__ import annotations

import hashlib
import json
import pathlib

from faults.fault_injection import killing_lift_actor, ship_to_ray
from lifting.lift_fixtures import lift_cfg, make_lift_tree
from mirror3d.lifting.lifter import META_DIR
from mirror3d.lifting.shards import read_shards
from mirror3d.platform import lifting as platform_lifting
from mirror3d.platform.lifting import run_lift

#: meta fields that say when, where and how fast a shard was lifted, not what it holds
RUN_FIELDS = {"seconds", "started", "finished", "worker", "node", "cpu_user", "cpu_system"}


def _metas(out: pathlib.Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (out / META_DIR).glob("*-*.json")}


def _content(out: pathlib.Path) -> dict[str, object]:
    shards = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.glob("*.parquet")}
    metas = {k: {f: v for f, v in m.items() if f not in RUN_FIELDS} for k, m in _metas(out).items()}
    return {"parquet": shards, "meta": metas}


def test_lifting_actor_killed_mid_shard_gives_every_row_exactly_once(ray_session, tmp_path,
                                                                     monkeypatch):
    tree = make_lift_tree(tmp_path / "data")

    def cfg(out: str):
        return lift_cfg(tree, tmp_path, mode="flat", out=str(tmp_path / out), image_size=(8, 16),
                        num_points=64, min_points=0, shard_size=4, preview=0, actors=2,
                        cpus_per_actor=1.0)

    ref = run_lift(cfg("ref"), use_ray=False, run_dir=False)

    ship_to_ray()
    marker = tmp_path / "killed.json"
    monkeypatch.setattr(platform_lifting, "LiftActor", killing_lift_actor(str(marker)))
    rep = run_lift(cfg("out"), run_dir=False)

    killed = json.loads(marker.read_text())  # an actor died with a shard on disk, not done
    metas = _metas(rep.out_dir)
    shard = killed["shard"].removesuffix(".parquet")
    assert metas[shard]["worker"] != killed["pid"]  # the shard was lifted again by another
    got = read_shards(rep.out_dir)
    assert len(set(got.path)) == len(got.path) == len(read_shards(ref.out_dir))  # each row once
    assert _content(rep.out_dir) == _content(ref.out_dir)
    assert len(rep.lifted_shards) == len(ref.lifted_shards) == len(metas)
    assert [p.name for p in rep.out_dir.rglob(".*")] == []  # no temporary file left
