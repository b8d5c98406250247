"""Circle loss against a naive pair loop, and the degenerate batches; the batch-hard triplet loss."""

import math

import pytest
import torch

from mirror3d.models.ognet.losses import CircleLoss, batch_hard_triplet, circle_loss


def _naive_circle(features, labels, m=0.25, gamma=64.0):
    f = [[float(v) for v in row] for row in features]
    f = [[v / math.sqrt(sum(u * u for u in row)) for v in row] for row in f]
    pos, neg = [], []
    for i in range(len(f)):
        for j in range(i + 1, len(f)):
            s = sum(a * b for a, b in zip(f[i], f[j]))
            if int(labels[i]) == int(labels[j]):
                pos.append(-gamma * max(1 + m - s, 0.0) * (s - (1 - m)))
            else:
                neg.append(gamma * max(s + m, 0.0) * (s - m))
    if not pos or not neg:
        return 0.0

    def lse(v):
        top = max(v)
        return top + math.log(sum(math.exp(x - top) for x in v))

    z = lse(neg) + lse(pos)
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))  # softplus


@pytest.mark.parametrize("gamma", [64.0, 8.0])
def test_circle_loss_matches_naive(gamma):
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(7, 5, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 2, 1, 1, 3])
    got = circle_loss(feats, labels, margin=0.25, gamma=gamma)
    assert got.item() == pytest.approx(_naive_circle(feats, labels, gamma=gamma), rel=1e-9, abs=1e-9)
    assert CircleLoss(gamma=gamma)(feats, labels).item() == pytest.approx(got.item(), rel=1e-12)


def test_circle_loss_is_scale_invariant_and_has_finite_gradient():
    feats = torch.randn(6, 4, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    loss = circle_loss(feats, labels)
    assert torch.allclose(loss, circle_loss(feats.detach() * 3.0, labels), atol=1e-4)
    loss.backward()
    assert torch.isfinite(feats.grad).all() and feats.grad.abs().sum() > 0


def test_circle_loss_prefers_separated_identities():
    labels = torch.tensor([0, 0, 1, 1])
    good = torch.tensor([[1.0, 0.0], [0.99, 0.05], [0.0, 1.0], [0.05, 0.99]])
    bad = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.99, 0.05], [0.05, 0.99]])
    assert circle_loss(good, labels) < circle_loss(bad, labels)


@pytest.mark.parametrize("labels", [torch.tensor([0, 1, 2, 3]), torch.tensor([5, 5, 5, 5])])
def test_no_positive_or_no_negative_pair_gives_zero_with_grad(labels):
    feats = torch.randn(4, 3, requires_grad=True)
    loss = circle_loss(feats, labels)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.isfinite(feats.grad).all() and torch.all(feats.grad == 0)


def test_circle_loss_bad_input():
    with pytest.raises(ValueError, match="labels"):
        circle_loss(torch.randn(4, 3), torch.tensor([0.0, 1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="labels"):
        circle_loss(torch.randn(4, 3), torch.tensor([0, 1, 0]))
    bad = torch.randn(4, 3)
    bad[1, 1] = float("nan")
    with pytest.raises(ValueError, match="features"):
        circle_loss(bad, torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="margin"):
        CircleLoss(margin=1.5)


def test_batch_hard_triplet_by_hand():
    f = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    y = torch.tensor([0, 0, 1, 1])
    assert batch_hard_triplet(f, y, 0.3).item() == pytest.approx(0.0)
    f2 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    # positives orthogonal (d = √2), negatives identical (d = 0): loss = √2 + 0.3
    assert batch_hard_triplet(f2, y, 0.3).item() == pytest.approx(2 ** 0.5 + 0.3, abs=1e-5)
    assert batch_hard_triplet(f, torch.tensor([0, 1, 2, 3]), 0.3).item() == 0.0


def test_batch_hard_triplet_without_a_triplet_is_zero_with_grad():
    f = torch.randn(4, 3, requires_grad=True)
    for y in (torch.tensor([0, 1, 2, 3]), torch.tensor([5, 5, 5, 5])):
        loss = batch_hard_triplet(f, y, 0.3)
        assert loss.item() == 0.0 and loss.requires_grad
        loss.backward()
