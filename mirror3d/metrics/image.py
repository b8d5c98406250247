"""Image metrics of single-image reconstruction: mask IoU, SSIM and Fréchet distances.

Definitions follow the reconstruction metrics of CASL (Zheng et al. 2022, "3D Magic Mirror",
arXiv:2204.13096), made explicit:

- :func:`mask_iou`: soft IoU Σ(a·b) / Σ(a + b − a·b) per image (kaolin's ``mask_iou`` is one
  minus its batch mean).
- :func:`ssim`: Wang et al. 2004 with the parameters pinned: an 11×11 Gaussian window with
  σ = 1.5, K1 = 0.01, K2 = 0.03, the data range of the images (1.0 for [0, 1]); "valid"
  filtering (no padding, as ``pytorch_msssim.ssim``), the mean over the SSIM map, averaged over
  the channels. Library defaults differ (skimage: 7×7 uniform window; pytorch_msssim:
  data_range 255), which is why everything is an explicit argument here.
- :func:`frechet_distance`: ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^½) of two Gaussian fits, with the
  matrix square root from ``scipy.linalg.sqrtm`` handled as pytorch-fid does (an ε·I offset
  when the product is singular, the real part when the imaginary part is numerical noise).
- :func:`fd_score`: Fréchet distance of two image sets in the feature space of a
  :class:`FeatureExtractor`.

**FID or not.** Only the pytorch-fid port of the TF 2015-12-05 Inception-v3 weights gives numbers
comparable to papers (FID: Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule
Converge to a Local Nash Equilibrium"), and they cannot be downloaded here. A score is therefore
called ``FID`` only when its extractor says ``reports_fid = True`` — a
:class:`TorchModuleExtractor` wrapping a local copy of that network, which the user vouches
for. Every other extractor's score is named ``FD_<extractor name>``, e.g. ``FD_randcnn`` for
the default :class:`RandomCNNExtractor`. FD is biased at small N: the number of images of both
sets is part of every result (:class:`FDResult`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg

__all__ = [
    "mask_iou",
    "gaussian_window",
    "ssim",
    "frechet_distance",
    "feature_statistics",
    "FeatureExtractor",
    "RandomCNNExtractor",
    "TorchModuleExtractor",
    "FDResult",
    "fd_metric_name",
    "extract_features",
    "fd_score",
]


# --------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------
def _check_float(x, name: str, ndim: int, what: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor of shape {what}, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{name}: expected shape {what}, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: contains NaN or infinite values")


# --------------------------------------------------------------------------------------------
# mask IoU
# --------------------------------------------------------------------------------------------
def mask_iou(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Soft IoU Σ(a·b) / Σ(a + b − a·b) per image.

    Args:
        pred: (B, H, W) soft (or hard) silhouette in [0, 1].
        gt: (B, H, W) mask in [0, 1] (bool also accepted).

    Returns:
        (B,) IoU in [0, 1]; 1 where both masks are empty (nothing to disagree on).
    """
    if isinstance(gt, torch.Tensor) and gt.dtype == torch.bool:
        gt = gt.to(pred.dtype if isinstance(pred, torch.Tensor) and pred.is_floating_point()
                   else torch.float32)
    _check_float(pred, "pred", 3, "(B, H, W)")
    _check_float(gt, "gt", 3, "(B, H, W)")
    if pred.shape != gt.shape:
        raise ValueError(f"pred, gt: expected equal shapes, got {tuple(pred.shape)} and {tuple(gt.shape)}")
    for t, n in ((pred, "pred"), (gt, "gt")):
        if t.numel() and (float(t.min()) < 0.0 or float(t.max()) > 1.0):
            raise ValueError(f"{n}: expected values in [0, 1], "
                             f"got [{float(t.min()):.4g}, {float(t.max()):.4g}]")
    gt = gt.to(pred)
    inter = (pred * gt).flatten(1).sum(1)
    union = (pred + gt - pred * gt).flatten(1).sum(1)
    return torch.where(union > 0, inter / union.clamp_min(torch.finfo(union.dtype).tiny),
                       torch.ones_like(union))


