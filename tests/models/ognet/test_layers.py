"""OG-Net layers against literal channel-first re-statements of the reference, and the two
EdgeConv backends against each other."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mirror3d.models.ognet.layers as layers_mod

from mirror3d.models.ognet.layers import (
    ChannelGate,
    EdgeConv,
    EmbeddingHead,
    GatedResidual,
    MaxMeanPool,
    OmniScaleBranch,
    OmniScaleModule,
    batch_norm_last,
    gather_max_sum,
    gather_max_sum_reference,
    knn_edge_index,
    linear_max,
    linear_max_reference,
)
from mirror3d.models.ognet.ops import ball_query, farthest_point_sample, gather_points, knn


def _randomise(module: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def test_max_mean_pool_mix_and_init():
    pool = MaxMeanPool()
    x = torch.tensor([[1.0, 5.0, 3.0]])
    assert torch.allclose(pool(x, dim=1), torch.tensor([0.5 * 5 + 0.5 * 3]))  # p0 = 0 -> w = 0.5
    with torch.no_grad():
        pool.logit.fill_(2.0)
    w = torch.sigmoid(torch.tensor(2.0))
    assert torch.allclose(pool(x, dim=1), w * 5 + (1 - w) * 3)


def test_channel_gate_is_pointwise_with_reference_width():
    gate = ChannelGate(96)
    assert gate.reduce.out_features == 4  # max(1, int(96 / 24))
    assert ChannelGate(24).reduce.out_features == 1 and ChannelGate(10).reduce.out_features == 1
    _randomise(gate)
    x = torch.randn(2, 5, 7, 96)
    y = gate(x)
    h = F.silu(x @ gate.reduce.weight.T + gate.reduce.bias)
    want = x * torch.sigmoid(h @ gate.expand.weight.T + gate.expand.bias)
    assert torch.allclose(y, want, atol=1e-6)
    # no squeeze: changing one position leaves the others unchanged
    x2 = x.clone()
    x2[0, 0, 0] += 1.0
    changed = (gate(x2) != y).any(-1)
    assert changed[0, 0, 0] and changed.sum() == 1


def test_batch_norm_last_equals_channel_first_bn2d():
    bn_a, bn_b = nn.BatchNorm2d(6), nn.BatchNorm2d(6)
    _randomise(bn_a)
    bn_b.load_state_dict(bn_a.state_dict())
    x = torch.randn(2, 9, 4, 6)  # (B, N, k, C)
    y = batch_norm_last(bn_a, x)
    want = bn_b(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    assert torch.allclose(y, want, atol=1e-5)
    assert torch.allclose(bn_a.running_mean, bn_b.running_mean) and torch.allclose(bn_a.running_var, bn_b.running_var)


def test_knn_edge_index_layout():
    idx = torch.tensor([[[0, 1], [1, 0]], [[0, 1], [1, 1]]])  # B=2, N=2, k=2
    assert knn_edge_index(idx).tolist() == [[0, 1, 1, 0, 2, 3, 3, 3], [0, 0, 1, 1, 2, 2, 3, 3]]


def _edgeconv_reference(conv: EdgeConv, h: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Literal reference: (B, 2C, N, k) edge tensor -> Conv2d 1x1 -> BN2d -> mix -> LeakyReLU."""
    hf = h.permute(0, 2, 1)  # (B, C, N)
    b, c, n = hf.shape
    k = idx.shape[-1]
    nb = torch.gather(hf.unsqueeze(2).expand(b, c, n, n), 3, idx.unsqueeze(1).expand(b, c, n, k))
    centre = hf.unsqueeze(-1).expand(b, c, n, k)
    edges = torch.cat([nb - centre, centre], dim=1)
    weight = conv.conv.weight[:, :, None, None]
    z = F.conv2d(edges, weight, conv.conv.bias)
    z = F.batch_norm(z, None, None, conv.bn.weight, conv.bn.bias, training=True, eps=conv.bn.eps)
    w = torch.sigmoid(conv.pool.logit)
    return F.leaky_relu(w * z.amax(-1) + (1 - w) * z.mean(-1), 0.2).permute(0, 2, 1)


