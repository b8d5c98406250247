"""mirror3d: a Ray-based experiment platform for people in 3D.

CASL single-image mesh reconstruction, 2D->3D lifting of re-id images, OG-Net point-cloud re-id,
run as Ray jobs. ``import mirror3d`` has no side effects; the layers and where things live are
described in docs/architecture.md.
"""

__version__ = "0.1.0"
