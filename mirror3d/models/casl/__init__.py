"""CASL (Zheng et al. 2022, "3D Magic Mirror: Clothing Reconstruction from a Single Image via a
Causal Perspective", arXiv:2204.13096): single-image textured mesh reconstruction, self-supervised.

- :mod:`.networks` — the encoders (camera, shape, texture + light, background) and the critic;
- :mod:`.integration` — the Integration Module (template-(x, y) feature sampling);
- :mod:`.model` — encoders + template buffer + renderer;
- :mod:`.losses` — data, mesh, flip, interpolation-consistency and WGAN-GP terms;
- :mod:`.em` — the encoder loop and the prototype loop;
- :mod:`.step` — one training step, the prototype update, held-out mask IoU, ``build_model``;
- :mod:`.inference` — ``load_casl(run_dir).reconstruct(image, mask)``;
- :mod:`.refine` — test-time refinement of one image's attributes (beyond the papers);
- :mod:`.viz` — the evaluation's pictures.

The training loop is :func:`mirror3d.engine.casl_train.train_casl_loop` (one process), run on
Ray Train by :func:`mirror3d.platform.casl.train_casl`; evaluation is
:func:`mirror3d.engine.casl_eval.evaluate_casl` (docs/architecture.md).
"""

from mirror3d.models.casl.inference import CaslPredictor, MaskError, Reconstruction, load_casl

__all__ = ["load_casl", "CaslPredictor", "Reconstruction", "MaskError"]
