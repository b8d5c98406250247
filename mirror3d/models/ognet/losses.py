"""The metric-learning losses of the re-id models: circle loss and the batch-hard triplet loss.

Circle loss (Sun et al. 2020, "Circle Loss: A Unified Perspective of Pair Similarity
Optimization", CVPR) in its pair-wise form, as OG-Net's public code trains with it (Zheng et al.
2022).

On L2-normalised features, pairs are the upper triangle (i < j) of the batch cosine matrix;
positive pairs share a label. With margin m and scale γ:

    α_p = [1 + m − s_p]₊,  α_n = [s_n + m]₊       (both detached)
    loss = softplus( LSE(γ α_n (s_n − m)) + LSE(−γ α_p (s_p − (1 − m))) )

A batch without a positive pair (or without a negative pair) gives 0 (the reference's
LSE(∅) = −∞), returned as a zero that still carries a graph, never NaN. The reference trainer
divides this value by the batch size; this module does not.

Batch-hard triplet loss (Hermans, Beyer & Leibe 2017, "In Defense of the Triplet Loss for Person
Re-Identification", its "batch hard" variant): per anchor, the farthest positive and the nearest
negative of the batch, hinged with a margin.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CircleLoss", "batch_hard_triplet", "circle_loss"]


def _check(features: torch.Tensor, labels: torch.Tensor) -> None:
    if not isinstance(features, torch.Tensor) or features.dim() != 2 or not features.is_floating_point():
        got = getattr(features, "shape", type(features))
        raise ValueError(f"features must be a floating-point (B, D) tensor, got {got}")
    if not bool(torch.isfinite(features).all()):
        raise ValueError("features contains NaN or inf values")
    if (
        not isinstance(labels, torch.Tensor)
        or labels.dim() != 1
        or labels.shape[0] != features.shape[0]
        or labels.is_floating_point()
        or labels.is_complex()
        or labels.dtype == torch.bool
    ):
        raise ValueError(
            f"labels must be an integer (B,) tensor with B={features.shape[0]}, "
            f"got {getattr(labels, 'shape', type(labels))} ({getattr(labels, 'dtype', '')})"
        )


def circle_loss(
    features: torch.Tensor,
    labels: torch.Tensor,
    margin: float = 0.25,
    gamma: float = 64.0,
    normalize: bool = True,
) -> torch.Tensor:
    """Pair-wise circle loss of one batch.

    Args:
        features: (B, D) embeddings (L2-normalised here when ``normalize``).
        labels: (B,) integer identities.
        margin: m (relaxation), default 0.25.
        gamma: γ (scale), default 64.
        normalize: L2-normalise the features first.

    Returns:
        scalar tensor (0 with a graph when the batch has no positive or no negative pair).
    """
    _check(features, labels)
    f = F.normalize(features, dim=1) if normalize else features
    b = f.shape[0]
    rows, cols = torch.triu_indices(b, b, offset=1, device=f.device)
    sim = (f[rows] * f[cols]).sum(-1)
    same = labels[rows] == labels[cols]
    s_p, s_n = sim[same], sim[~same]
    if s_p.numel() == 0 or s_n.numel() == 0:
        return f.sum() * 0.0
    alpha_p = torch.clamp_min(1.0 + margin - s_p.detach(), 0.0)
    alpha_n = torch.clamp_min(s_n.detach() + margin, 0.0)
    logit_p = -gamma * alpha_p * (s_p - (1.0 - margin))
    logit_n = gamma * alpha_n * (s_n - margin)
    return F.softplus(torch.logsumexp(logit_n, dim=0) + torch.logsumexp(logit_p, dim=0))


class CircleLoss(nn.Module):
    """Module form of :func:`circle_loss`: ``CircleLoss(margin=0.25, gamma=64)(features, labels)``."""

    def __init__(self, margin: float = 0.25, gamma: float = 64.0, normalize: bool = True) -> None:
        super().__init__()
        if not 0.0 <= margin < 1.0:
            raise ValueError(f"margin must lie in [0, 1), got {margin!r}")
        if gamma <= 0:
            raise ValueError(f"gamma must be positive, got {gamma!r}")
        self.margin = float(margin)
        self.gamma = float(gamma)
        self.normalize = bool(normalize)

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return circle_loss(features, labels, self.margin, self.gamma, self.normalize)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, gamma={self.gamma}, normalize={self.normalize}"


def batch_hard_triplet(features: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Batch-hard triplet loss on L2-normalised features (Hermans et al. 2017).

    For each anchor with at least one positive and one negative in the batch:
    ``[max_p d(a, p) − min_n d(a, n) + margin]₊`` with Euclidean ``d``; the mean over those
    anchors. Returns a zero that still carries a graph when no anchor has both.

    Args:
        features: (B, D) embeddings (normalised here).
        labels: (B,) integer identities.
        margin: the hinge margin.
    """
    f = F.normalize(features, dim=1)
    d = torch.cdist(f, f)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=f.device)
    pos = same & ~eye
    if not pos.any() or same.all():
        return f.sum() * 0.0
    hardest_pos = torch.where(pos, d, torch.zeros_like(d)).amax(1)
    hardest_neg = torch.where(~same, d, torch.full_like(d, float("inf"))).amin(1)
    valid = pos.any(1) & (~same).any(1)
    return F.relu(hardest_pos - hardest_neg + margin)[valid].mean()
