"""CASL ("3D Magic Mirror"): single-image textured mesh reconstruction, self-supervised.

- :mod:`.networks` — the encoders (camera, shape, texture + light, background) and the critic;
- :mod:`.integration` — the Integration Module (template-(x, y) feature sampling);
- :mod:`.model` — encoders + template buffer + renderer;
- :mod:`.losses` — data, mesh, flip, interpolation-consistency and WGAN-GP terms;
- :mod:`.em` — the encoder loop and the prototype loop;
- :mod:`.inference` — ``load_casl(run_dir).reconstruct(image, mask)``.

Training lives in :mod:`mirror3d.platform.casl_trainer` (Ray Train).
"""

from mirror3d.models.casl.inference import CaslPredictor, Reconstruction, load_casl

__all__ = ["load_casl", "CaslPredictor", "Reconstruction"]
