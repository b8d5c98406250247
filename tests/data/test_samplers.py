"""P×K batches (mirror3d/data/samplers.py)."""

import numpy as np
import pytest
import torch

from mirror3d.data.samplers import PKSampler


def test_pk_sampler_balances_identities_and_splits_workers():
    labels = np.repeat(np.arange(10), [5, 1, 3, 4, 6, 2, 7, 3, 4, 5])
    s0 = PKSampler(labels, batch_size=8, instances=2, seed=1, rank=0, world=2)
    s1 = PKSampler(labels, batch_size=8, instances=2, seed=1, rank=1, world=2)
    b0 = np.array(list(s0)).reshape(-1, 8)
    b1 = np.array(list(s1)).reshape(-1, 8)
    assert len(b0) == len(b1) == len(labels) // 8 // 2
    assert len(s0) == b0.size
    for b in np.concatenate([b0, b1]):
        ids, counts = np.unique(labels[b], return_counts=True)
        assert len(ids) == 4 and set(counts) == {2}
    assert not np.array_equal(b0, b1)
    with pytest.raises(ValueError, match="identities per batch"):
        PKSampler(labels, batch_size=24, instances=2)


def test_pk_sampler_epochs_differ_and_repeat_with_the_seed():
    labels = np.repeat(np.arange(6), 4)
    s = PKSampler(labels, batch_size=6, instances=2, seed=3)
    first = list(s)
    s.set_epoch(1)
    second = list(s)
    assert first != second
    s.set_epoch(0)
    assert list(s) == first == list(PKSampler(labels, batch_size=6, instances=2, seed=3))


def test_pk_sampler_feeds_a_dataloader_in_whole_batches():
    labels = np.repeat(np.arange(5), 3)
    ds = torch.utils.data.TensorDataset(torch.as_tensor(labels))
    loader = torch.utils.data.DataLoader(ds, batch_size=4, drop_last=True,
                                         sampler=PKSampler(labels, batch_size=4, instances=2))
    batches = [b[0] for b in loader]
    assert len(batches) == len(labels) // 4
    for b in batches:
        assert sorted(torch.bincount(b)[torch.bincount(b) > 0].tolist()) == [2, 2]
