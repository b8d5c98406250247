"""mirror3d.lifting: re-id images → coloured point clouds for OG-Net, without Ray.

- :mod:`.flat`, :mod:`.visible`, :mod:`.modes`: one image (+ mask) → one cloud per lifting mode;
- :mod:`.config` (``LiftConfig``), :mod:`.plan` (shards, masks), :mod:`.reconstructors` (CASL;
  ``synth-truth``, SynthPeople's true meshes — an oracle that needs ground truth; fixed meshes),
  :mod:`.lifter` (one shard), :mod:`.run` (the in-process driver), :mod:`.shards` (parquet),
  :mod:`.viz` (pictures, PLY).

The Ray Data actor pool is :mod:`mirror3d.platform.lifting`; see docs/architecture.md.
"""
