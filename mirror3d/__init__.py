"""mirror3d: a Ray-based experiment platform for people in 3D.

CASL single-image mesh reconstruction, 2D->3D lifting of re-id images, OG-Net point-cloud re-id,
run as Ray jobs. See README.md and DESIGN.md.
"""

from mirror3d.platform.local_env import apply_local_env as _apply_local_env

# Loopback-only, quiet Ray and offline Gradio unless the user set otherwise (see local_env.py).
_apply_local_env()

__version__ = "0.1.0"
