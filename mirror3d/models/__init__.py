"""mirror3d.models: the networks — OG-Net and its 2D baseline (:mod:`.ognet`), CASL (:mod:`.casl`) —
and the timm-style model registry with each model's metadata (:mod:`.registry`)."""
