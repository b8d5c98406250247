"""OG-Net building blocks (Zheng et al. 2022, "Parameter-Efficient Person Re-identification in
the 3D Space", Sec. III: EdgeConv, omni-scale module, embedding head), as its public code builds them.

Point features are channel-last, ``(B, N, C)``. The reference's 1×1 ``Conv2d`` layers are
:class:`PointwiseConv` (a ``Linear`` on the last axis: same parameters, same count), and its
``BatchNorm2d`` layers keep their type and are applied over every leading position with
:func:`batch_norm_last`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import scatter

from mirror3d.models.ognet.ops import ball_query_multiscale, farthest_point_sample, gather_points

__all__ = [
    "EDGE_BACKENDS",
    "ChannelGate",
    "EdgeConv",
    "EmbeddingHead",
    "GatedResidual",
    "MaxMeanPool",
    "OmniScaleBranch",
    "OmniScaleModule",
    "PointwiseConv",
    "batch_norm_last",
    "gather_max_sum",
    "gather_max_sum_reference",
    "init_classifier",
    "knn_edge_index",
    "linear_max",
    "linear_max_reference",
    "max_pool",
    "max_pool_reference",
]

EDGE_BACKENDS = ("fused", "dense", "pyg")


class PointwiseConv(nn.Linear):
    """A 1×1 convolution on channel-last features: (..., C_in) -> (..., C_out).

    The reference uses ``Conv2d(kernel_size=1)`` on (B, C, N, k) tensors; this is the same map
    and the same parameters (weight (C_out, C_in), optional bias), initialised like a conv
    (Kaiming-normal, fan_in) by :func:`mirror3d.models.ognet.model.init_weights`.
    """


def batch_norm_last(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Apply a BatchNorm over all leading positions of a channel-last tensor.

    Statistics are per channel over every position, exactly as ``BatchNorm2d`` on the
    channel-first (B, C, N, k) tensor of the reference.

    Args:
        bn: a BatchNorm module with ``num_features == C``.
        x: (..., C).

    Returns:
        (..., C).
    """
    c = x.shape[-1]
    flat = x.reshape(-1, c)
    # (M, C) viewed as (1, C, M, 1): a channels-last view, no copy; BatchNorm1d takes (M, C)
    y = bn(flat.t().unsqueeze(0).unsqueeze(-1)) if isinstance(bn, nn.BatchNorm2d) else bn(flat)
    if y.dim() == 4:
        y = y.squeeze(-1).squeeze(0).t()
    return y.reshape(x.shape)