# --------------------------------------------------------------------------------------------
# SSIM
# --------------------------------------------------------------------------------------------
def gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float64,
                    device=None) -> torch.Tensor:
    """(size,) normalised 1-D Gaussian, centred on index size // 2."""
    if int(size) != size or size < 1 or size % 2 == 0:
        raise ValueError(f"window: expected an odd positive int, got {size!r}")
    if not sigma > 0:
        raise ValueError(f"sigma: expected a value > 0, got {sigma!r}")
    x = torch.arange(size, dtype=dtype, device=device) - size // 2
    g = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, window: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Structural similarity per image (Wang et al. 2004), with that paper's window and constants.

    Local statistics use a separable Gaussian window (``window``×``window``, ``sigma``) applied
    without padding ("valid", as pytorch_msssim): μ, σ² = E[x²] − μ², σ_xy = E[xy] − μ_xμ_y.
    SSIM map = (2μ_xμ_y + C1)(2σ_xy + C2) / ((μ_x² + μ_y² + C1)(σ_x² + σ_y² + C2)) with
    C1 = (k1·L)², C2 = (k2·L)², L = ``data_range``. Per image: the mean over the map, then the
    mean over channels. Computed in float64 (returned in the input dtype).

    Args:
        x, y: (B, C, H, W) images (C = 3 for RGB), H and W at least ``window``.
    Returns:
        (B,) SSIM; 1 for identical images.
    """
    _check_float(x, "x", 4, "(B, C, H, W)")
    _check_float(y, "y", 4, "(B, C, H, W)")
    if x.shape != y.shape:
        raise ValueError(f"x, y: expected equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    if not data_range > 0:
        raise ValueError(f"data_range: expected a value > 0, got {data_range!r}")
    if x.shape[-2] < window or x.shape[-1] < window:
        raise ValueError(f"x: images must be at least {window}x{window} for the SSIM window, "
                         f"got {x.shape[-1]}x{x.shape[-2]} (W x H)")
    out_dtype = x.dtype
    x = x.to(torch.float64)
    y = y.to(torch.float64)
    c = x.shape[1]
    g = gaussian_window(window, sigma, torch.float64, x.device)
    wh = g.view(1, 1, 1, -1).expand(c, 1, 1, window)
    wv = g.view(1, 1, -1, 1).expand(c, 1, window, 1)

    def blur(t):
        return F.conv2d(F.conv2d(t, wh, groups=c), wv, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x * mu_x
    syy = blur(y * y) - mu_y * mu_y
    sxy = blur(x * y) - mu_x * mu_y
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    lum = (2 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
    per_channel = (lum * cs).flatten(2).mean(-1)  # (B, C)
    return per_channel.mean(1).to(out_dtype)


# --------------------------------------------------------------------------------------------
# Fréchet distance
# --------------------------------------------------------------------------------------------
def _as_np(x, name: str, ndim: int) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimension(s), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return a


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Fréchet distance between N(μ₁, Σ₁) and N(μ₂, Σ₂).

    d² = ‖μ₁ − μ₂‖² + Tr(Σ₁) + Tr(Σ₂) − 2·Tr((Σ₁Σ₂)^½). The square root is
    ``scipy.linalg.sqrtm``; as in pytorch-fid, if it is not finite (a singular product)
    ε·I is added to both covariances, and a complex result is accepted (real part kept) only
    when the imaginary parts of its diagonal are below 1e-3.

    Args:
        mu1, mu2: (D,) means.  sigma1, sigma2: (D, D) covariances (numpy or torch).
    Raises:
        ValueError: shapes disagree, or the square root has a large imaginary component.
    """
    mu1, mu2 = _as_np(mu1, "mu1", 1), _as_np(mu2, "mu2", 1)
    sigma1, sigma2 = _as_np(sigma1, "sigma1", 2), _as_np(sigma2, "sigma2", 2)
    d = mu1.shape[0]
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"mu1, sigma1, mu2, sigma2: expected (D,), (D, D), (D,), (D, D) with one D, "
                         f"got {mu1.shape}, {sigma1.shape}, {mu2.shape}, {sigma2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():  # singular products are expected when N <= D
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(d) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            m = float(np.max(np.abs(covmean.imag)))
            raise ValueError(f"sigma1, sigma2: the square root of their product has an imaginary "
                             f"component of {m:.3g} (not numerical noise)")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) (unbiased, N − 1) of (N, D) features, N >= 2, float64."""
    f = _as_np(features, "features", 2)
    if f.shape[0] < 2:
        raise ValueError(f"features: need at least 2 samples for a covariance, got {f.shape[0]}")
    return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


# --------------------------------------------------------------------------------------------
# feature extractors
# --------------------------------------------------------------------------------------------
@runtime_checkable
class FeatureExtractor(Protocol):
    """Maps images to feature vectors for a Fréchet distance.

    Attributes:
        name: short name; the score is called ``FD_<name>`` unless ``reports_fid``.
        dims: feature dimension D.
        reports_fid: True only for the pytorch-fid TF-Inception pool3 network (then ``FID``).

    ``__call__(images)``: images (B, 3, H, W) float in [0, 1] → (B, D) float tensor.
    """

    name: str
    dims: int
    reports_fid: bool

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


def _resize_to_signed(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] → bilinear resize to size = (H', W') (aspect not kept, like
    pytorch-fid) and scale to [−1, 1]."""
    _check_float(images, "images", 4, "(B, 3, H, W)")
    if images.shape[1] != 3:
        raise ValueError(f"images: expected 3 channels (RGB), got {images.shape[1]}")
    x = images
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
    return 2.0 * x - 1.0


