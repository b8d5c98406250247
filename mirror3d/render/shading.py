"""Spherical-harmonics lighting (kaolin's legacy ``spherical_harmonic_lighting``).

One of the lighting models of DIB-R (Chen et al. 2019, §3), and the one CASL (Zheng et al. 2022,
"3D Magic Mirror") predicts coefficients for.

shade(n) = Σ_k l_k·B_k(n) over the 9 real SH basis functions of bands 0–2, evaluated on unit
camera-space normals n = (x, y, z); the shade multiplies the colour.
"""

from __future__ import annotations

import torch

__all__ = ["SH_CONSTANTS", "sh_basis", "sh_shading"]

#: The basis constants exactly as the reference uses them.
SH_CONSTANTS = (0.28209479, 0.48860251, 1.09254843, 0.94617470, 0.31539157, 0.77254840,
                0.38627420)


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """The 9 SH basis values.

    Args:
        normals: (..., 3) unit normals (zero vectors allowed: background pixels).
    Returns:
        (..., 9) = [c0, c1·x, c1·z, c1·y, c2·xy, c2·yz, c3·z² − c4, c5·xz, c6·(x² − y²)].
    """
    c0, c1, c2, c3, c4, c5, c6 = SH_CONSTANTS
    x, y, z = normals.unbind(-1)
    return torch.stack(
        [torch.full_like(x, c0), c1 * x, c1 * z, c1 * y, c2 * x * y, c2 * y * z,
         c3 * z * z - c4, c5 * x * z, c6 * (x * x - y * y)],
        dim=-1,
    )


def sh_shading(normals: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
    """Per-pixel shade.

    Args:
        normals: (B, H, W, 3) camera-space unit normals.
        light: (B, 9) SH coefficients.
    Returns:
        (B, H, W) shade factor.
    """
    return (sh_basis(normals) * light[:, None, None, :]).sum(-1)