@pytest.mark.parametrize("backend", ["fused", "dense", "pyg"])
def test_edgeconv_matches_literal_reference(backend):
    conv = EdgeConv(5, 8, backend=backend)
    _randomise(conv)
    h = torch.randn(2, 30, 5)
    idx = knn(torch.randn(2, 30, 3), 6)
    assert torch.allclose(conv(h, idx), _edgeconv_reference(conv, h, idx), atol=1e-5)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_edgeconv_pyg_equals_dense_outputs_and_gradients(mode):
    dense = EdgeConv(6, 16, backend="dense")
    _randomise(dense, seed=1)
    with torch.no_grad():  # non-trivial running statistics for eval mode
        dense.bn.running_mean.uniform_(-0.5, 0.5)
        dense.bn.running_var.uniform_(0.5, 2.0)
    pyg = copy.deepcopy(dense)
    pyg.backend = "pyg"
    dense.train(mode == "train")
    pyg.train(mode == "train")
    h = torch.randn(3, 40, 6)
    idx = knn(torch.randn(3, 40, 3), 7)
    h1, h2 = h.clone().requires_grad_(), h.clone().requires_grad_()
    out1, out2 = dense(h1, idx), pyg(h2, idx)
    assert torch.allclose(out1, out2, atol=1e-5)
    g = torch.randn_like(out1)
    (out1 * g).sum().backward()
    (out2 * g).sum().backward()
    assert torch.allclose(h1.grad, h2.grad, atol=1e-5)
    for (name, p1), p2 in zip(dense.named_parameters(), pyg.parameters()):
        assert torch.allclose(p1.grad, p2.grad, atol=1e-4, rtol=1e-4), name
    assert torch.allclose(dense.bn.running_mean, pyg.bn.running_mean, atol=1e-6)
    assert torch.allclose(dense.bn.running_var, pyg.bn.running_var, atol=1e-5)


