"""A training loop's random state in its checkpoints (mirror3d/engine/rng_state.py): a run
resumed after a crash trains the epochs the crashed run would have trained, and logs each epoch
once. (CASL resumed by Ray Train after a node loss: tests/platform/test_multinode_train.py.)"""

import json

import pytest
import torch

from mirror3d.engine.reid_train import train_reid_loop
from mirror3d.engine.rng_state import gather_rng_states, restore_rng_states, rng_state
from mirror3d.jobs import resolve_config
from mirror3d.utils.checkpoint import load_checkpoint, save_checkpoint
from mirror3d.utils.config import update_config
from reid_fixtures import market_and_shards


def test_restored_states_repeat_the_draws_of_every_generator(tmp_path):
    torch.manual_seed(3)
    gen = torch.Generator().manual_seed(5)
    torch.rand(4), torch.rand(4, generator=gen)
    states = gather_rng_states((gen,), rank=0, world_size=1)
    # through a checkpoint file, loaded with weights_only=True as every checkpoint is
    save_checkpoint(tmp_path / "c.pt", "casl", {"rng": states})
    states = load_checkpoint(tmp_path / "c.pt", "casl")["rng"]
    expected = torch.rand(4), torch.rand(4, generator=gen)
    torch.manual_seed(0)
    gen2 = torch.Generator().manual_seed(0)
    assert restore_rng_states(states, (gen2,), rank=0, world_size=1)
    assert torch.equal(torch.rand(4), expected[0])
    assert torch.equal(torch.rand(4, generator=gen2), expected[1])


def test_states_of_another_world_size_or_generator_count_or_none_are_not_restored():
    gen = torch.Generator().manual_seed(1)
    one = [rng_state((gen,))]
    before = gen.get_state()
    torch.rand(1, generator=gen)
    assert not restore_rng_states(None, (gen,), 0, 1)  # an older checkpoint without states
    assert not restore_rng_states(one, (gen,), 0, 2)  # saved by 1 worker, resumed on 2
    assert not restore_rng_states(one, (), 0, 1)
    assert not torch.equal(gen.get_state(), before)
    assert restore_rng_states(one * 2, (gen,), 1, 2)  # rank 1 takes the second state
    assert torch.equal(gen.get_state(), before)


class Crash(Exception):
    pass


def test_ognet_resumed_after_a_crash_equals_the_run_that_never_stopped(tmp_path):
    root, shards = market_and_shards(tmp_path)
    cfg = update_config(resolve_config("train-reid", "smoke"), {
        "data.shards": str(shards), "data.images": str(root), "optim.batch_size": 6,
        "optim.instances": 2, "optim.epochs": 3, "tracking.mlflow": False})
    ref = train_reid_loop(cfg, tmp_path / "ref")

    def crash_in_epoch_2(metrics, checkpoint_file):  # after epoch 2 was logged and saved
        if metrics["epoch"] == 2:
            raise Crash()

    run = tmp_path / "crashed"
    with pytest.raises(Crash):
        train_reid_loop(cfg, run, report=crash_in_epoch_2)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    # resumed from epoch 0's checkpoint, into the same run directory
    res = train_reid_loop(cfg, run, resume=str(run / "checkpoints" / "epoch_0000"))
    lines, ref_lines = ([json.loads(x) for x in (r / "metrics.jsonl").read_text().splitlines()]
                        for r in (run, tmp_path / "ref"))
    assert [m["epoch"] for m in lines] == [0, 1, 2]  # each epoch once
    timing = {"epoch_seconds", "elapsed_seconds"}
    for got, want in zip(lines, ref_lines):  # same draws, same data order: the same numbers
        assert {k: v for k, v in got.items() if k not in timing} == \
            {k: v for k, v in want.items() if k not in timing}
    assert res == ref
