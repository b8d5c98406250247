"""Fixtures for renderer tests: randomly deformed templates and random cameras."""

import pytest
import torch

from mirror3d.render import look_at_camera, template_mesh


def _deformed(batch: int, seed: int, amount: float = 0.15, dtype=torch.float32):
    """Template + a smooth random deformation (low-frequency sinusoids of position)."""
    g = torch.Generator().manual_seed(seed)
    verts, faces, uvs = template_mesh(2.0, dtype=torch.float64)
    out = []
    for _ in range(batch):
        freq = torch.randn(3, 3, generator=g, dtype=torch.float64) * 2.0
        phase = torch.rand(3, generator=g, dtype=torch.float64) * 6.28
        amp = (torch.rand(3, generator=g, dtype=torch.float64) - 0.5) * 2 * amount
        out.append(verts + amp * torch.sin(verts @ freq + phase))
    return torch.stack(out).to(dtype), faces, uvs.to(dtype)


def _random_cameras(batch: int, seed: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    az = torch.rand(batch, generator=g) * 360 - 180
    el = torch.rand(batch, generator=g) * 30 - 15
    dist = 2.0 + torch.rand(batch, generator=g) * 4.0
    bias = (torch.rand(batch, 2, generator=g) - 0.5) * 0.6
    return look_at_camera(az.to(dtype), el.to(dtype), dist.to(dtype), bias.to(dtype))


@pytest.fixture
def deformed_meshes():
    return _deformed


@pytest.fixture
def random_cameras():
    return _random_cameras