@pytest.mark.parametrize("backend", ["fused", "dense", "pyg"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_edgeconv_with_k1_is_the_per_point_linear_map(backend, mode):
    """k = 1 keeps only the point itself (e_ii = [0 ; h_i]): the EdgeConv is Linear(W_b, b) on
    each point -> BN over the points -> LeakyReLU, the paper's k = 1 "linear layer" (OG-Net
    Fig. 7, Table IV)."""
    conv = EdgeConv(5, 8, backend=backend)
    _randomise(conv, seed=3)
    with torch.no_grad():  # non-trivial running statistics for eval mode
        conv.bn.running_mean.uniform_(-0.5, 0.5)
        conv.bn.running_var.uniform_(0.5, 2.0)
    conv.train(mode == "train")
    h = torch.randn(2, 30, 5)
    idx = knn(torch.randn(2, 30, 3), 1)
    assert torch.equal(idx, torch.arange(30).expand(2, 30).unsqueeze(-1))  # only itself
    linear = nn.Linear(5, 8)
    bn = copy.deepcopy(conv.bn)
    with torch.no_grad():
        linear.weight.copy_(conv.conv.weight[:, 5:])  # W_b: the h_i half of W = [W_a | W_b]
        linear.bias.copy_(conv.conv.bias)
    expected = F.leaky_relu(batch_norm_last(bn, linear(h)), 0.2)
    assert torch.allclose(conv(h, idx), expected, atol=1e-5)
    if mode == "train":  # the BN statistics see the same N positions, once each
        assert torch.allclose(conv.bn.running_mean, bn.running_mean, atol=1e-6)


@pytest.mark.parametrize("block", [None, 7 * 3 * 5])  # one block / blocks of 5 rows
def test_gather_max_sum_equals_reference_with_gradients(monkeypatch, block):
    if block is not None:
        monkeypatch.setattr(layers_mod, "_GATHER_BLOCK_ELEMENTS", block)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 23, 3, generator=g)
    x[0, 5] = x[0, 6]  # duplicate rows: tied maxima, the gradient split among them
    x[1, :, 1] = torch.randint(0, 3, (23,), generator=g).float()  # many ties in one channel
    idx = torch.randint(0, 23, (2, 19, 7), generator=g)  # repeated sources in a row too
    idx[0, 0, :2] = torch.tensor([5, 6])
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    mx1, s1 = gather_max_sum(x1, idx)
    mx2, s2 = gather_max_sum_reference(x2, idx)
    assert mx1.shape == (2, 19, 3) and torch.equal(mx1, mx2)
    assert torch.allclose(s1, s2, atol=1e-6)
    ga, gb = torch.randn(2, 19, 3, generator=g), torch.randn(2, 19, 3, generator=g)
    ((mx1 * ga).sum() + (s1 * gb).sum()).backward()
    ((mx2 * ga).sum() + (s2 * gb).sum()).backward()
    assert torch.allclose(x1.grad, x2.grad, atol=1e-5)
    # only the max's path: a tie shares the gradient evenly (as amax)
    x3 = x.clone().requires_grad_()
    gather_max_sum(x3, idx[:, :1, :2])[0].sum().backward()
    assert x3.grad[0, 5, 0] == 0.5 and x3.grad[0, 6, 0] == 0.5


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("affine", [True, False])
def test_edgeconv_fused_equals_dense_outputs_gradients_and_statistics(mode, affine):
    """The fused backend (BN and pooling folded into per-point maps) against the previous
    default ("dense": the (B, N, k, C) edge tensor, BatchNorm2d, max/mean over k), with some
    negative BN scales (max and min swap) and two steps of running statistics."""
    dense = EdgeConv(6, 16, backend="dense")
    if not affine:
        dense.bn = nn.BatchNorm2d(16, affine=False)
    _randomise(dense, seed=5)
    if affine:
        assert (dense.bn.weight < 0).any() and (dense.bn.weight > 0).any()
    with torch.no_grad():
        dense.bn.running_mean.uniform_(-0.5, 0.5)
        dense.bn.running_var.uniform_(0.5, 2.0)
    fused = copy.deepcopy(dense)
    fused.backend = "fused"
    dense.train(mode == "train")
    fused.train(mode == "train")
    for step in range(2):
        h = torch.randn(3, 40, 6) * 2 + 1
        idx = knn(torch.randn(3, 40, 3), 7)
        h1, h2 = h.clone().requires_grad_(), h.clone().requires_grad_()
        out1, out2 = dense(h1, idx), fused(h2, idx)
        assert torch.allclose(out1, out2, atol=1e-5)
        g = torch.randn_like(out1)
        dense.zero_grad()
        fused.zero_grad()
        (out1 * g).sum().backward()
        (out2 * g).sum().backward()
        assert torch.allclose(h1.grad, h2.grad, atol=1e-5)
        for (name, p1), p2 in zip(dense.named_parameters(), fused.parameters()):
            assert torch.allclose(p1.grad, p2.grad, atol=1e-4, rtol=1e-4), name
        assert torch.allclose(dense.bn.running_mean, fused.bn.running_mean, atol=1e-6)
        assert torch.allclose(dense.bn.running_var, fused.bn.running_var, atol=1e-5)
        assert int(dense.bn.num_batches_tracked) == int(fused.bn.num_batches_tracked)
    if mode == "train":
        assert int(fused.bn.num_batches_tracked) == 2


def test_edgeconv_fused_with_cumulative_momentum():
    dense = EdgeConv(4, 8, backend="dense")
    dense.bn.momentum = None  # cumulative moving average
    fused = copy.deepcopy(dense)
    fused.backend = "fused"
    for _ in range(3):
        h = torch.randn(2, 20, 4)
        idx = knn(torch.randn(2, 20, 3), 5)
        assert torch.allclose(dense(h, idx), fused(h, idx), atol=1e-5)
    assert torch.allclose(dense.bn.running_mean, fused.bn.running_mean, atol=1e-6)
    assert torch.allclose(dense.bn.running_var, fused.bn.running_var, atol=1e-5)


@pytest.mark.parametrize("block", [None, 4 * 6])  # one block / blocks of one group
def test_linear_max_equals_reference_with_gradients(monkeypatch, block):
    if block is not None:
        monkeypatch.setattr(layers_mod, "_GATHER_BLOCK_ELEMENTS", block)
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 5, 4, 3, generator=g)
    x[0, 0, 1] = x[0, 0, 2]  # duplicated group members (as a ball query's padding): ties
    w = torch.randn(6, 3, generator=g)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    w1, w2 = w.clone().requires_grad_(), w.clone().requires_grad_()
    out1, out2 = linear_max(x1, w1), linear_max_reference(x2, w2)
    assert out1.shape == (2, 5, 6) and torch.equal(out1, out2)
    grad = torch.randn(out1.shape, generator=g)
    (out1 * grad).sum().backward()
    (out2 * grad).sum().backward()
    assert torch.allclose(x1.grad, x2.grad, atol=1e-6)
    assert torch.allclose(w1.grad, w2.grad, atol=1e-5)
    assert torch.equal(x1.grad[0, 0, 1], x1.grad[0, 0, 2])  # the tie shares the gradient


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_omni_scale_branch_fused_tail_equals_previous(mode):
    """conv2 -> BN -> ReLU -> max folded (BN and ReLU after the max, statistics from moments)
    against the previous implementation (fused=False), with negative BN scales, padded groups
    (ties) and two steps of running statistics."""
    prev = OmniScaleBranch(16, 0.3, 8, fused=False)
    _randomise(prev, seed=7)
    assert (prev.bn2.weight < 0).any() and (prev.bn2.weight > 0).any()
    with torch.no_grad():
        prev.bn2.running_mean.uniform_(-0.5, 0.5)
        prev.bn2.running_var.uniform_(0.5, 2.0)
    fused = copy.deepcopy(prev)
    fused.fused = True
    prev.train(mode == "train")
    fused.train(mode == "train")
    g = torch.Generator().manual_seed(8)
    for _ in range(2):
        xyz = torch.rand(2, 50, 3, generator=g)
        h = torch.randn(2, 50, 16, generator=g)
        group = ball_query(0.3, 8, xyz, xyz[:, :12])
        h1, h2 = h.clone().requires_grad_(), h.clone().requires_grad_()
        out1, out2 = prev(xyz, h1, xyz[:, :12], group), fused(xyz, h2, xyz[:, :12], group)
        assert torch.allclose(out1, out2, atol=1e-5)
        grad = torch.randn(out1.shape, generator=g)
        prev.zero_grad()
        fused.zero_grad()
        (out1 * grad).sum().backward()
        (out2 * grad).sum().backward()
        assert torch.allclose(h1.grad, h2.grad, atol=1e-5)
        for (name, p1), p2 in zip(prev.named_parameters(), fused.parameters()):
            assert torch.allclose(p1.grad, p2.grad, atol=1e-4, rtol=1e-4), name
        assert torch.allclose(prev.bn2.running_mean, fused.bn2.running_mean, atol=1e-6)
        assert torch.allclose(prev.bn2.running_var, fused.bn2.running_var, atol=1e-5)
        assert int(prev.bn2.num_batches_tracked) == int(fused.bn2.num_batches_tracked)


