"""The CASL model: attribute encoders + the prototype (template) + the differentiable renderer.

The template is a registered **buffer** (a deviation: the reference code of Zheng et al. 2022
keeps it outside the state dict), so every checkpoint carries it; so do the initial template (for the depth prior's
z signs and the z-mirror correspondence), the faces, UVs, Laplacian and edge tables.
"""

from __future__ import annotations

import torch
from torch import nn

from mirror3d.models.casl.networks import AttributeEncoder, CaslAttributes, CaslNetConfig
from mirror3d.render import MeshRenderer, look_at_camera, template_mesh
from mirror3d.render.camera import Camera
from mirror3d.render.mesh import (edge_face_pairs, uniform_laplacian, unique_edges,
                                  z_mirror_correspondence)
from mirror3d.render.renderer import RenderOutput

__all__ = ["CaslModel", "image_to_input"]


def image_to_input(rgb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] and (B, H, W) mask → the (B, 4, H, W) encoder input."""
    return torch.cat([rgb, mask[:, None].to(rgb.dtype)], dim=1)


class CaslModel(nn.Module):
    """Encoders, template and renderer.

    Args:
        net: encoder widths/ranges (:class:`CaslNetConfig`).
        image_size: (W, H) of inputs and renders (Market 64×128).
        ellipsoid: template ellipsoid factor (2 for people, 1 for birds).
        sigma: soft-silhouette sharpness.
    """

    def __init__(self, net: CaslNetConfig, image_size: tuple[int, int] = (64, 128),
                 ellipsoid: float = 2.0, sigma: float = 7000.0) -> None:
        super().__init__()
        w, h = image_size
        verts, faces, uvs = template_mesh(ellipsoid)
        self.net_cfg = net
        self.image_size = (int(w), int(h))
        self.register_buffer("template", verts.clone())
        self.register_buffer("template_init", verts.clone())
        self.register_buffer("faces", faces)
        self.register_buffer("face_uvs", uvs)
        self.register_buffer("laplacian", uniform_laplacian(verts.shape[0], faces))
        self.register_buffer("mirror_index", z_mirror_correspondence(verts))
        self.register_buffer("edges", unique_edges(faces))
        self.register_buffer("edge_faces", edge_face_pairs(faces))
        self.encoder = AttributeEncoder(net, verts, faces)
        self.renderer = MeshRenderer((h, w), sigma=sigma)

    @property
    def ratio(self) -> float:
        """H / W (the depth prior scales y by it)."""
        return self.image_size[1] / self.image_size[0]

    def encode(self, x: torch.Tensor, frozen=frozenset()) -> CaslAttributes:
        """x: (B, 4, H, W) RGB + mask in [0, 1] → attributes."""
        return self.encoder(x, self.template[None], frozen)

    def vertices(self, attrs: CaslAttributes) -> torch.Tensor:
        """(B, V, 3) template + δ."""
        return self.template[None] + attrs.delta

    @staticmethod
    def camera(attrs: CaslAttributes) -> Camera:
        return look_at_camera(attrs.azimuth, attrs.elevation, attrs.distance, attrs.bias)

    def render(self, attrs: CaslAttributes, with_background: bool = False,
               verts: torch.Tensor | None = None) -> RenderOutput:
        """Render attributes; on the predicted background image or on white."""
        verts = self.vertices(attrs) if verts is None else verts
        bg = attrs.background if with_background else None
        return self.renderer.render(verts, self.faces, self.face_uvs, attrs.texture,
                                    self.camera(attrs), attrs.light, background=bg)

    # ------------------------------------------------------------------ attribute edits
    @staticmethod
    def with_camera(attrs: CaslAttributes, azimuth=None, elevation=None, distance=None,
                    bias=None) -> CaslAttributes:
        """A copy with some camera parameters replaced ((B,) tensors or scalars)."""
        b = attrs.azimuth.shape[0]

        def fill(v, like):
            return like if v is None else torch.as_tensor(v, dtype=like.dtype,
                                                          device=like.device).expand_as(like)

        az = fill(azimuth, attrs.azimuth)
        el = fill(elevation, attrs.elevation)
        cs = lambda deg: torch.stack([torch.cos(torch.deg2rad(deg)),  # noqa: E731
                                      torch.sin(torch.deg2rad(deg))], -1)
        return attrs.replace(azimuth=az, elevation=el, distance=fill(distance, attrs.distance),
                             bias=attrs.bias if bias is None else
                             torch.as_tensor(bias, dtype=attrs.bias.dtype,
                                             device=attrs.bias.device).expand(b, 2),
                             azimuth_cs=cs(az), elevation_cs=cs(el))

    def random_azimuth_view(self, attrs: CaslAttributes, generator=None) -> CaslAttributes:
        """The GAN's "hard" view: the same prediction at an azimuth drawn from U[−180, 180]."""
        b = attrs.azimuth.shape[0]
        az = (torch.rand(b, generator=generator) * 360.0 - 180.0).to(attrs.azimuth)
        return self.with_camera(attrs, azimuth=az)

    def interpolate(self, attrs: CaslAttributes, bias_range: float = 0.5,
                    generator=None) -> CaslAttributes:
        """The IC sample Ai: a camera drawn from the priors, shape/texture/light/background each a
        convex mix of two random permutations of the batch (independent α per attribute)."""
        cfg = self.net_cfg
        b = attrs.azimuth.shape[0]
        dev, dt = attrs.azimuth.device, attrs.azimuth.dtype

        def u(lo, hi, *shape):
            return (lo + (hi - lo) * torch.rand(*shape, generator=generator)).to(dev, dt)

        az = u(-180.0, 180.0, b)
        el = u(*cfg.elevation_range, b)
        dist = u(*cfg.distance_range, b)
        bias = u(-bias_range, bias_range, b, 2)

        def mix(t):
            p1 = torch.randperm(b, generator=generator).to(dev)
            p2 = torch.randperm(b, generator=generator).to(dev)
            a = u(0.0, 1.0, b).reshape(b, *([1] * (t.dim() - 1)))
            return a * t[p1] + (1 - a) * t[p2]

        out = self.with_camera(attrs, azimuth=az, elevation=el, distance=dist, bias=bias)
        delta = mix(attrs.delta)
        delta = delta - delta.mean(dim=1, keepdim=True)
        return out.replace(delta=delta, texture=mix(attrs.texture), light=mix(attrs.light),
                           background=mix(attrs.background))

    # ------------------------------------------------------------------ misc
    def extra_repr(self) -> str:
        w, h = self.image_size
        return f"image_size={w}x{h}, vertices={self.template.shape[0]}"

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.encoder.parameters())

