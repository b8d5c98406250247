"""mirror3d.render: a pure-PyTorch, DIB-R-style differentiable mesh renderer.

DIB-R is Chen et al. 2019 ("Learning to Predict 3D Objects with an Interpolation-based Differentiable
Renderer", NeurIPS, §3). The renderer is set up the way CASL (Zheng et al. 2022, "3D Magic Mirror",
arXiv:2204.13096) renders its meshes in the authors' public code; the README's "The renderer" section
lists the conventions.

Public names other code relies on::

    from mirror3d.render import ico_sphere, look_at_camera, MeshRenderer
"""

from mirror3d.render.camera import FOVY_DEG, Camera, look_at_camera, projection_vector
from mirror3d.render.rasterize import Fragments, rasterize, rasterize_naive
from mirror3d.render.renderer import MeshRenderer, RenderOutput
from mirror3d.render.shading import sh_basis, sh_shading
from mirror3d.render.soft_silhouette import soft_silhouette, soft_silhouette_naive
from mirror3d.render.sphere import ico_sphere, normalize_template, sphere_face_uvs, template_mesh
from mirror3d.render.texture import sample_texture

__all__ = [
    "FOVY_DEG", "Camera", "look_at_camera", "projection_vector",
    "Fragments", "rasterize", "rasterize_naive",
    "MeshRenderer", "RenderOutput",
    "sh_basis", "sh_shading",
    "soft_silhouette", "soft_silhouette_naive",
    "ico_sphere", "normalize_template", "sphere_face_uvs", "template_mesh",
    "sample_texture",
]
