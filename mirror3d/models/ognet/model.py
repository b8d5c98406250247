"""OG-Net (Omni-scale Graph Network) for point-cloud person re-id, as the authors' public code builds it.

OG-Net: Zheng, Zheng & Yang 2022, "Parameter-Efficient Person Re-identification in the 3D Space"
(IEEE TNNLS; arXiv:2006.04569), Sec. III (architecture); initialisation and the released
variants follow its code (github.com/layumi/person-reid-3d); the parameter counts are the paper's
(counted with ptflops, see :func:`count_paper_params`). Registered models
(:mod:`mirror3d.models.registry`, with ``input_kind="points"``, ``input_size=4096`` and the paper
counts as ``paper_params``):

==================  ==========================  ====  =====  ================  ==============
name                feature_dims                k     convs  gated residual    paper params
==================  ==========================  ====  =====  ================  ==============
``og-net``          64,128,256,512              20    1      no                1,951,734
``og-net-small``    48,96,192,384               20    1      no                1,200,829
``og-net-deep``     48,96,96,192,192,384,384    9     2      yes               2,470,477
==================  ==========================  ====  =====  ================  ==============

``model(xyz, rgb)`` returns a :class:`ReIDOutput` ``(logits, feature)``: ``logits`` (B, classes)
from the dropout + classifier, ``feature`` (B, 512) the BatchNorm1d embedding (the re-id
feature; in eval mode this is what retrieval uses). Only ``rgb`` enters as features; ``xyz``
builds the kNN graphs, drives FPS / ball query and gives the relative offsets in the branches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from mirror3d.models.ognet.layers import (
    EDGE_BACKENDS,
    EdgeConv,
    EmbeddingHead,
    GatedResidual,
    OmniScaleBranch,
    OmniScaleModule,
    PointwiseConv,
    init_classifier,
)
from mirror3d.models.ognet.ops import gather_points, knn
from mirror3d.models.registry import register_model

__all__ = [
    "DEFAULT_EDGE_BACKEND",
    "LAST_GRAPHS",
    "OGNet",
    "OGNetLayer",
    "PAPER_NUM_POINTS",
    "ReIDNetwork",
    "ReIDOutput",
    "count_paper_params",
    "init_weights",
    "og_net",
    "og_net_deep",
    "og_net_small",
]

#: EdgeConv backend used unless a model is built with ``edge_backend=...``. Chosen with
#: ``benchmarks/bench_ognet.py``: over OG-Net's four EdgeConvs at paper sizes (B=4, N0=4096,
#: k=20, forward+backward, 2 CPU cores) the dense path was 1.52-1.59x faster than the
#: torch-geometric path (the design keeps PyG unless dense is >= 1.5x faster); over the whole
#: model, where the omni-scale modules dominate, 1.13-1.25x. Issue 17: the ``"fused"`` backend
#: (BN and pooling folded into per-point maps, equal outputs and gradients) replaced ``"dense"``,
#: which stays as the previous implementation it is tested against.
DEFAULT_EDGE_BACKEND = "fused"


#: What the last layer's kNN graph is built on (Zheng et al. 2022, Sec. III and Table IV):
#: ``"position+appearance"`` = ``[xyz ; h]``, the paper's non-local graph (its default);
#: ``"position"`` = xyz only, as every other layer (the Table IV ablation, -1.15 mAP).
LAST_GRAPHS = ("position+appearance", "position")


class ReIDOutput(NamedTuple):
    """What a re-id model returns: ``logits`` (B, num_classes) or None, ``feature`` (B, D)."""

    logits: torch.Tensor | None
    feature: torch.Tensor


# ---------------------------------------------------------------------------------------------
# initialisation and parameter counting


def init_weights(module: nn.Module) -> None:
    """Reference initialisation (``utils.weights_init_kaiming``), for ``model.apply``.

    1×1 convs (:class:`PointwiseConv`, ``nn.Conv*``): Kaiming-normal fan_in, bias 0.
    Other ``nn.Linear``: Kaiming-normal fan_out, bias 0. Norm layers: weight ~ N(1, 0.02),
    bias 0. Classifiers are re-initialised afterwards by :func:`init_classifier`.
    """
    if isinstance(module, (PointwiseConv, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        nn.init.kaiming_normal_(module.weight, a=0, mode="fan_in")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        nn.init.kaiming_normal_(module.weight, a=0, mode="fan_out")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)):
        if module.weight is not None:
            nn.init.normal_(module.weight, mean=1.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


#: Module types whose parameters the paper's counter (ptflops) adds up.
_PAPER_COUNTED = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.GroupNorm,
    nn.LayerNorm,
)


def count_paper_params(model: nn.Module, include_classifier: bool = False) -> int:
    """Count parameters the way the OG-Net paper does (ptflops).

    Only the trainable parameters held directly by Conv / BatchNorm / Linear (and similar norm)
    modules count; bare ``nn.Parameter`` scalars (the max/mean mixes, residual gates) do not.
    The classifier (``model.get_classifier()``) is excluded unless ``include_classifier``.
    """
    skip: set[int] = set()
    if not include_classifier and hasattr(model, "get_classifier"):
        classifier = model.get_classifier()
        if classifier is not None:
            skip = {id(m) for m in classifier.modules()}
    total = 0
    for module in model.modules():
        if isinstance(module, _PAPER_COUNTED) and id(module) not in skip:
            total += sum(p.numel() for p in module.parameters(recurse=False) if p.requires_grad)
    return total


# ---------------------------------------------------------------------------------------------
# the network


class OGNetLayer(nn.Module):
    """One OG-Net layer: ``num_convs`` EdgeConvs (graph rebuilt before each), then an optional
    omni-scale downsampling, then (Deep) a gated residual.

    The kNN graph is built on xyz, or on ``[xyz ; h]`` (no rescaling) when
    ``feature_graph`` (the last layer). With a gated residual the shortcut is the layer input
    gathered at the FPS indices, projected by Linear(C_in -> C) + LeakyReLU(0.2), when the layer
    downsamples; otherwise the identity.

    Shapes: xyz (B, N, 3), h (B, N, C_in) -> xyz (B, N', 3), h (B, N', C_out), with
    N' = npoint when downsampling, else N.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        k: int,
        num_convs: int = 1,
        npoint: int | None = None,
        feature_graph: bool = False,
        gated_residual: bool = False,
        radii: Sequence[float] = (0.1, 0.2, 0.4),
        nsamples: Sequence[int] = (8, 16, 32),
        edge_backend: str = DEFAULT_EDGE_BACKEND,
        knn_chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        if npoint is None and gated_residual and in_channels != out_channels:
            raise ValueError(
                "an identity shortcut needs in_channels == out_channels, "
                f"got {in_channels} and {out_channels}"
            )
        self.k = int(k)
        self.feature_graph = bool(feature_graph)
        self.knn_chunk_size = knn_chunk_size
        self.convs = nn.ModuleList(
            EdgeConv(in_channels if i == 0 else out_channels, out_channels, backend=edge_backend)
            for i in range(num_convs)
        )
        self.downsample = (
            OmniScaleModule(out_channels, npoint, tuple(radii), tuple(nsamples),
                            fused=edge_backend == "fused")
            if npoint is not None
            else None
        )
        self.shortcut = (
            nn.Sequential(nn.Linear(in_channels, out_channels), nn.LeakyReLU(0.2))
            if gated_residual and npoint is not None
            else None
        )
        self.residual = GatedResidual() if gated_residual else None

    def forward(self, xyz: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h_in = h
        for conv in self.convs:
            graph_space = torch.cat([xyz, h], dim=-1) if self.feature_graph else xyz
            idx = knn(graph_space, self.k, chunk_size=self.knn_chunk_size)
            h = conv(h, idx)
        if self.downsample is not None:
            xyz, h, fps_idx = self.downsample(xyz, h)
            if self.residual is not None:
                # the reference recomputes FPS on the same xyz: deterministic, same indices
                shortcut = self.shortcut(gather_points(h_in, fps_idx))
                h = self.residual(shortcut, h)
        elif self.residual is not None:
            h = self.residual(h_in, h)
        return xyz, h


class ReIDNetwork(nn.Module):
    """Shared tail of the re-id networks (OG-Net and the 2D baseline): the embedding head, weight
    initialisation, and timm-style classifier helpers. Subclasses build their trunk, then call
    :meth:`_build_head`."""

    def _build_head(self, num_features: int, num_classes: int, embed_dim: int,
                    drop_rate: float) -> None:
        self.num_features = int(num_features)
        self.head = EmbeddingHead(self.num_features, num_classes, embed_dim=embed_dim,
                                  drop_rate=drop_rate)
        self.num_classes = int(num_classes)
        self.apply(init_weights)
        if self.head.classifier is not None:
            init_classifier(self.head.classifier)

    def get_classifier(self) -> nn.Module | None:
        return self.head.classifier

    def reset_classifier(self, num_classes: int) -> None:
        self.head.reset_classifier(num_classes)
        self.num_classes = int(num_classes)


class OGNet(ReIDNetwork):
    """OG-Net: EdgeConv layers with omni-scale (FPS + multi-radius ball query) downsampling and a
    re-id head (Zheng et al. 2022, Sec. III).

    Args:
        feature_dims: EdgeConv width of each layer.
        num_classes: identities for the classifier (0: no classifier, ``logits=None``).
        k: kNN neighbours (self included). ``k = 1`` leaves each point only itself: every
            EdgeConv becomes a per-point linear map (+ BN, LeakyReLU), the paper's "graph
            convolution replaced by a linear layer" (Fig. 7, Table IV).
        last_graph: what the last layer's graph is built on, one of :data:`LAST_GRAPHS`
            (``"position+appearance"``: ``[xyz ; h]``, the paper's non-local graph;
            ``"position"``: xyz only, Table IV's ablation).
        num_convs: EdgeConvs per layer (Deep: 2).
        gated_residual: Deep's gated layer skip.
        in_channels: per-point input features (rgb: 3).
        init_points: points after the first downsampling (input clouds need at least this many);
            halved (``// stride``) whenever the width grows.
        stride: see ``init_points``.
        radii, nsamples: ball-query branches of the omni-scale modules.
        embed_dim: re-id feature size.
        drop_rate: dropout before the classifier (not in place).
        edge_backend: ``"fused"`` (default), ``"dense"`` (the previous default) or ``"pyg"``
            (torch-geometric MessagePassing); same parameters and outputs.
        knn_chunk_size: query points per kNN block (None: automatic, ~16M distances).

    Forward: xyz (B, N, 3), rgb (B, N, in_channels) -> :class:`ReIDOutput`
    (logits (B, num_classes), feature (B, embed_dim)).
    """

    def __init__(
        self,
        feature_dims: Sequence[int] = (64, 128, 256, 512),
        num_classes: int = 751,
        k: int = 20,
        num_convs: int = 1,
        gated_residual: bool = False,
        in_channels: int = 3,
        init_points: int = 768,
        stride: int = 2,
        radii: Sequence[float] = (0.1, 0.2, 0.4),
        nsamples: Sequence[int] = (8, 16, 32),
        embed_dim: int = 512,
        drop_rate: float = 0.7,
        edge_backend: str = DEFAULT_EDGE_BACKEND,
        knn_chunk_size: int | None = None,
        last_graph: str = "position+appearance",
    ) -> None:
        super().__init__()
        dims = [int(d) for d in feature_dims]
        if not dims or min(dims) < 2:
            raise ValueError(f"feature_dims must be a non-empty sequence of ints >= 2, got {feature_dims!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        if num_convs < 1:
            raise ValueError(f"num_convs must be >= 1, got {num_convs!r}")
        if init_points < 1 or stride < 1:
            raise ValueError(f"init_points and stride must be >= 1, got {init_points!r} and {stride!r}")
        if edge_backend not in EDGE_BACKENDS:
            raise ValueError(f"edge_backend must be one of {EDGE_BACKENDS}, got {edge_backend!r}")
        if last_graph not in LAST_GRAPHS:
            raise ValueError(f"last_graph must be one of {LAST_GRAPHS}, got {last_graph!r}")
        self.feature_dims = tuple(dims)
        self.last_graph = last_graph
        self.in_channels = int(in_channels)
        self.init_points = int(init_points)
        self.k = int(k)
        self.num_classes = int(num_classes)

        layers = []
        npoint = self.init_points
        prev = self.in_channels
        for i, width in enumerate(dims):
            downsample = i == 0 or width != dims[i - 1]  # the first layer always counts as a change
            if i > 0 and self.k > npoint:  # this layer's graph runs on the previous npoint points
                raise ValueError(
                    f"k={self.k} exceeds the {npoint} points layer {i} builds its graph on; "
                    f"lower k or raise init_points"
                )
            if i > 0 and width > dims[i - 1]:
                npoint = max(1, npoint // stride)
            layers.append(
                OGNetLayer(
                    prev,
                    width,
                    k=self.k,
                    num_convs=num_convs,
                    npoint=npoint if downsample else None,
                    feature_graph=i == len(dims) - 1 and last_graph == "position+appearance",
                    gated_residual=gated_residual,
                    radii=radii,
                    nsamples=nsamples,
                    edge_backend=edge_backend,
                    knn_chunk_size=knn_chunk_size,
                )
            )
            prev = width
        self.layers = nn.ModuleList(layers)
        # [max ; mean] over points
        self._build_head(2 * dims[-1], num_classes, embed_dim, drop_rate)

    def set_edge_backend(self, backend: str) -> None:
        """Switch every EdgeConv to ``"fused"``, ``"dense"`` or ``"pyg"`` (same weights); the
        omni-scale branches' fused tail (:class:`OmniScaleBranch` ``fused``) is on with
        ``"fused"`` and off otherwise (``"dense"`` is the previous implementation)."""
        if backend not in EDGE_BACKENDS:
            raise ValueError(f"backend must be one of {EDGE_BACKENDS}, got {backend!r}")
        for module in self.modules():
            if isinstance(module, EdgeConv):
                module.backend = backend
            elif isinstance(module, OmniScaleBranch):
                module.fused = backend == "fused"

    # -- forward -----------------------------------------------------------------------------
    def _check_inputs(self, xyz: torch.Tensor, rgb: torch.Tensor) -> None:
        for name, t, c in (("xyz", xyz, 3), ("rgb", rgb, self.in_channels)):
            if not isinstance(t, torch.Tensor) or t.dim() != 3 or t.shape[-1] != c:
                raise ValueError(f"{name} must have shape (B, N, {c}), got {tuple(getattr(t, 'shape', ()))}")
            if not t.is_floating_point():
                raise ValueError(f"{name} must be floating point, got dtype {t.dtype}")
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"{name} contains NaN or inf values")
        if xyz.shape[:2] != rgb.shape[:2]:
            raise ValueError(
                f"xyz and rgb must share (B, N), got {tuple(xyz.shape[:2])} and {tuple(rgb.shape[:2])}"
            )
        if xyz.shape[1] < self.init_points:
            raise ValueError(
                f"OG-Net needs at least {self.init_points} points per cloud (its first FPS level), "
                f"got N={xyz.shape[1]}"
            )

    def forward_features(self, xyz: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
        """xyz (B, N, 3), rgb (B, N, C_in) -> pooled [max ; mean] descriptor (B, 2·C_last)."""
        self._check_inputs(xyz, rgb)
        h = rgb
        for layer in self.layers:
            xyz, h = layer(xyz, h)
        return torch.cat([h.amax(dim=1), h.mean(dim=1)], dim=-1)

    def forward(self, xyz: torch.Tensor, rgb: torch.Tensor) -> ReIDOutput:
        logits, feature = self.head(self.forward_features(xyz, rgb))
        return ReIDOutput(logits, feature)


# ---------------------------------------------------------------------------------------------
# registry entries: the settings of the authors' released snapshots (Zheng et al. 2022, code)

#: Points per input cloud of the paper's setting: a 128x64 Market-1501 crop lifted to 8,192
#: points, half of them kept (the reference loader's ``slim = 0.5``).
PAPER_NUM_POINTS = 4096


@register_model("og-net", input_kind="points", input_size=PAPER_NUM_POINTS, paper_params=1_951_734)
def og_net(num_classes: int = 751, k: int = 20, **kwargs) -> OGNet:
    """OG-Net: widths 64-128-256-512, k = 20 (1,951,734 paper-style parameters)."""
    return OGNet(feature_dims=(64, 128, 256, 512), num_classes=num_classes, k=k, **kwargs)


@register_model("og-net-small", input_kind="points", input_size=PAPER_NUM_POINTS,
                paper_params=1_200_829)
def og_net_small(num_classes: int = 751, k: int = 20, **kwargs) -> OGNet:
    """OG-Net-Small: widths 48-96-192-384, k = 20 (1,200,829 paper-style parameters)."""
    return OGNet(feature_dims=(48, 96, 192, 384), num_classes=num_classes, k=k, **kwargs)


@register_model("og-net-deep", input_kind="points", input_size=PAPER_NUM_POINTS,
                paper_params=2_470_477)
def og_net_deep(num_classes: int = 751, k: int = 9, **kwargs) -> OGNet:
    """OG-Net-Deep: widths 48-96-96-192-192-384-384, two EdgeConvs per layer, gated residuals,
    k = 9 (2,470,477 paper-style parameters)."""
    kwargs.setdefault("num_convs", 2)
    kwargs.setdefault("gated_residual", True)
    return OGNet(
        feature_dims=(48, 96, 96, 192, 192, 384, 384), num_classes=num_classes, k=k, **kwargs
    )
