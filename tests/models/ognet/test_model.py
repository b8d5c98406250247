"""OG-Net variants: smoke test over every registered model, exact paper parameter counts,
structure (point counts, graphs, residuals), backend equality, input errors."""

import copy

import pytest
import torch

import mirror3d.models.ognet.layers as layers_mod
import mirror3d.models.ognet.model as model_mod
from mirror3d.models.ognet import CNN2D, OGNet, ReIDOutput, count_paper_params
from mirror3d.models.ognet.layers import max_pool, max_pool_reference
from mirror3d.models.ognet.ops import knn, knn_naive, knn_reference
from mirror3d.models.registry import create_model, list_models, model_info

OGNET_MODELS = list_models(module="mirror3d.models.ognet")


def test_registered_names():
    assert set(OGNET_MODELS) == {"og-net", "og-net-small", "og-net-deep", "cnn2d-small"}


def _inputs(model, b=2, n=1024, seed=0):
    g = torch.Generator().manual_seed(seed)
    if isinstance(model, CNN2D):
        return (torch.randn(b, 3, 128, 64, generator=g),)
    xyz = (torch.rand(b, n, 3, generator=g) - 0.5) * torch.tensor([0.5, 1.6, 0.3])
    rgb = torch.rand(b, n, 3, generator=g) - 0.5
    return xyz, rgb


