"""SynthPeople: procedural clothed people rendered from known cameras, with identities and
camera ids for re-id and full 3D ground truth for reconstruction (the embedded default dataset).

- :mod:`~mirror3d.data.synth.recipe`: a person recipe drawn from a seed.
- :mod:`~mirror3d.data.synth.body`: closed primitives assembled into a posable textured mesh.
- :mod:`~mirror3d.data.synth.textures`: the UV atlas painters and procedural backgrounds.
- :mod:`~mirror3d.data.synth.scene`: camera ids, views, batched rendering.
- :mod:`~mirror3d.data.synth.config`: :class:`SynthConfig`, the dataset's settings.
- :mod:`~mirror3d.data.synth.writer`: the on-disk layouts, sharding and resume (one process).
- :mod:`~mirror3d.data.synth.floor`: the raw-pixel re-id floor.

The shards as Ray tasks: :mod:`mirror3d.platform.synth`; the command ``python -m mirror3d synth``:
:mod:`mirror3d.jobs.synth`.
"""

from mirror3d.data.synth.body import PersonMesh, build_person, build_person_mesh
from mirror3d.data.synth.config import SynthConfig
from mirror3d.data.synth.floor import raw_pixel_floor
from mirror3d.data.synth.recipe import POSE_NAMES, PersonRecipe, draw_recipe
from mirror3d.data.synth.scene import View, camera_rig, render_views
from mirror3d.data.synth.writer import (
    generate_dataset,
    load_recipes,
    read_ground_truth,
    rerender_row,
)

__all__ = [
    "PersonRecipe", "draw_recipe", "POSE_NAMES",
    "PersonMesh", "build_person", "build_person_mesh",
    "View", "camera_rig", "render_views",
    "SynthConfig", "generate_dataset", "load_recipes", "read_ground_truth", "rerender_row",
    "raw_pixel_floor",
]