def test_edgeconv_bad_backend_and_shapes():
    with pytest.raises(ValueError, match="backend"):
        EdgeConv(3, 4, backend="sparse")
    conv = EdgeConv(3, 4)
    with pytest.raises(ValueError, match="h must"):
        conv(torch.randn(1, 5, 4), torch.zeros(1, 5, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="idx must"):
        conv(torch.randn(1, 5, 3), torch.zeros(1, 4, 2, dtype=torch.long))


def _branch_reference(br: OmniScaleBranch, xyz, h, new_xyz, group_idx):
    """Literal: concat [rel xyz ; h] on the (B, C+3, S, ns) group, Conv2d/BN2d/SE/Conv2d/BN2d."""
    rel = gather_points(xyz, group_idx) - new_xyz.unsqueeze(2)
    g = torch.cat([rel, gather_points(h, group_idx)], dim=-1).permute(0, 3, 1, 2)
    z = F.conv2d(g, br.conv1.weight[:, :, None, None])
    z = F.batch_norm(z, None, None, br.bn1.weight, br.bn1.bias, training=True)
    s = F.conv2d(z, br.gate.reduce.weight[:, :, None, None], br.gate.reduce.bias)
    s = F.conv2d(s * torch.sigmoid(s), br.gate.expand.weight[:, :, None, None], br.gate.expand.bias)
    z = z * torch.sigmoid(s)
    z = F.conv2d(z, br.conv2.weight[:, :, None, None])
    z = F.relu(F.batch_norm(z, None, None, br.bn2.weight, br.bn2.bias, training=True))
    return z.amax(-1).permute(0, 2, 1)


def test_omni_scale_branch_matches_literal_reference():
    br = OmniScaleBranch(16, radius=0.3, nsample=8)
    _randomise(br, seed=2)
    assert br.conv1.in_features == 19 and br.conv1.out_features == 8 and br.conv1.bias is None
    xyz = torch.rand(2, 60, 3) - 0.5
    h = torch.randn(2, 60, 16)
    new_xyz = gather_points(xyz, farthest_point_sample(xyz, 12))
    group_idx = ball_query(0.3, 8, xyz, new_xyz)
    got = br(xyz, h, new_xyz, group_idx)
    assert got.shape == (2, 12, 16)
    assert torch.allclose(got, _branch_reference(br, xyz, h, new_xyz, group_idx), atol=1e-5)


def test_omni_scale_module_sums_branches_at_fps_points():
    mod = OmniScaleModule(8, npoint=10, radii=(0.1, 0.2, 0.4), nsamples=(4, 8, 16))
    xyz = torch.rand(2, 50, 3) - 0.5
    h = torch.randn(2, 50, 8)
    new_xyz, new_h, fps_idx = mod(xyz, h)
    assert torch.equal(fps_idx, farthest_point_sample(xyz, 10))
    assert torch.equal(new_xyz, gather_points(xyz, fps_idx))
    want = sum(br(xyz, h, new_xyz, ball_query(br.radius, br.nsample, xyz, new_xyz)) for br in mod.branches)
    assert torch.allclose(new_h, want, atol=1e-6)


def test_gated_residual():
    gate = GatedResidual()
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    assert torch.allclose(gate(a, b), 0.5 * a + 0.5 * b)
    with torch.no_grad():
        gate.logit.fill_(-1.0)
    s = torch.sigmoid(torch.tensor(-1.0))
    assert torch.allclose(gate(a, b), s * a + (1 - s) * b)


def test_embedding_head_dropout_not_in_place():
    torch.manual_seed(0)
    head = EmbeddingHead(12, num_classes=5, embed_dim=16, drop_rate=0.7)
    head.train()
    x = torch.randn(6, 12)
    logits, feature = head(x)
    assert logits.shape == (6, 5) and feature.shape == (6, 16)
    want = head.bn(head.embed(x))  # BN in train mode: same batch statistics
    assert torch.allclose(feature, want, atol=1e-6)  # dropout did not touch the feature
    head.eval()
    logits, feature = head(x)
    assert torch.allclose(logits, head.classifier(feature), atol=1e-6)
    head.reset_classifier(0)
    assert head(x)[0] is None
    with pytest.raises(ValueError, match="num_classes"):
        EmbeddingHead(12, num_classes=-1)


def test_max_pool_equals_amax_and_routes_tied_gradients_to_one_entry():
    x = torch.randn(3, 7, 5, 4, generator=torch.Generator().manual_seed(8))
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    w = torch.randn(3, 7, 4)
    (layers_mod.max_pool(a, 2) * w).sum().backward()
    (layers_mod.max_pool_reference(b, 2) * w).sum().backward()
    assert torch.equal(layers_mod.max_pool(x, 2), x.amax(dim=2))
    assert torch.equal(a.grad, b.grad)  # no ties: the same gradient
    # a tie between two copies: amax splits the gradient, max_pool gives it to one entry; the
    # total per output (what flows back to a shared source) is the same
    t = torch.tensor([[1.0, 3.0, 3.0, 0.0]], requires_grad=True)
    layers_mod.max_pool(t, 1).sum().backward()
    assert sorted(t.grad[0].tolist()) == [0.0, 0.0, 0.0, 1.0] and t.grad[0, 1:3].sum() == 1.0
    t2 = t.detach().clone().requires_grad_(True)
    layers_mod.max_pool_reference(t2, 1).sum().backward()
    assert t2.grad[0].tolist() == [0.0, 0.5, 0.5, 0.0]
