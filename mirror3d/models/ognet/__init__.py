"""mirror3d.models.ognet: OG-Net point-cloud person re-id (Zheng et al. 2022, "Parameter-Efficient
Person Re-identification in the 3D Space", IEEE TNNLS) and its 2D baseline, with their losses.

Importing this package registers ``og-net``, ``og-net-small``, ``og-net-deep`` (``input_kind
"points"``) and the 2D baseline ``cnn2d-small`` (``"image"``) with :mod:`mirror3d.models.registry`.
Training and evaluation loops: :mod:`mirror3d.engine.reid_train`.
"""

from mirror3d.models.ognet.baseline2d import CNN2D, BasicBlock, cnn2d_small
from mirror3d.models.ognet.layers import (
    EDGE_BACKENDS,
    ChannelGate,
    EdgeConv,
    EmbeddingHead,
    GatedResidual,
    MaxMeanPool,
    OmniScaleBranch,
    OmniScaleModule,
    PointwiseConv,
    batch_norm_last,
    init_classifier,
    knn_edge_index,
)
from mirror3d.models.ognet.losses import CircleLoss, batch_hard_triplet, circle_loss
from mirror3d.models.ognet.model import (
    DEFAULT_EDGE_BACKEND,
    LAST_GRAPHS,
    OGNet,
    OGNetLayer,
    PAPER_NUM_POINTS,
    ReIDOutput,
    count_paper_params,
    init_weights,
    og_net,
    og_net_deep,
    og_net_small,
)
from mirror3d.models.ognet.ops import (
    ball_query,
    ball_query_multiscale,
    farthest_point_sample,
    gather_points,
    knn,
)

__all__ = [
    "BasicBlock",
    "CNN2D",
    "ChannelGate",
    "CircleLoss",
    "DEFAULT_EDGE_BACKEND",
    "EDGE_BACKENDS",
    "EdgeConv",
    "EmbeddingHead",
    "LAST_GRAPHS",
    "GatedResidual",
    "MaxMeanPool",
    "OGNet",
    "OGNetLayer",
    "OmniScaleBranch",
    "OmniScaleModule",
    "PAPER_NUM_POINTS",
    "PointwiseConv",
    "ReIDOutput",
    "ball_query",
    "ball_query_multiscale",
    "batch_hard_triplet",
    "batch_norm_last",
    "circle_loss",
    "cnn2d_small",
    "count_paper_params",
    "farthest_point_sample",
    "gather_points",
    "init_classifier",
    "init_weights",
    "knn",
    "knn_edge_index",
    "og_net",
    "og_net_deep",
    "og_net_small",
]
