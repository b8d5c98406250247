"""CASL on Ray Train: the driver around :func:`mirror3d.engine.casl_train.train_casl_loop`, and
the ablation runner (Zheng et al. 2022, "3D Magic Mirror", Table 4).

:func:`train_casl` checks the data and the resume checkpoint before Ray or a run directory
exists, makes the run directory (``<out_dir>/<name>``, kept on failure so that a run can be
resumed from its checkpoints) with its ``config.yaml``, and runs the engine's loop on
``ray.num_workers`` Ray Train workers (:func:`mirror3d.platform.train.fit`;
docs/architecture.md). Each worker trains on its device with
:func:`mirror3d.platform.train.ray_report` as the loop's per-epoch report.

:func:`run_ablation` trains every variant of :mod:`mirror3d.engine.casl_ablation` with
:func:`train_casl` and evaluates it with :func:`mirror3d.engine.casl_eval.evaluate_casl`
(reusing variants already finished with the same settings), then writes ``ablation.json`` and
``ablation.md`` under ``runs/ablate_casl/<name>/``.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence
from typing import Any

from mirror3d.data.images import read_header
from mirror3d.engine.casl_ablation import (PAPER_TABLE4, AblationConfig, ablation_markdown,
                                           ablation_row, finished_metrics, variant_config)
from mirror3d.engine.casl_eval import EvalCaslOptions, evaluate_casl
from mirror3d.engine.casl_train import KIND, CaslTrainConfig, load_casl_data, train_casl_loop
from mirror3d.engine.tracking import resolve_tracking
from mirror3d.platform.train import ray_report, stage_inputs, train_run, worker_device
from mirror3d.utils import storage
from mirror3d.utils.config import config_from_dict, save_config
from mirror3d.utils.files import atomic_write
from mirror3d.utils.preflight import check_images, check_input, check_output

__all__ = ["train_casl", "casl_worker", "image_header", "run_ablation"]


def image_header(path: str, what: str, is_mask: bool) -> tuple[int, int]:
    """(W, H) of an image or mask file as the training decoder sees it, from its header
    (:func:`mirror3d.data.images.read_header`: format, mode, pixel cap, smallest side of an
    image); an ``ImageError`` line naming the file when the decoder would refuse it."""
    h = read_header(path, what=f"{what} {path}", min_side=not is_mask)
    return h.width, h.height


def casl_worker(loop_config: dict) -> None:
    """Ray Train worker entry: the engine's loop on this worker's device, reporting to Ray."""
    cfg = config_from_dict(CaslTrainConfig, loop_config["config"])
    train_casl_loop(cfg, loop_config["run_dir"], loop_config.get("resume") or "",
                    device=worker_device(), report=ray_report)


def train_casl(cfg: CaslTrainConfig, callbacks: Sequence[Any] = ()) -> pathlib.Path:
    """Train through Ray Train; returns the run directory, which holds ``config.yaml``,
    ``metrics.jsonl``, ``checkpoints/``, ``templates/``, ``model_final.pt``,
    ``template_final.obj`` and ``train_summary.json``.

    Raises:
        FileNotFoundError / ValueError: bad data or resume checkpoint (before any run directory
            or Ray exists; a foreign checkpoint is a ``CheckpointError``; an unreadable image or
            a mask of another size than its image a ``DataError``; an output folder that is a
            file an ``OutputPathError``: :mod:`mirror3d.utils.preflight`).
        FloatingPointError: a non-finite loss (see :func:`mirror3d.engine.runtime.non_finite_loss`).
        mirror3d.platform.train.TrainingFailed: a worker failed otherwise.
    """
    # workers run in their own directories: an absolute data path (a URI: staged on each node)
    cfg, inputs = stage_inputs(cfg, ["data.root"])
    cfg = resolve_tracking(cfg)  # the MLflow store, absolute for the workers
    check_input(cfg.data.root, "data.root", what="dataset")
    check_output(cfg.out_dir, "out_dir")
    train, _, test = load_casl_data(cfg)  # fail fast on bad data, before a run directory or Ray
    pairs = dict.fromkeys((r.image_path, r.mask_path) for r in [*train.records, *test.records])
    # corrupt images, refused modes or sizes, masks of another size: seconds here, not in Ray
    check_images(pairs, "data.root", header=image_header)
    return train_run(casl_worker, cfg, KIND, callbacks, inputs)


def run_ablation(cfg: AblationConfig, progress: bool = True) -> pathlib.Path:
    """Train and evaluate every variant (reusing finished ones); returns ``ablation.md``."""
    if not cfg.variants:
        raise ValueError("variants: expected at least one variant")
    location = storage.join(cfg.out_dir, cfg.name)  # a folder or a storage URI
    if not storage.is_uri(location):
        location = str(storage.local_path(location))
    storage.pull(location)  # variants finished earlier are reused from the store too
    root = storage.local_path(location)
    root.mkdir(parents=True, exist_ok=True)
    save_config(cfg, root / "config.yaml")
    rows = []
    for variant in cfg.variants:
        vcfg = variant_config(cfg, variant, location)
        run = root / variant
        metrics = finished_metrics(run, vcfg)
        if metrics is None:
            print(f"[ablate-casl] {variant}: training", flush=True)
            if run.exists() or storage.exists(storage.join(location, variant)):
                storage.remove(storage.join(location, variant))
            train_casl(vcfg)
            opts = EvalCaslOptions(max_images=cfg.eval_images, samples=cfg.eval_samples,
                                   chamfer_points=cfg.eval_chamfer_points)
            metrics = evaluate_casl(run, options=opts, progress=progress)
        else:
            print(f"[ablate-casl] {variant}: reused", flush=True)
        summary = json.loads((run / "train_summary.json").read_text())
        rows.append(ablation_row(variant, metrics, summary))
    budget = (f"{cfg.minutes:g} min of training" if cfg.minutes
              else f"{cfg.base.optim.epochs} epochs")
    atomic_write(root / "ablation.json", json.dumps({"budget": budget, "rows": rows,
                                                     "paper_table4": PAPER_TABLE4}, indent=2))
    md = root / "ablation.md"
    atomic_write(md, ablation_markdown(rows, budget))
    storage.push(location)  # the evaluations, ablation.json and ablation.md
    return md
