"""Ray Data lifting, synth generation and a Tune sweep on a simulated multi-node cluster
(tests/cluster_fixtures.py: a head without CPUs and 2 worker nodes of 1 CPU each, all in this
machine): the work lands on both workers (each shard / trial records its Ray node id), the outputs
are byte-identical to a one-process run, and losing a worker node mid-lifting still gives every
row exactly once. The cluster is started once for the file (~17 s); the node-loss test, last,
adds a spare worker to it."""

from __future__ import annotations

import hashlib
import json
import pathlib
import threading
import time

import pytest
import ray
import yaml
from cluster_fixtures import simulated_cluster
from lifting.lift_fixtures import lift_cfg, make_lift_tree
from reid_fixtures import market_and_shards

from mirror3d.data.synth.config import SynthConfig
from mirror3d.data.synth.writer import file_hashes
from mirror3d.data.synth.writer import generate_dataset as generate_in_one_process
from mirror3d.engine.sweep import SweepConfig, load_spec, plan_sweep
from mirror3d.jobs import PRESETS_DIR, resolve_config
from mirror3d.lifting.lifter import META_DIR
from mirror3d.lifting.shards import read_shards
from mirror3d.platform import synth
from mirror3d.platform.lifting import run_lift
from mirror3d.platform.train import WORKERS_FILE
from mirror3d.platform.tune import run_sweep

#: meta fields that say when, where and how fast a shard was lifted, not what it holds
RUN_FIELDS = {"seconds", "started", "finished", "worker", "node", "cpu_user", "cpu_system"}


@pytest.fixture(scope="module")
def cluster():
    with simulated_cluster(workers=2, cpus_per_worker=1, head_cpus=0) as sc:
        yield sc


# ------------------------------------------------------------------------------ lifting
@pytest.fixture(scope="module")
def lift_tree(tmp_path_factory):
    return make_lift_tree(tmp_path_factory.mktemp("lift") / "data")


def _lift_cfg(tree: dict, out: pathlib.Path):
    """15 shards of up to 2 images (28 images, 26 rows), large enough (64 x 128, oracle
    template) that a shard takes a noticeable time: the node-loss test removes a node while
    shards are left."""
    return lift_cfg(tree, out.parent, out=str(out), image_size=(64, 128), num_points=1024,
                    shard_size=2, preview=0, actors=2, cpus_per_actor=1.0)


@pytest.fixture(scope="module")
def one_process_lift(lift_tree, tmp_path_factory):
    """The reference: the same job lifted in one process, no Ray."""
    out = tmp_path_factory.mktemp("lift_ref") / "out"
    run_lift(_lift_cfg(lift_tree, out), use_ray=False, run_dir=False)
    return out


def _metas(out: pathlib.Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (out / META_DIR).glob("*-*.json")}


def _content(out: pathlib.Path) -> dict[str, object]:
    """What an out dir holds, run details left out: sha256 of each parquet file's bytes, and each
    shard's meta without its timings, process and node."""
    shards = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.glob("*.parquet")}
    metas = {k: {f: v for f, v in m.items() if f not in RUN_FIELDS} for k, m in _metas(out).items()}
    return {"parquet": shards, "meta": metas}


def test_lifting_runs_on_both_worker_nodes_with_identical_rows(cluster, lift_tree,
                                                               one_process_lift, tmp_path,
                                                               monkeypatch):
    # the pool starts lifting once both actors are up (else, on a busy machine, the first
    # actor up may lift every shard before the other one has started)
    monkeypatch.setattr(ray.data.DataContext.get_current(), "wait_for_min_actors_s", 300)
    rep = run_lift(_lift_cfg(lift_tree, tmp_path / "out"), run_dir=False)
    assert len(rep.lifted_shards) == 15
    nodes = {m["node"] for m in _metas(rep.out_dir).values()}
    assert nodes == set(cluster.worker_node_ids())  # one actor per worker, both lifted shards
    assert {m["node"] for m in _metas(one_process_lift).values()} == {"local"}
    ref = _content(one_process_lift)
    assert len(ref["parquet"]) == 14 and len(ref["meta"]) == 15  # one shard: the corrupt image
    assert _content(rep.out_dir) == ref


# ------------------------------------------------------------------------------ synth
def _synth_cfg(out: pathlib.Path, **kw) -> SynthConfig:
    base = dict(out=str(out), ids=4, images_per_id=3, seed=5, image_size=(32, 64), cameras=4,
                shard_size=1, floor=False, progress=False)
    return SynthConfig(**{**base, **kw})