@pytest.mark.parametrize("name", OGNET_MODELS)
def test_smoke_every_registered_model(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7)
    model.train()
    out = model(*_inputs(model, n=800))  # the first FPS level needs >= 768 points
    assert isinstance(out, ReIDOutput)
    assert out.logits.shape == (2, 7) and out.feature.shape == (2, 512)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.feature).all()
    (out.logits.square().sum() + out.feature.square().sum()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing
    assert all(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize(
    "name,paper,all_params",
    [
        ("og-net", 1_951_734, 1_951_738),
        ("og-net-small", 1_200_829, 1_200_833),
        ("og-net-deep", 2_470_477, 2_470_498),
    ],
)
def test_exact_paper_parameter_counts(name, paper, all_params):
    model = create_model(name, num_classes=751)
    assert count_paper_params(model) == paper
    # + the 751-way classifier (512*751 + 751), as the reference's training-time count
    assert count_paper_params(model, include_classifier=True) == paper + 385_263
    # every nn.Parameter outside the classifier: the reference's figure minus its unused
    # logit_scale scalar (the authors' code counts 1,951,739 / 1,200,834 / 2,470,499)
    n_classifier = sum(p.numel() for p in model.get_classifier().parameters())
    assert sum(p.numel() for p in model.parameters()) - n_classifier == all_params


@pytest.mark.parametrize("name", OGNET_MODELS)
def test_registry_metadata_matches_the_models(name):
    """Each entry's paper count is what the built model counts, and the model takes its declared
    input kind at its declared default size."""
    info = model_info(name)
    model = create_model(name, num_classes=751).eval()
    if info.paper_params is not None:
        assert count_paper_params(model) == info.paper_params
    if info.input_kind == "points":
        assert not isinstance(model, CNN2D) and info.input_size == 4096
        xyz, rgb = _inputs(model, b=1, n=info.input_size)
        with torch.no_grad():
            assert model(xyz, rgb).feature.shape == (1, 512)
    else:
        assert info.input_kind == "image" and isinstance(model, CNN2D)
        w, h = info.input_size
        with torch.no_grad():
            assert model(torch.randn(1, 3, h, w)).feature.shape == (1, 512)


def test_structure_point_counts_graphs_and_residuals(monkeypatch):
    seen = []
    real_knn = model_mod.knn

    def spy(x, k, chunk_size=None):
        seen.append((x.shape[1], x.shape[2], k))
        return real_knn(x, k, chunk_size=chunk_size)

    monkeypatch.setattr(model_mod, "knn", spy)
    model = create_model("og-net-deep", num_classes=3)
    assert [l.downsample.npoint if l.downsample else None for l in model.layers] == [768, 384, None, 192, None, 96, None]
    assert [l.shortcut[0].in_features if l.shortcut else None for l in model.layers] == [3, 48, None, 96, None, 192, None]
    # the same structure on a small cloud (first FPS level 64 instead of 768) keeps the test fast
    model = create_model("og-net-deep", num_classes=3, init_points=128).eval()
    assert [l.downsample.npoint if l.downsample else None for l in model.layers] == [128, 64, None, 32, None, 16, None]
    with torch.no_grad():
        out = model(*_inputs(model, n=150))
    assert out.feature.shape == (2, 512)
    # two graphs per layer; xyz-only except the last layer, whose graphs use [xyz ; h]
    assert seen == [
        (150, 3, 9), (150, 3, 9), (128, 3, 9), (128, 3, 9), (64, 3, 9), (64, 3, 9),
        (64, 3, 9), (64, 3, 9), (32, 3, 9), (32, 3, 9), (32, 3, 9), (32, 3, 9),
        (16, 387, 9), (16, 387, 9),
    ]
    seen.clear()
    assert [l.downsample.npoint for l in create_model("og-net").layers] == [768, 384, 192, 96]
    model = create_model("og-net", num_classes=3, init_points=160, k=8).eval()
    with torch.no_grad():
        model(*_inputs(model, n=200))
    assert seen == [(200, 3, 8), (160, 3, 8), (80, 3, 8), (40, 259, 8)]


def _last_graph(model, inputs):
    """(xyz, h) entering the last layer and the neighbour table its EdgeConv receives."""
    seen = {}
    last = model.layers[-1]
    hooks = [last.register_forward_pre_hook(lambda m, a: seen.update(xyz=a[0], h=a[1])),
             last.convs[0].register_forward_pre_hook(lambda m, a: seen.update(idx=a[1]))]
    with torch.no_grad():
        model(*inputs)
    for hook in hooks:
        hook.remove()
    return seen["xyz"], seen["h"], seen["idx"]


def test_last_graph_position_builds_the_last_knn_on_xyz_only():
    """OG-Net Table IV: the last layer's graph on [xyz ; h] (the default, the non-local graph)
    or on xyz only ("position"); every other layer is the same in both."""
    torch.manual_seed(0)
    default = create_model("og-net-small", num_classes=3, init_points=64, k=5).eval()
    torch.manual_seed(0)
    position = create_model("og-net-small", num_classes=3, init_points=64, k=5,
                            last_graph="position").eval()
    assert default.last_graph == "position+appearance" and position.last_graph == "position"
    assert [l.feature_graph for l in default.layers] == [False, False, False, True]
    assert not any(l.feature_graph for l in position.layers)
    position.load_state_dict(default.state_dict())  # same parameters: only the graph differs
    inputs = _inputs(default, n=80)

    xyz, h, idx = _last_graph(position, inputs)
    assert xyz.shape == (2, 16, 3)  # 64 -> 32 -> 16 points after three FPS levels
    assert torch.equal(idx, knn_naive(xyz, 5))
    xyz_d, h_d, idx_d = _last_graph(default, inputs)
    assert torch.equal(xyz_d, xyz) and torch.equal(h_d, h)  # the same layer input
    assert torch.equal(idx_d, knn_naive(torch.cat([xyz, h], dim=-1), 5))
    assert not torch.equal(idx_d, idx)  # the appearance changes the neighbours
    with pytest.raises(ValueError, match="last_graph must be one of"):
        create_model("og-net-small", num_classes=3, last_graph="appearance")


def test_k1_model_trains_every_graph_conv_as_a_linear_layer():
    """k = 1 (OG-Net Fig. 7): every EdgeConv sees only the point itself; forward and backward."""
    torch.manual_seed(0)
    model = create_model("og-net-small", num_classes=4, init_points=64, k=1)
    model.train()
    out = model(*_inputs(model, n=80))
    assert out.feature.shape == (2, 512) and torch.isfinite(out.feature).all()
    (out.logits.square().sum() + out.feature.square().sum()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    _, _, idx = _last_graph(model.eval(), _inputs(model, n=80))
    assert torch.equal(idx[..., 0], torch.arange(16).expand(2, 16))


def test_classifier_init_and_reset():
    model = create_model("og-net-small", num_classes=11, init_points=256)
    w = model.get_classifier().weight
    assert w.shape == (11, 512) and w.abs().max() < 1e-5
    assert torch.all(model.get_classifier().bias == 0)
    model.reset_classifier(0)
    model.eval()
    with torch.no_grad():
        out = model(*_inputs(model, n=300))
    assert out.logits is None and out.feature.shape == (2, 512)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_model_pyg_backend_equals_dense(mode):
    torch.manual_seed(1)
    dense = OGNet(feature_dims=(8, 16, 16, 32), num_classes=5, k=6, num_convs=2, gated_residual=True, init_points=64)
    pyg = copy.deepcopy(dense)
    pyg.set_edge_backend("pyg")
    dense.train(mode == "train")
    pyg.train(mode == "train")
    inputs = _inputs(dense, b=4, n=100)
    # the pooled descriptors agree to float rounding; the batch-of-4 BN1d after them amplifies it
    assert torch.allclose(dense.forward_features(*inputs), pyg.forward_features(*inputs), atol=1e-4)
    torch.manual_seed(2)  # same dropout masks
    out1 = dense(*inputs)
    torch.manual_seed(2)
    out2 = pyg(*inputs)
    assert torch.allclose(out1.feature, out2.feature, atol=1e-3)
    assert torch.allclose(out1.logits, out2.logits, atol=1e-6)
    (out1.feature.sum() + out1.logits.sum()).backward()
    (out2.feature.sum() + out2.logits.sum()).backward()
    for (name, p1), p2 in zip(dense.named_parameters(), pyg.parameters()):
        assert torch.allclose(p1.grad, p2.grad, atol=1e-3, rtol=1e-3), name


def test_input_errors():
    model = create_model("og-net-small", num_classes=3)
    xyz, rgb = _inputs(model, n=700)
    with pytest.raises(ValueError, match=r"at least 768 points.*N=700"):
        model(xyz, rgb)
    xyz, rgb = _inputs(model, n=800)
    with pytest.raises(ValueError, match="rgb"):
        model(xyz, rgb[..., :2])
    bad = xyz.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="xyz contains NaN"):
        model(bad, rgb)
    with pytest.raises(ValueError, match="share"):
        model(xyz, rgb[:1])
    with pytest.raises(ValueError, match="edge_backend"):
        create_model("og-net", edge_backend="scatter")
    with pytest.raises(ValueError, match=r"k=20 exceeds the 16 points layer 3"):
        create_model("og-net", init_points=64)


def _small_step(monkeypatch, previous: bool, dtype, n: int):
    """Descriptor and parameter gradients of OG-Net-Small (train mode) under a fixed random
    loss on the descriptor, with the current or the previous implementation (knn_reference,
    max_pool_reference and the "dense" EdgeConv backend)."""
    monkeypatch.setattr(model_mod, "knn", knn_reference if previous else knn)
    monkeypatch.setattr(layers_mod, "max_pool", max_pool_reference if previous else max_pool)
    torch.manual_seed(0)
    model = create_model("og-net-small", num_classes=5, init_points=128).train().to(dtype)
    model.set_edge_backend("dense" if previous else "fused")
    xyz, rgb = (t.to(dtype) for t in _inputs(model, b=2, n=n, seed=1))
    rgb.requires_grad_(True)
    desc = model.forward_features(xyz, rgb)
    weight = torch.randn(desc.shape, generator=torch.Generator().manual_seed(8)).to(dtype)
    (desc * weight).sum().backward()
    grads = {name: p.grad.double() for name, p in model.named_parameters() if p.grad is not None}
    return desc.detach().double(), rgb.grad.double(), grads


@pytest.mark.parametrize("n", [300, 600])  # the KD-tree path on the first layer (N >= 256)
def test_og_net_small_forward_and_gradients_equal_the_previous_implementation(monkeypatch, n):
    """The fused EdgeConv is the same function as the previous implementation: in float64 both
    agree to ~1e-12; in float32 the new one is (median over parameters) within 1e-3 of the
    previous implementation's float64 values (the previous float32 path itself is off by up
    to ~5 % there: its BatchNorm2d sums 10^5 edge terms in float32), and closer to them than the previous float32 path."""
    new64 = _small_step(monkeypatch, False, torch.float64, n)
    old64 = _small_step(monkeypatch, True, torch.float64, n)
    new32 = _small_step(monkeypatch, False, torch.float32, n)
    old32 = _small_step(monkeypatch, True, torch.float32, n)
    assert torch.allclose(new64[0], old64[0], rtol=1e-10, atol=1e-10)
    assert torch.allclose(new64[1], old64[1], rtol=1e-8, atol=1e-10)
    assert new64[2].keys() == old64[2].keys()
    for name, g in old64[2].items():
        assert torch.allclose(new64[2][name], g, rtol=1e-8, atol=1e-9), name
    # float32: outputs as close to the previous float32 ones as rounding allows
    assert torch.allclose(new32[0], old32[0], rtol=1e-4, atol=1e-4)
    assert torch.allclose(new32[0], old64[0], rtol=1e-4, atol=1e-4)
    # the input gradient goes through every max: a float32 near-tie may pick another maximum
    # (seen at 1.3e-3 in a full-suite run), so the parameters' bound applies
    assert ((new32[1] - old64[1]).norm() / old64[1].norm()) < 5e-3
    errors, errors_old = [], []
    for name, g in old64[2].items():
        if g.norm() > 1e-3:  # conv biases before a BatchNorm have a zero gradient (rounding)
            errors.append(float((new32[2][name] - g).norm() / g.norm()))
            errors_old.append(float((old32[2][name] - g).norm() / g.norm()))
            # a float32 near-tie may route one maximum elsewhere (seen at 5.5e-3 on a gate bias
            # in a full-suite run): bounded by the previous float32 path's own error there
            assert errors[-1] < max(1e-2, 2 * errors_old[-1]), (name, errors[-1], errors_old[-1])
    # typically ~1e-5 (the previous float32 path: ~1e-3 to 1e-2)
    # (inside the full suite float32 results are noisier: a median of 1.09e-3 was seen there)
    assert sorted(errors)[len(errors) // 2] < 1e-2
    assert sorted(errors)[len(errors) // 2] < 2 * sorted(errors_old)[len(errors_old) // 2]
