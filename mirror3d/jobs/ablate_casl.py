"""Job ``ablate-casl``: the CASL ablations of the paper's Table 4 (Zheng et al. 2022, "3D Magic
Mirror") on one budget — full vs No IM vs No Prototype Loop vs No Encoder Loop — each trained
with train-casl and evaluated with eval-casl.

    python -m mirror3d ablate-casl --minutes 8 --variants full,no-im --base.optim.lr 1e-3
    python -m mirror3d ablate-casl --smoke --base.data.root /abs/Market-HQ

The ``base`` section is a train-casl config: its presets compose train-casl's
(``compose: {base: train-casl}``), so ``--smoke`` trains every variant with train-casl's smoke
settings. Output ``<out_dir>/<name>/``: one CASL run directory per variant (with its ``eval/``),
``ablation.json`` and ``ablation.md`` (:func:`mirror3d.platform.casl.run_ablation`). A variant
whose run and evaluation finished with the same settings is reused.
"""

from __future__ import annotations

from mirror3d.engine.casl_ablation import AblationConfig
from mirror3d.platform.casl import run_ablation
from mirror3d.platform.cluster import ensure_ray
from mirror3d.utils.preflight import check_input, check_output

__all__ = ["CONFIG", "run"]

CONFIG = AblationConfig


def run(cfg: AblationConfig) -> int:
    check_input(cfg.base.data.root, "base.data.root", what="dataset")  # before Ray starts
    check_output(cfg.out_dir, "out_dir")
    ensure_ray()
    md = run_ablation(cfg)
    print(md.read_text())
    print(f"ablate-casl: table -> {md}")
    return 0