def test_synth_shards_spread_over_both_nodes_with_identical_files(cluster, tmp_path):
    generate_in_one_process(_synth_cfg(tmp_path / "loop"))
    summary = synth.generate_dataset(_synth_cfg(tmp_path / "ray", workers=2))
    n = summary["shards"]
    assert n >= 4 and summary["shards_generated"] == n
    nodes = json.loads((tmp_path / "ray" / synth.NODES_FILE).read_text())
    assert sorted(nodes, key=int) == [str(k) for k in range(n)]  # every shard, its node
    assert set(nodes.values()) == set(cluster.worker_node_ids())
    hashes = file_hashes(tmp_path / "ray")
    assert len(hashes) > 10 and hashes == file_hashes(tmp_path / "loop")
    assert ray.is_initialized()  # the cluster connection is used and left as it was


# ------------------------------------------------------------------------------ Tune
def test_tune_smoke_sweep_spreads_its_trials_over_both_nodes(cluster, tmp_path):
    """Two re-id smoke trials at once, 1 CPU each: each trial's Ray Train worker records its
    node (``ray_workers.jsonl`` in the trial's run directory); one trial per worker node (the
    trials themselves reserve no CPU, the head has none, each worker node has one)."""
    root, shards = market_and_shards(tmp_path)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"job": "train-reid", "preset": "smoke",
                                    "space": {"model.k": {"grid": [1, 8]}},
                                    "metric": {"name": "map_trapezoid", "mode": "max"}}))
    cfg = SweepConfig(spec=str(spec), out_dir=str(tmp_path / "runs"), name="spread",
                      max_concurrent_trials=2, cpus_per_trial=1.0,
                      overrides=f"data.shards={shards} data.images={root} optim.batch_size=6 "
                                f"optim.instances=2 optim.epochs=1 tracking.mlflow=false")
    s = load_spec(cfg.spec, PRESETS_DIR / "sweeps")
    plan = plan_sweep(cfg, s, resolve_config(s.job, s.preset))
    out = run_sweep(plan)
    assert [r["status"] for r in out.rows] == ["finished", "finished"]
    nodes = {}
    for r in out.rows:
        lines = (plan.trial_dir(r["trial_id"]) / WORKERS_FILE).read_text().splitlines()
        nodes[r["trial_id"]] = {json.loads(x)["node_id"] for x in lines}
    assert all(len(n) == 1 for n in nodes.values()), nodes  # one worker, one node per trial
    assert set().union(*nodes.values()) == set(cluster.worker_node_ids()), nodes


# ------------------------------------------------------------------------------ node loss (last)
def test_node_loss_mid_lifting_keeps_every_row_exactly_once(cluster, lift_tree,
                                                            one_process_lift, tmp_path):
    """A spare worker joins (3 nodes of 1 CPU, a pool of 2 actors); once the first shard is
    written, the node that wrote it is killed. Ray Data restarts the lost actor on the free node
    (its pool's actors have ``max_restarts=-1``, ``max_task_retries=-1``) and retries the
    shards it held; the job ends with every shard, every row once, identical to one process."""
    cluster.add_worker(num_cpus=1)
    out = tmp_path / "out"
    removed: dict = {}

    def kill_first_writer() -> None:
        deadline = time.time() + 300
        while time.time() < deadline:
            metas = _metas(out) if (out / META_DIR).is_dir() else {}
            if metas:
                node_id = next(iter(metas.values()))["node"]
                node = next(n for n in cluster.workers if n.node_id == node_id)
                removed.update(node=node_id, left=15 - len(metas))
                cluster.remove_node(node)
                removed["at"] = time.time()
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_first_writer, daemon=True)
    killer.start()
    rep = run_lift(_lift_cfg(lift_tree, out), run_dir=False)
    killer.join(timeout=10)
    assert removed.get("at"), removed  # a node was killed ...
    assert removed["left"] >= 4, removed  # ... while shards were still to lift
    assert removed["node"] not in cluster.worker_node_ids()
    got = read_shards(rep.out_dir)
    assert len(set(got.path)) == len(got.path) == 26  # every row exactly once
    assert _content(rep.out_dir) == _content(one_process_lift)
    assert len(rep.lifted_shards) == 15
    later = [m for m in _metas(rep.out_dir).values() if m["started"] > removed["at"]]
    assert later and removed["node"] not in {m["node"] for m in later}  # the others finished