class RandomCNNExtractor(torch.nn.Module):
    """The default extractor: a fixed, seeded random CNN (``FD_randcnn``; not FID).

    Images are resized bilinearly to 64×64 (aspect not kept, as FID does at 299²), scaled to
    [−1, 1], and passed through three ReLU convolutions: 5×5/2 3→32, 3×3/2 32→64, 3×3/2 64→128,
    weights drawn N(0, 2/fan_in) from ``numpy.random.default_rng(seed)`` (PCG64, identical on
    every machine and version), biases 0. The feature is the spatial mean of the last layer:
    128-d. Random-network features respond to colour, texture and layout statistics; the
    numbers are comparable only between runs that use the same extractor (name, seed,
    ``dims``), never to published FID.
    """

    reports_fid = False

    def __init__(self, seed: int = 0, size: int = 64) -> None:
        super().__init__()
        if int(seed) != seed or seed < 0:
            raise ValueError(f"seed: expected an int >= 0, got {seed!r}")
        if int(size) != size or size < 16:
            raise ValueError(f"size: expected an int >= 16, got {size!r}")
        self.seed, self.size = int(seed), int(size)
        rng = np.random.default_rng(self.seed)
        specs = [(3, 32, 5), (32, 64, 3), (64, 128, 3)]
        convs = []
        for cin, cout, k in specs:
            conv = torch.nn.Conv2d(cin, cout, k, stride=2, padding=k // 2)
            w = rng.standard_normal((cout, cin, k, k)) * math.sqrt(2.0 / (cin * k * k))
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(w.astype(np.float32)))
                conv.bias.zero_()
            conv.requires_grad_(False)
            convs.append(conv)
        self.convs = torch.nn.ModuleList(convs)
        self.name = "randcnn"
        self.dims = specs[-1][1]
        self.eval()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, H, W) in [0, 1] → (B, 128)."""
        x = _resize_to_signed(images, (self.size, self.size))
        x = x.to(self.convs[0].weight)
        for conv in self.convs:
            x = F.relu(conv(x))
        return x.mean(dim=(2, 3))


class TorchModuleExtractor:
    """Wrap a user-supplied local network (e.g. a TorchScript copy of pytorch-fid's InceptionV3
    pool3) as a :class:`FeatureExtractor`.

    Images are resized bilinearly to ``resize`` (H, W) (aspect not kept) and scaled to [−1, 1]
    (pytorch-fid's input convention), then ``module`` runs in eval mode without gradients on its
    own device; a (B, D, 1, 1) output is flattened.

    Args:
        module: the network.
        resize: (H, W) input size (299×299 for Inception).
        name: the extractor name used in ``FD_<name>``.
        reports_fid: set True only for the TF-2015-12-05 Inception pool3 weights; the score is
            then named ``FID``.
        dims: feature size if known (else found on the first call).
    """

    def __init__(self, module: torch.nn.Module, resize: tuple[int, int] = (299, 299),
                 name: str = "custom", reports_fid: bool = False, dims: int | None = None) -> None:
        if not callable(module):
            raise ValueError(f"module: expected a callable torch module, got {type(module).__name__}")
        if len(tuple(resize)) != 2 or min(int(s) for s in resize) < 1:
            raise ValueError(f"resize: expected (H, W) of positive ints, got {resize!r}")
        if not name or not str(name).replace("_", "").isalnum():
            raise ValueError(f"name: expected a short alphanumeric name, got {name!r}")
        self.module = module.eval() if hasattr(module, "eval") else module
        self.resize = tuple(int(s) for s in resize)
        self.name = str(name)
        self.reports_fid = bool(reports_fid)
        self.dims = dims

    def _device_dtype(self):
        try:
            p = next(iter(self.module.parameters()))
            return p.device, p.dtype
        except (StopIteration, AttributeError):
            return torch.device("cpu"), torch.float32

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        dev, dt = self._device_dtype()
        x = _resize_to_signed(images, self.resize).to(dev, dt)
        out = self.module(x)
        if isinstance(out, (list, tuple)):
            out = out[0]
        if out.dim() == 4 and out.shape[-2:] == (1, 1):
            out = out.flatten(1)
        if out.dim() != 2 or out.shape[0] != images.shape[0]:
            raise ValueError(f"module: expected (B, D) features for {images.shape[0]} images, "
                             f"got shape {tuple(out.shape)}")
        self.dims = int(out.shape[1])
        return out


def fd_metric_name(extractor: FeatureExtractor) -> str:
    """``FID`` for an extractor that ``reports_fid``, else ``FD_<name>``."""
    return "FID" if getattr(extractor, "reports_fid", False) else f"FD_{extractor.name}"


@dataclass
class FDResult:
    """A Fréchet distance with what it was computed from.

    Attributes:
        name: ``FID`` or ``FD_<extractor>`` (see :func:`fd_metric_name`).
        value: the distance.  n_a, n_b: images in each set (FD is biased at small N).
        dims: feature dimension.
    """

    name: str
    value: float
    n_a: int
    n_b: int
    dims: int

    def as_dict(self) -> dict:
        return {"name": self.name, "value": self.value, "n_a": self.n_a, "n_b": self.n_b,
                "dims": self.dims}


def _batches(images, batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        _check_float(images, "images", 4, "(N, 3, H, W)")
        for s in range(0, images.shape[0], batch_size):
            yield images[s:s + batch_size]
    else:
        for b in images:
            if isinstance(b, torch.Tensor) and b.dim() == 3:
                b = b[None]
            yield b


def extract_features(images, extractor: FeatureExtractor, batch_size: int = 64) -> np.ndarray:
    """(N, D) float64 features of images: an (N, 3, H, W) tensor in [0, 1] or an iterable of
    (B, 3, H, W) batches (or single (3, H, W) images)."""
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
    feats = [extractor(b).detach().cpu().double() for b in _batches(images, int(batch_size))]
    if not feats:
        raise ValueError("images: expected at least one image, got none")
    return torch.cat(feats).numpy()


def fd_score(images_a, images_b, extractor: FeatureExtractor | None = None,
             batch_size: int = 64) -> FDResult:
    """Fréchet distance between two image sets in ``extractor``'s feature space.

    Args:
        images_a, images_b: (N, 3, H, W) tensors in [0, 1] or iterables of such batches; or
            precomputed (N, D) feature arrays (numpy).  Each set needs N >= 2.
        extractor: default :class:`RandomCNNExtractor` (seed 0), i.e. ``FD_randcnn``.
    """
    extractor = extractor if extractor is not None else RandomCNNExtractor()
    fa = images_a if isinstance(images_a, np.ndarray) else extract_features(images_a, extractor, batch_size)
    fb = images_b if isinstance(images_b, np.ndarray) else extract_features(images_b, extractor, batch_size)
    if fa.ndim != 2 or fb.ndim != 2 or fa.shape[1] != fb.shape[1]:
        raise ValueError(f"images_a, images_b: features must be (N, D) with one D, "
                         f"got {fa.shape} and {fb.shape}")
    mu1, s1 = feature_statistics(fa)
    mu2, s2 = feature_statistics(fb)
    return FDResult(fd_metric_name(extractor), frechet_distance(mu1, s1, mu2, s2),
                    int(fa.shape[0]), int(fb.shape[0]), int(fa.shape[1]))