def max_pool(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Max over ``dim``: (..., k, ...) -> the same shape without ``dim``.

    The backward routes each output's gradient to one maximal entry (``torch.max``'s index)
    instead of splitting it evenly among tied entries as :func:`max_pool_reference`
    (``amax``, the previous implementation) does; that split costs two float-mask passes over
    the whole input (measured: ~20 % of an EdgeConv's forward+backward). The two agree exactly
    without ties, and where tied entries are copies of one value computed by the same
    (linear-in-the-gradient) path, e.g. a ball query's padded duplicates or ReLU zeros (no
    gradient), the gradients of the inputs and parameters agree up to float rounding.
    """
    return x.max(dim=dim).values


def max_pool_reference(x: torch.Tensor, dim: int) -> torch.Tensor:
    """The previous :func:`max_pool` (``amax``: the gradient split evenly among ties)."""
    return x.amax(dim=dim)


class MaxMeanPool(nn.Module):
    """Learnable mix of max and mean pooling: ``w·max + (1 − w)·mean``, ``w = sigmoid(p)``.

    The reference calls this "GeM" (flag ``--gem``), but it is not generalized-mean pooling. One
    scalar ``p`` per module, initialised to 0 (w = 0.5).
    """

    def __init__(self) -> None:
        super().__init__()
        self.logit = nn.Parameter(torch.zeros(()))

    def mix(self, x_max: torch.Tensor, x_mean: torch.Tensor) -> torch.Tensor:
        """Combine precomputed max and mean poolings of the same shape."""
        w = torch.sigmoid(self.logit).to(x_max.dtype)
        return w * x_max + (1.0 - w) * x_mean

    def forward(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """x: (..., k, ...) -> the same shape without ``dim``."""
        return self.mix(max_pool(x, dim), x.mean(dim=dim))


class ChannelGate(nn.Module):
    """Per-position channel gate: ``x · sigmoid(W₂ swish(W₁ x + b₁) + b₂)``.

    The reference calls it an "SE" block, but nothing is squeezed over points or neighbours:
    each position is gated from its own channels. Hidden width
    ``max(1, channels // reduction)``.

    Shapes: x (..., C) -> (..., C).
    """

    def __init__(self, channels: int, reduction: int = 24) -> None:
        super().__init__()
        hidden = max(1, int(channels / reduction))
        self.reduce = PointwiseConv(channels, hidden, bias=True)
        self.expand = PointwiseConv(hidden, channels, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.expand(F.silu(self.reduce(x))))


def knn_edge_index(idx: torch.Tensor) -> torch.Tensor:
    """Turn a per-cloud neighbour table into one batched PyG ``edge_index``.

    Args:
        idx: (B, N, k) neighbour indices (``idx[b, i]`` are the neighbours j of point i).

    Returns:
        (2, B·N·k) long: row 0 the source (neighbour j), row 1 the target (centre i), nodes
        numbered ``b·N + i``; edges ordered by (b, i, neighbour slot).
    """
    b, n, k = idx.shape
    offset = (torch.arange(b, device=idx.device) * n).view(b, 1, 1)
    src = (idx + offset).reshape(-1)
    dst = torch.arange(b * n, device=idx.device).repeat_interleave(k)
    return torch.stack([src, dst])


#: Elements of one gathered (rows, k, C) block in :func:`gather_max_sum` (4 MB in float32: the
#: block stays in cache and its memory is reused instead of freshly mapped each step).
_GATHER_BLOCK_ELEMENTS = 1 << 20


class _GatherMaxSum(torch.autograd.Function):
    """Max and sum over each row's k gathered source rows, block by block, without keeping the
    gathered (rows·k, C) tensor for the backward (see :func:`gather_max_sum`)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, flat: torch.Tensor, k: int):
        rows = flat.numel() // k
        c = x.shape[1]
        x_max = x.new_empty(rows, c)
        x_sum = x.new_empty(rows, c)
        step = max(1, _GATHER_BLOCK_ELEMENTS // max(1, k * c))
        for start in range(0, rows, step):
            stop = min(rows, start + step)
            g = x.index_select(0, flat[start * k : stop * k]).view(stop - start, k, c)
            torch.amax(g, dim=1, out=x_max[start:stop])
            torch.sum(g, dim=1, out=x_sum[start:stop])
        ctx.save_for_backward(x, flat, x_max)
        ctx.k = k
        return x_max, x_sum

    @staticmethod
    def backward(ctx, grad_max: torch.Tensor, grad_sum: torch.Tensor):
        x, flat, x_max = ctx.saved_tensors
        k = ctx.k
        rows, c = x_max.shape
        grad = torch.zeros_like(x)
        step = max(1, _GATHER_BLOCK_ELEMENTS // max(1, k * c))
        for start in range(0, rows, step):
            stop = min(rows, start + step)
            src = flat[start * k : stop * k]
            edge = None
            if grad_max is not None:
                # the max's gradient split evenly among the tied maxima (as ``amax``)
                g = x.index_select(0, src).view(stop - start, k, c)
                hit = g == x_max[start:stop].unsqueeze(1)
                share = grad_max[start:stop] / hit.sum(dim=1)
                edge = hit * share.unsqueeze(1)
            if grad_sum is not None:
                gs = grad_sum[start:stop].unsqueeze(1)
                edge = gs.expand(stop - start, k, c) if edge is None else edge.add_(gs)
            if edge is not None:
                grad.index_add_(0, src, edge.reshape(-1, c))
        return grad, None, None


def gather_max_sum(x: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-point max and sum of the neighbours' rows.

    ``x_max[b, i] = max_t x[b, idx[b, i, t]]`` and ``x_sum[b, i] = sum_t x[b, idx[b, i, t]]``
    (per channel), equal to ``gather_points(x, idx).amax(2)`` and ``.sum(2)`` (see
    :func:`gather_max_sum_reference`), with the same gradients up to float rounding (the max's
    gradient split evenly among tied maxima, as ``amax`` and :func:`max_pool_reference`). The
    gathered (B, N', k, C) tensor and its gradient are never built whole: both directions work
    on blocks of ~1M elements (the backward gathers again instead of storing).

    Shapes: x (B, N, C), idx (B, N', k) long -> x_max (B, N', C), x_sum (B, N', C).
    """
    b, n, c = x.shape
    k = idx.shape[-1]
    offset = torch.arange(b, device=idx.device, dtype=torch.long).view(b, 1, 1) * n
    flat = (idx.long() + offset).reshape(-1)
    x_max, x_sum = _GatherMaxSum.apply(x.reshape(b * n, c), flat, k)
    return x_max.view(*idx.shape[:2], c), x_sum.view(*idx.shape[:2], c)


def gather_max_sum_reference(x: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain reference for :func:`gather_max_sum`: gather (B, N', k, C), then max and sum."""
    g = gather_points(x, idx)
    return g.amax(dim=2), g.sum(dim=2)


def _bn_affine(bn: nn.modules.batchnorm._BatchNorm, mean: torch.Tensor | None,
               var: torch.Tensor | None, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(scale, shift)`` (float64) with ``bn(y) = y * scale + shift``: from the batch
    ``mean`` / biased ``var`` (C,) of ``count`` elements per channel — updating ``bn``'s running
    statistics exactly as ``BatchNorm`` does in training — or, when ``mean`` is None, from the
    running statistics (evaluation)."""
    if mean is not None:
        if bn.training and bn.track_running_stats and bn.running_mean is not None:
            with torch.no_grad():
                bn.num_batches_tracked.add_(1)
                factor = (1.0 / float(bn.num_batches_tracked)) if bn.momentum is None else bn.momentum
                bn.running_mean.mul_(1 - factor).add_(mean.detach().to(bn.running_mean.dtype), alpha=factor)
                unbiased = var.detach() * (count / (count - 1))
                bn.running_var.mul_(1 - factor).add_(unbiased.to(bn.running_var.dtype), alpha=factor)
    else:
        mean, var = bn.running_mean.double(), bn.running_var.double()
    inv = torch.rsqrt(var + bn.eps)
    if bn.affine:
        scale = bn.weight.double() * inv
        return scale, bn.bias.double() - mean * scale
    return inv, -mean * inv


def _edge_batch_norm_pool(
    bn: nn.modules.batchnorm._BatchNorm, pool: MaxMeanPool, neighbour: torch.Tensor,
    centre: torch.Tensor, idx: torch.Tensor, gather=None,
) -> torch.Tensor:
    """``pool(BN(e), k)`` for the edge features ``e[b, i, t] = neighbour[b, idx[b, i, t]] +
    centre[b, i]`` without building the BN's (B, N, k, C) input or output.

    BN is a per-channel affine map ``y = s·e + o`` (``s = γ/√(var + ε)``; batch statistics over
    all B·N·k edges in training, as ``BatchNorm2d`` on the (B, C, N, k) tensor, running ones in
    eval). So ``max_t y = s·(c_i + max_t n_j) + o`` where ``s ≥ 0`` and ``s·(c_i + min_t n_j) + o``
    where ``s < 0`` (the min is taken as a max of ``−n``), and ``mean_t y = s·(c_i + Σ_t n_j / k)
    + o``. The batch statistics come from per-point sums in float64:
    ``Σ e = Σ_i S_i + k Σ_i c_i`` and ``Σ e² = Σ_j deg_j n_j² + 2 Σ_i c_i·S_i + k Σ_i c_i²``
    (``S_i = Σ_t n_j``, ``deg_j`` = how often j is a neighbour). The running statistics are
    updated as ``BatchNorm2d`` does (momentum, unbiased variance, ``num_batches_tracked``).

    Shapes: neighbour (B, N, C), centre (B, N, C), idx (B, N, k) -> (B, N, C).
    """
    gather = gather_max_sum if gather is None else gather
    b, n, k = idx.shape
    c = neighbour.shape[-1]
    count = b * n * k
    if bn.affine:
        sign = torch.where(bn.weight.detach() < 0, -1.0, 1.0).to(neighbour.dtype)
        n_max, n_sum = gather(neighbour * sign, idx)
        n_max, n_sum = n_max * sign, n_sum * sign  # negation is exact
    else:
        n_max, n_sum = gather(neighbour, idx)
    use_batch = bn.training or (bn.running_mean is None and bn.running_var is None)
    mean = var = None  # None: the running statistics (evaluation)
    if use_batch:
        if count <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got {count}")
        offset = torch.arange(b, device=idx.device, dtype=torch.long).view(b, 1, 1) * n
        deg = torch.bincount((idx.long() + offset).reshape(-1), minlength=b * n)
        nd, cd, sd = neighbour.double().reshape(-1, c), centre.double().reshape(-1, c), n_sum.double().reshape(-1, c)
        mean = (sd.sum(0) + k * cd.sum(0)) / count
        sq = (deg.to(nd.dtype) @ (nd * nd)) + 2.0 * (cd * sd).sum(0) + k * (cd * cd).sum(0)
        var = (sq / count - mean * mean).clamp(min=0.0)
    scale, shift = _bn_affine(bn, mean, var, count)
    scale, shift = scale.to(neighbour.dtype), shift.to(neighbour.dtype)
    y_max = (centre + n_max) * scale + shift
    y_mean = (centre + n_sum / k) * scale + shift
    return pool.mix(y_max, y_mean)


class _LinearMax(torch.autograd.Function):
    """``max_t (x[:, t] @ W^T)`` block by block, the (G, T, C_out) product never stored, only
    a bool mask of its maxima (see :func:`linear_max`)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor):
        g, t, _ = x.shape
        c_out = weight.shape[0]
        out = x.new_empty(g, c_out)
        hit = torch.empty(g, t, c_out, dtype=torch.bool, device=x.device)
        step = max(1, _GATHER_BLOCK_ELEMENTS // max(1, t * c_out))
        for start in range(0, g, step):
            stop = min(g, start + step)
            y = torch.matmul(x[start:stop], weight.t())  # (g', T, C_out)
            torch.amax(y, dim=1, out=out[start:stop])
            torch.eq(y, out[start:stop].unsqueeze(1), out=hit[start:stop])
        ctx.save_for_backward(x, weight, hit)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight, hit = ctx.saved_tensors
        g, t, c_in = x.shape
        c_out = weight.shape[0]
        need_x, need_w = ctx.needs_input_grad[:2]
        grad_x = torch.empty_like(x) if need_x else None
        grad_w = torch.zeros_like(weight) if need_w else None
        step = max(1, _GATHER_BLOCK_ELEMENTS // max(1, t * c_out))
        for start in range(0, g, step):
            stop = min(g, start + step)
            hb = hit[start:stop]
            # the gradient split evenly among tied maxima (as ``amax``)
            share = grad_out[start:stop] / hb.sum(dim=1)
            gy = hb * share.unsqueeze(1)  # (g', T, C_out)
            if need_x:
                torch.matmul(gy, weight, out=grad_x[start:stop])
            if need_w:
                grad_w.addmm_(gy.reshape(-1, c_out).t(), x[start:stop].reshape(-1, c_in))
        return grad_x, grad_w


def linear_max(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Max over the group axis of a bias-free linear map: ``F.linear(x, weight).amax(-2)``.

    Equal to :func:`linear_max_reference` (same products, same maxima; the gradient split
    evenly among tied maxima as ``amax``), computed on blocks of ~1M output elements: the
    (..., T, C_out) product is never stored whole, only a bool mask of where the maxima are.

    Shapes: x (..., T, C_in), weight (C_out, C_in) -> (..., C_out).
    """
    lead = x.shape[:-2]
    t, c_in = x.shape[-2:]
    out = _LinearMax.apply(x.reshape(-1, t, c_in), weight)
    return out.view(*lead, weight.shape[0])


def linear_max_reference(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Plain reference for :func:`linear_max`."""
    return F.linear(x, weight).amax(dim=-2)


def _linear_batch_norm_relu_max(
    bn: nn.modules.batchnorm._BatchNorm, weight: torch.Tensor, x: torch.Tensor
) -> torch.Tensor:
    """``relu(BN(F.linear(x, weight))).amax(-2)`` without the (..., T, C_out) tensors.

    The BN is a per-channel affine map ``s·y + o`` (batch statistics over every position in
    training, as ``BatchNorm2d`` over the (B, C, S, T) tensor; running ones in eval), ReLU is
    monotone, so the max over T is ``relu(s·max_t y + o)`` where ``s ≥ 0`` and
    ``relu(s·min_t y + o)`` where ``s < 0`` (a max of the product with the sign-flipped rows of
    ``weight``). The batch statistics of ``y = W x`` come from x's first two moments in float64:
    ``mean = W μ``, ``E[y_c²] = w_c^T E[x x^T] w_c``. Running statistics as ``BatchNorm2d``.

    Shapes: x (..., T, C_in), weight (C_out, C_in) -> (..., C_out).
    """
    c_in = x.shape[-1]
    count = x.numel() // c_in
    if bn.affine:
        sign = torch.where(bn.weight.detach() < 0, -1.0, 1.0).to(x.dtype)
        y_max = linear_max(x, weight * sign[:, None]) * sign
    else:
        y_max = linear_max(x, weight)
    use_batch = bn.training or (bn.running_mean is None and bn.running_var is None)
    mean = var = None  # None: the running statistics (evaluation)
    if use_batch:
        if count <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got {count}")
        flat = x.reshape(-1, c_in)
        mu = flat.sum(0).double() / count  # (C_in,)
        second = (flat.t() @ flat).double() / count  # (C_in, C_in), E[x x^T]
        wd = weight.double()
        mean = wd @ mu
        var = ((wd @ second) * wd).sum(-1) - mean * mean
        var = var.clamp(min=0.0)
    scale, shift = _bn_affine(bn, mean, var, count)
    return F.relu(y_max * scale.to(x.dtype) + shift.to(x.dtype))


class EdgeConv(MessagePassing):
    """DGCNN edge convolution as OG-Net uses it.

    For each point i and neighbour j (self included): ``e_ij = [h_j − h_i ; h_i]`` ->
    1×1 conv with bias -> BatchNorm2d over all edges -> :class:`MaxMeanPool` over the k
    neighbours -> LeakyReLU(0.2).

    The conv is applied as ``W_a h_j + (W_b − W_a) h_i + b`` (with ``W = [W_a | W_b]``), i.e.
    the C_out-wide projections are computed per point and then gathered, instead of building
    the 2·C_in-wide edge tensor; the result is the same map.

    With k = 1 the only neighbour is the point itself, ``e_ii = [0 ; h_i]``: the EdgeConv is
    the per-point linear map ``W_b h_i + b`` -> BN over the points -> LeakyReLU (the pooling over
    one neighbour is the identity), the OG-Net paper's k = 1 "linear layer" (Fig. 7, Table IV).

    Three interchangeable backends with the same parameters:

    * ``"fused"`` (default): BN and pooling folded into per-point maps
      (:func:`_edge_batch_norm_pool`): only the neighbours' max and sum are gathered (block by
      block, :func:`gather_max_sum`), the BN statistics come from per-point sums; no
      (B, N, k, C) tensor is stored;
    * ``"dense"`` (the previous default, kept as the reference): gather neighbours into
      (B, N, k, C_out), BN, pool over k;
    * ``"pyg"``: torch-geometric ``MessagePassing`` over an explicit ``edge_index``; BN is
      applied to the (E, C_out) message tensor, so its statistics cover the same edges.

    Shapes: h (B, N, C_in), idx (B, N, k) -> (B, N, C_out).
    """

    def __init__(self, in_channels: int, out_channels: int, backend: str = "fused") -> None:
        super().__init__(aggr="max", flow="source_to_target", node_dim=0)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.conv = PointwiseConv(2 * in_channels, out_channels, bias=True)
        self.bn = nn.BatchNorm2d(out_channels)
        self.pool = MaxMeanPool()
        self.act = nn.LeakyReLU(0.2)
        self.backend = backend

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        if value not in EDGE_BACKENDS:
            raise ValueError(f"backend must be one of {EDGE_BACKENDS}, got {value!r}")
        self._backend = value

    def _projections(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w_diff, w_centre = self.conv.weight.split(self.in_channels, dim=1)
        neighbour = F.linear(h, w_diff)  # multiplies h_j
        centre = F.linear(h, w_centre - w_diff, self.conv.bias)  # multiplies h_i
        return neighbour, centre

    def forward(self, h: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if h.dim() != 3 or h.shape[-1] != self.in_channels:
            raise ValueError(f"h must have shape (B, N, {self.in_channels}), got {tuple(h.shape)}")
        if idx.dim() != 3 or idx.shape[:2] != h.shape[:2]:
            raise ValueError(
                f"idx must have shape (B, N, k) with (B, N)={tuple(h.shape[:2])}, got {tuple(idx.shape)}"
            )
        neighbour, centre = self._projections(h)
        if self.backend == "fused":
            out = _edge_batch_norm_pool(self.bn, self.pool, neighbour, centre, idx)
        elif self.backend == "dense":
            edges = gather_points(neighbour, idx) + centre.unsqueeze(2)  # (B, N, k, C)
            out = self.pool(batch_norm_last(self.bn, edges), dim=2)
        else:
            b, n, _ = h.shape
            out = self.propagate(
                knn_edge_index(idx),
                neighbour=neighbour.reshape(b * n, -1),
                centre=centre.reshape(b * n, -1),
                size=(b * n, b * n),
            ).view(b, n, -1)
        return self.act(out)

    # -- torch-geometric hooks (backend "pyg") --------------------------------------------
    def message(self, neighbour_j: torch.Tensor, centre_i: torch.Tensor) -> torch.Tensor:
        return neighbour_j + centre_i  # (E, C): the conv output on every edge

    def aggregate(
        self, inputs: torch.Tensor, index: torch.Tensor, dim_size: int | None = None
    ) -> torch.Tensor:
        z = batch_norm_last(self.bn, inputs)  # BN over all E edges, before aggregation
        x_max = scatter(z, index, dim=0, dim_size=dim_size, reduce="max")
        x_mean = scatter(z, index, dim=0, dim_size=dim_size, reduce="mean")
        return self.pool.mix(x_max, x_mean)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, backend={self.backend!r}"

    __repr__ = nn.Module.__repr__  # show the layers, not MessagePassing's one-liner


class OmniScaleBranch(nn.Module):
    """One ball-query branch of the omni-scale module (a PointNet++ MSG branch).

    ``[xyz_j − centre ; h_j]`` -> 1×1 conv (C+3 -> C/2, no bias) -> BN -> :class:`ChannelGate`
    -> 1×1 conv (C/2 -> C, no bias) -> BN -> ReLU -> max over the group. No activation between
    the first BN and the gate (as the reference). The first conv is applied per point before
    grouping (the xyz part after), which is the same map.

    With ``fused`` (default) the tail conv2 -> BN -> ReLU -> max is computed as
    :func:`_linear_batch_norm_relu_max` (BN and ReLU after the max, statistics from moments);
    ``fused=False`` is the previous implementation, kept as the reference.

    Shapes: xyz (B, N, 3), h (B, N, C), new_xyz (B, S, 3), group_idx (B, S, nsample)
    -> (B, S, C).
    """

    def __init__(self, channels: int, radius: float, nsample: int, fused: bool = True) -> None:
        super().__init__()
        mid = channels // 2
        self.radius = float(radius)
        self.nsample = int(nsample)
        self.conv1 = PointwiseConv(channels + 3, mid, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.gate = ChannelGate(mid)
        self.conv2 = PointwiseConv(mid, channels, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.fused = bool(fused)

    def forward(
        self, xyz: torch.Tensor, h: torch.Tensor, new_xyz: torch.Tensor, group_idx: torch.Tensor
    ) -> torch.Tensor:
        w_xyz, w_feat = self.conv1.weight.split([3, self.conv1.in_features - 3], dim=1)
        grouped = gather_points(F.linear(h, w_feat), group_idx)  # (B, S, ns, C/2)
        rel = gather_points(xyz, group_idx) - new_xyz.unsqueeze(2)  # not divided by the radius
        g = batch_norm_last(self.bn1, grouped + F.linear(rel, w_xyz))
        g = self.gate(g)
        if self.fused:
            return _linear_batch_norm_relu_max(self.bn2, self.conv2.weight, g)
        g = F.relu(batch_norm_last(self.bn2, self.conv2(g)))
        return max_pool(g, 2)

    def extra_repr(self) -> str:
        return f"radius={self.radius}, nsample={self.nsample}, fused={self.fused}"


class OmniScaleModule(nn.Module):
    """Omni-scale downsampling: FPS to ``npoint`` centres, one :class:`OmniScaleBranch` per
    (radius, nsample), branch outputs **summed** (the reference's ``fuse='add'``).

    Shapes: xyz (B, N, 3), h (B, N, C) -> new_xyz (B, npoint, 3), new_h (B, npoint, C),
    fps_idx (B, npoint).
    """

    def __init__(
        self,
        channels: int,
        npoint: int,
        radii: tuple[float, ...] = (0.1, 0.2, 0.4),
        nsamples: tuple[int, ...] = (8, 16, 32),
        fused: bool = True,
    ) -> None:
        super().__init__()
        if len(radii) != len(nsamples):
            raise ValueError(f"radii and nsamples must have equal length, got {radii} and {nsamples}")
        self.npoint = int(npoint)
        self.branches = nn.ModuleList(
            OmniScaleBranch(channels, r, s, fused=fused) for r, s in zip(radii, nsamples)
        )

    def forward(self, xyz: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fps_idx = farthest_point_sample(xyz, self.npoint)
        new_xyz = gather_points(xyz, fps_idx)
        groups = ball_query_multiscale(
            [br.radius for br in self.branches], [br.nsample for br in self.branches], xyz, new_xyz
        )
        new_h = None
        for branch, group_idx in zip(self.branches, groups):
            out = branch(xyz, h, new_xyz, group_idx)
            new_h = out if new_h is None else new_h + out
        return new_xyz, new_h, fps_idx

    def extra_repr(self) -> str:
        return f"npoint={self.npoint}"


class GatedResidual(nn.Module):
    """``s·shortcut + (1 − s)·x`` with ``s = sigmoid(p)``, one learnable scalar initialised to 0.

    OG-Net-Deep's layer skip (the reference's ``p_w``, ``id_skip=2``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.logit = nn.Parameter(torch.zeros(()))

    def forward(self, shortcut: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.logit).to(x.dtype)
        return s * shortcut + (1.0 - s) * x


class EmbeddingHead(nn.Module):
    """Re-id head: Linear(no bias) -> BatchNorm1d (the re-id feature) -> Dropout -> classifier.

    Dropout is *not* in place, so the returned feature is the clean BN output in training too
    (the reference's in-place dropout leaks into its circle loss; we do not copy that).
    ``num_classes=0`` builds no classifier and returns ``logits=None``.

    Shapes: x (B, in_features) -> logits (B, num_classes) or None, feature (B, embed_dim).
    """

    def __init__(
        self, in_features: int, num_classes: int, embed_dim: int = 512, drop_rate: float = 0.7
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an int >= 0, got {num_classes!r}")
        if not 0.0 <= float(drop_rate) < 1.0:
            raise ValueError(f"drop_rate must lie in [0, 1), got {drop_rate!r}")
        self.embed = nn.Linear(in_features, embed_dim, bias=False)
        self.bn = nn.BatchNorm1d(embed_dim)
        self.dropout = nn.Dropout(p=float(drop_rate), inplace=False)
        self.classifier = nn.Linear(embed_dim, num_classes) if num_classes > 0 else None

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier (weights N(0, 1e-6), bias 0); 0 removes it."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an int >= 0, got {num_classes!r}")
        ref = self.bn.weight
        self.classifier = (
            nn.Linear(self.bn.num_features, num_classes).to(device=ref.device, dtype=ref.dtype)
            if num_classes > 0
            else None
        )
        if self.classifier is not None:
            init_classifier(self.classifier)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        feature = self.bn(self.embed(x))
        logits = self.classifier(self.dropout(feature)) if self.classifier is not None else None
        return logits, feature


def init_classifier(linear: nn.Linear) -> None:
    """Reference classifier init: weight ~ N(0, 1e-6), bias 0."""
    nn.init.normal_(linear.weight, mean=0.0, std=1e-6)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)
