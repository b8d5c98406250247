"""The ``eval-casl`` evaluation: metrics and pictures of a trained CASL run (no Ray here).

CASL is the model of Zheng et al. 2022 ("3D Magic Mirror", arXiv:2204.13096); its evaluation
protocol (MaskIoU, SSIM, FID of reconstructions, novel views and ±90° views) is followed with
the deviations listed below.

``evaluate_casl(run_dir)`` loads the run's model (:func:`mirror3d.models.casl.load_casl`), reads
the held-out split of its data (the trainer's ``test`` split, :func:`mirror3d.engine.casl_train.
casl_records`: Market-HQ ``query``, all of it unless ``max_images``), and for every image, in
eval mode on white backgrounds:

- ``ori``: the input composited on white with the GT mask; ``rec``: the reconstruction;
  ``novel``: the prediction at a random azimuth U(−180, 180) and at that azimuth + 90°;
  ``side``: the prediction at its predicted azimuth ± 90°.
- **MaskIoU** (%): soft IoU of the rendered soft silhouette and the GT mask, averaged.
- **SSIM** (%): pinned parameters (:func:`mirror3d.metrics.image.ssim`; Wang et al. 2004),
  ``ori`` against the reconstruction composited on white with the same GT mask.
- **FD_recon / FD_novel / FD_90**: Fréchet distances ori↔rec, ori↔novel, ori↔side (the last two
  have twice as many fakes as reals). Named ``FD_randcnn_*`` with the default seeded
  random-CNN features; ``FID_*`` (Heusel et al. 2017) only with a user-supplied TorchScript copy
  of the pytorch-fid Inception (``fid_model``). N of both sets is reported with each.

Unlike the reference code, images are not saved as JPEG and read back before scoring.

With ``refine_steps`` N > 0 (beyond the papers), every image's predicted attributes are refined
at test time by N steps on its own reconstruction losses
(:func:`mirror3d.models.casl.refine.refine_attributes`, seeded by ``seed``) before anything is
scored or drawn; the report states N (``metrics["refine"]``, the markdown's first lines).

When the data root belongs to a SynthPeople tree (``gt/images.parquet`` in the root or its
parent), each image's true mesh and camera are rebuilt (recipe + pose jitter;
:class:`mirror3d.data.synth.truth.SynthTruth`, also the lifting's ``synth-truth`` oracle) and
:mod:`mirror3d.metrics.reconstruction` adds: normalised Chamfer-L2 of the prediction (each mesh
in its camera frame, centred; also without centring), of the initial template and of the
learned template placed with the true camera (baselines); camera errors (median azimuth error
first); novel-view MaskIoU at the true azimuth + 90°.

Outputs (written to a hidden ``RUN_DIR/.eval.partial`` directory and renamed to ``RUN_DIR/eval``
only when everything succeeded, replacing an earlier ``eval``; :func:`mirror3d.utils.rundir.
run_directory`): ``metrics.json``, ``metrics.md`` (a markdown table), ``per_image.jsonl``, and
the pictures of :mod:`mirror3d.models.casl.viz`.
"""

from __future__ import annotations

import json
import math
import pathlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from mirror3d.data.datasets import ReconstructionDataset
from mirror3d.data.synth.truth import SynthTruth, find_synth_root
from mirror3d.engine.casl_train import CaslTrainConfig, casl_records
from mirror3d.metrics.image import (RandomCNNExtractor, TorchModuleExtractor, extract_features,
                                    fd_metric_name, fd_score, mask_iou, ssim)
from mirror3d.metrics.reconstruction import (camera_errors, chamfer_l2_normalised,
                                             novel_view_mask_iou, template_baseline_chamfer)
from mirror3d.models.casl import viz
from mirror3d.models.casl.inference import load_casl
from mirror3d.models.casl.refine import DEFAULT_REFINED
from mirror3d.utils.config import (ConfigError, config_from_dict, get_by_dotted, load_config,
                                   parse_overrides, update_config)
from mirror3d.utils.rundir import run_directory

__all__ = ["EvalCaslOptions", "evaluate_casl", "apply_data_overrides", "find_synth_root",
           "SynthTruth", "load_feature_extractor", "markdown_report"]


@dataclass
class EvalCaslOptions:
    """Settings of one evaluation.

    Attributes:
        max_images: evaluate at most this many held-out images (0 = all).
        batch_size: images per forward pass.
        seed: seed of the random novel-view azimuths.
        samples: test images shown in the pictures (turntables, meshes, grids).
        chamfer_points: surface samples per mesh for the Chamfer distance.
        pictures: write the pictures (metrics only when False).
        fid_model: a TorchScript file of the pytorch-fid TF-Inception pool3 network; when given
            the Fréchet distances are reported as FID (else FD_randcnn).
        refine_steps: test-time refinement steps per image before scoring (0: the network's
            prediction; beyond the papers, :mod:`mirror3d.models.casl.refine`).
    """

    max_images: int = 0
    batch_size: int = 16
    seed: int = 0
    samples: int = 6
    chamfer_points: int = 10000
    pictures: bool = True
    fid_model: str | None = None
    refine_steps: int = 0

    def validate(self) -> None:
        for name, lo in (("max_images", 0), ("batch_size", 1), ("seed", 0), ("samples", 0),
                         ("chamfer_points", 1), ("refine_steps", 0)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"{name}: expected an int >= {lo}, got {v!r}")


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------
def apply_data_overrides(cfg: CaslTrainConfig,
                         overrides: Sequence[str] | Mapping[str, Any]) -> CaslTrainConfig:
    """The run's config with overrides of its ``data.*`` keys applied (only those: the model
    itself comes from the checkpoint).

    ``overrides``: command-line tokens (``["--data.root", "DIR", "--data.max_test=8"]``) or a
    mapping of dotted keys to values (``{"data.root": "DIR"}``).

    Raises:
        ConfigError: a key outside ``data.*``, an unknown key or a bad value.
    """
    cls = type(cfg)
    if isinstance(overrides, Mapping):
        updates = dict(overrides)
        keys = list(updates)
    else:
        tokens = list(overrides)
        keys = [k for k, _ in parse_overrides(cls, tokens)]
        updates = None
    if not keys:
        return cfg
    bad = [k for k in keys if not k.startswith("data.")]
    if bad:
        raise ConfigError(f"{bad[0]}: only data.* keys can be changed for evaluation "
                          f"(the model comes from the checkpoint)")
    if updates is None:
        parsed = load_config(cls, None, tokens)
        updates = {k: get_by_dotted(parsed, k) for k in keys}
    return update_config(cfg, updates)


def load_feature_extractor(fid_model: str | None):
    """The default :class:`RandomCNNExtractor`, or a TorchScript Inception reported as FID."""
    if fid_model is None:
        return RandomCNNExtractor(seed=0)
    p = pathlib.Path(fid_model)
    if not p.is_file():
        raise FileNotFoundError(f"fid_model: {p} does not exist")
    try:
        module = torch.jit.load(str(p), map_location="cpu")
    except Exception as exc:  # torch raises several kinds on foreign files
        raise ValueError(f"fid_model: cannot load {p} as a TorchScript module "
                         f"({type(exc).__name__})") from None
    return TorchModuleExtractor(module, (299, 299), name="inception", reports_fid=True)


def _test_dataset(cfg: CaslTrainConfig, max_images: int) -> ReconstructionDataset:
    cfg = update_config(cfg, {"data.max_test": max_images})
    _, test = casl_records(cfg)
    if not test:
        raise ValueError(f"data.root: no held-out images under {cfg.data.root}")
    aug = None if cfg.data.aug == "none" else cfg.data.aug
    return ReconstructionDataset(test, tuple(cfg.data.image_size), aug=aug, bg=cfg.data.bg, train=False)


# --------------------------------------------------------------------------------------------
# the job
# --------------------------------------------------------------------------------------------
def _wrap(az: torch.Tensor) -> torch.Tensor:
    return torch.remainder(az + 180.0, 360.0) - 180.0


def _finite_mean(values) -> float | None:
    a = np.asarray(values, dtype=float)
    return float(a.mean()) if a.size else None


def _stats(values) -> dict:
    a = np.asarray(values, dtype=float)
    return {"min": float(a.min()), "max": float(a.max()), "mean": float(a.mean()),
            "median": float(np.median(a))}


@torch.no_grad()
def evaluate_casl(run_dir, overrides: Sequence[str] | Mapping[str, Any] = (),
                  options: EvalCaslOptions | None = None, extractor=None,
                  progress: bool = False) -> dict:
    """Evaluate a CASL run directory; writes ``RUN_DIR/eval`` and returns the metrics dict.

    Args:
        run_dir: a run written by ``train-casl`` (``model_final.pt`` or checkpoints).
        overrides: ``--data.<key> value`` tokens (e.g. another ``--data.root``) or a mapping
            ``{"data.<key>": value}`` (see :func:`apply_data_overrides`).
        options: :class:`EvalCaslOptions`.
        extractor: a :class:`~mirror3d.metrics.image.FeatureExtractor` overriding
            ``options.fid_model``.

    Raises:
        FileNotFoundError: no run directory / checkpoint / data.
        ValueError: a foreign checkpoint (``CheckpointError``), unreadable image, bad option.
    """
    opts = options or EvalCaslOptions()
    opts.validate()
    run = pathlib.Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"run directory {run} does not exist")
    t0 = time.time()
    predictor = load_casl(run)
    model = predictor.model.eval()
    cfg = apply_data_overrides(config_from_dict(CaslTrainConfig, predictor.config), overrides)
    if tuple(cfg.data.image_size) != tuple(model.image_size):
        raise ValueError(f"data.image_size: the model was trained at {tuple(model.image_size)}; "
                         f"got {tuple(cfg.data.image_size)}")
    extractor = extractor if extractor is not None else load_feature_extractor(opts.fid_model)
    dataset = _test_dataset(cfg, opts.max_images)
    synth_root = find_synth_root(cfg.data.root)
    truth = SynthTruth(synth_root) if synth_root is not None else None
    loader = torch.utils.data.DataLoader(dataset, batch_size=opts.batch_size, shuffle=False)
    gen = torch.Generator().manual_seed(opts.seed)
    fd_name = fd_metric_name(extractor)

    per_image: list[dict] = []
    refine_seconds = 0.0
    feats: dict[str, list[np.ndarray]] = {k: [] for k in ("ori", "rec", "novel", "side")}
    truth_rows: list[dict | None] = []
    n_missing_truth = 0
    dev = model.template.device
    for batch in tqdm(loader, desc="eval-casl", unit="batch", disable=not progress):
        x = batch["image"].to(dev)
        rgb, m = x[:, :3], x[:, 3]
        b = x.shape[0]
        attrs = model.encode(x)
        hist = None
        if opts.refine_steps > 0:
            t_r = time.perf_counter()
            attrs, hist = predictor.refine(x, attrs, opts.refine_steps, seed=opts.seed)
            refine_seconds += time.perf_counter() - t_r
        rec = model.render(attrs)
        mw = m[:, None]
        ori = rgb * mw + (1 - mw)
        iou = mask_iou(rec.soft_mask.clamp(0, 1), m)
        ss = ssim(ori, rec.rgb * mw + (1 - mw))
        az_r = (torch.rand(b, generator=gen) * 360.0 - 180.0).to(attrs.azimuth)
        novel = [model.render(model.with_camera(attrs, azimuth=a)).rgb for a in (az_r, _wrap(az_r + 90))]
        side = [model.render(model.with_camera(attrs, azimuth=_wrap(attrs.azimuth + s))).rgb
                for s in (90.0, -90.0)]
        feats["ori"].append(extract_features(ori, extractor))
        feats["rec"].append(extract_features(rec.rgb, extractor))
        feats["novel"] += [extract_features(t, extractor) for t in novel]
        feats["side"] += [extract_features(t, extractor) for t in side]
        verts = model.vertices(attrs)
        mad = attrs.delta.abs().mean(dim=(1, 2))
        for i in range(b):
            rec_i = {
                "path": str(batch["path"][i]), "mask_iou": float(iou[i]), "ssim": float(ss[i]),
                "azimuth": float(attrs.azimuth[i]), "elevation": float(attrs.elevation[i]),
                "distance": float(attrs.distance[i]), "bias_x": float(attrs.bias[i, 0]),
                "bias_y": float(attrs.bias[i, 1]), "mean_abs_delta": float(mad[i]),
                "novel_azimuth": float(az_r[i]),
            }
            if hist is not None:
                rec_i.update(refine_loss_start=float(hist.loss[0, i]),
                             refine_loss_end=float(hist.best_loss[i]),
                             refine_best_step=int(hist.best_step[i]))
            row = truth.row_for(rec_i["path"]) if truth is not None else None
            if truth is not None and row is None:
                n_missing_truth += 1
            truth_rows.append(row)
            if row is not None:
                gv, gf = truth.mesh(row)
                gv = gv[None].to(verts)
                gcam = truth.camera(row).to(device=dev, dtype=verts.dtype)
                pcam = model.camera(attrs)[i]
                kw = {"n_points": opts.chamfer_points, "seed": opts.seed}
                rec_i.update(
                    gt_azimuth=float(row["azimuth"]), gt_elevation=float(row["elevation"]),
                    gt_distance=float(row["distance"]), gt_bias_x=float(row["bx"]),
                    gt_bias_y=float(row["by"]),
                    chamfer=float(chamfer_l2_normalised(verts[i:i + 1], model.faces, gv, gf,
                                                        pred_camera=pcam, gt_camera=gcam, **kw)[0]),
                    chamfer_placed=float(chamfer_l2_normalised(
                        verts[i:i + 1], model.faces, gv, gf, pred_camera=pcam, gt_camera=gcam,
                        centre=False, **kw)[0]),
                    chamfer_template_init=float(template_baseline_chamfer(
                        model.template_init, model.faces, gv, gf, gcam, **kw)[0]),
                    chamfer_template_final=float(template_baseline_chamfer(
                        model.template, model.faces, gv, gf, gcam, **kw)[0]),
                    novel_view_mask_iou=float(novel_view_mask_iou(
                        verts[i:i + 1], model.faces, gv, gf, gcam, model.renderer, 90.0)[0]),
                )
            per_image.append(rec_i)

    n = len(per_image)
    if truth is not None and n_missing_truth == n:
        raise ValueError(f"data.root: none of the {n} held-out images of {cfg.data.root} is in the "
                         f"SynthPeople ground truth of {truth.root}")
    ori_f = np.concatenate(feats["ori"])
    fd: dict = {"metric": fd_name, "extractor": extractor.name,
                "reports_fid": bool(getattr(extractor, "reports_fid", False)),
                "dims": int(ori_f.shape[1])}
    for key, fake in (("recon", "rec"), ("novel", "novel"), ("90", "side")):
        fake_f = np.concatenate(feats[fake])
        if n >= 2:
            r = fd_score(ori_f, fake_f, extractor)
            fd[key] = {"value": r.value, "n_real": r.n_a, "n_fake": r.n_b}
        else:
            fd[key] = {"value": None, "n_real": n, "n_fake": int(fake_f.shape[0]),
                       "note": "a Fréchet distance needs at least 2 images per set"}

    metrics: dict = {
        "run_dir": str(run.resolve()),
        "data": {"reader": cfg.data.reader, "root": str(pathlib.Path(cfg.data.root).resolve()),
                 "split": "test", "n_images": n, "image_size": list(model.image_size)},
        "mask_iou_pct": 100.0 * float(np.mean([r["mask_iou"] for r in per_image])),
        "ssim_pct": 100.0 * float(np.mean([r["ssim"] for r in per_image])),
        "ssim_params": {"window": 11, "sigma": 1.5, "k1": 0.01, "k2": 0.03, "data_range": 1.0,
                        "composite": "both on white with the GT mask"},
        "fd": fd,
    }
    for key in ("recon", "novel", "90"):
        metrics[f"{fd_name}_{key}"] = fd[key]["value"]
    metrics["refine"] = {"steps": opts.refine_steps}
    if opts.refine_steps > 0:
        metrics["refine"].update(
            lr=predictor.refine_lr, params=list(DEFAULT_REFINED),
            seconds_per_image=refine_seconds / max(n, 1),
            loss_start_mean=_finite_mean([r["refine_loss_start"] for r in per_image]),
            loss_end_mean=_finite_mean([r["refine_loss_end"] for r in per_image]))
    metrics["predicted"] = {k: _stats([r[k] for r in per_image]) for k in
                            ("azimuth", "elevation", "distance", "bias_x", "bias_y", "mean_abs_delta")}
    metrics["synthpeople"] = None
    scored = [r for r in per_image if "chamfer" in r]
    if truth is not None:
        errs = camera_errors({k: [r[k] for r in scored] for k in ("azimuth", "elevation", "distance")},
                             {k: [r[f"gt_{k}"] for r in scored] for k in ("azimuth", "elevation", "distance")})
        metrics["synthpeople"] = {
            "gt_root": str(truth.root), "n_images": len(scored), "n_without_truth": n_missing_truth,
            "chamfer_points": opts.chamfer_points,
            "chamfer_l2": {
                "prediction_mean": _finite_mean([r["chamfer"] for r in scored]),
                "prediction_median": float(np.median([r["chamfer"] for r in scored])),
                "template_init_mean": _finite_mean([r["chamfer_template_init"] for r in scored]),
                "template_final_mean": _finite_mean([r["chamfer_template_final"] for r in scored]),
                "prediction_placed_mean": _finite_mean([r["chamfer_placed"] for r in scored]),
                "protocol": "points on faces, each mesh in its camera frame (templates at the true "
                            "camera) and centred on its bounding-box centre, divided by the true "
                            "mesh's bounding-box diagonal; squared L2, mean/mean. 'placed': "
                            "without centring (distance and look-at errors count too)",
            },
            "camera": errs.summary(),
            "novel_view_mask_iou_pct": 100.0 * _finite_mean([r["novel_view_mask_iou"] for r in scored]),
        }

    out = run.resolve()
    with run_directory(out.name, "eval", root=out.parent, overwrite=True) as tmp:
        pictures: list[str] = []
        if opts.pictures and opts.samples > 0:
            pictures = _write_pictures(tmp, run, predictor, dataset, per_image, truth_rows, opts)
        metrics["pictures"] = pictures
        metrics["options"] = asdict(opts)
        metrics["seconds"] = time.time() - t0
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (tmp / "metrics.md").write_text(markdown_report(metrics))
        with open(tmp / "per_image.jsonl", "w", encoding="utf-8") as fh:
            for r in per_image:
                fh.write(json.dumps(r) + "\n")
    return metrics


def _write_pictures(out: pathlib.Path, run: pathlib.Path, predictor, dataset, per_image,
                    truth_rows, opts: EvalCaslOptions) -> list[str]:
    model = predictor.model
    idx = viz.chosen_indices(len(dataset), opts.samples)
    x = torch.stack([dataset[i]["image"] for i in idx]).to(model.template.device)
    attrs = model.encode(x)
    if opts.refine_steps > 0:  # the pictures show what was scored
        attrs, _ = predictor.refine(x, attrs, opts.refine_steps, seed=opts.seed)
    names = [f"{k:02d}_{viz.safe_name(per_image[i]['path'])}" for k, i in enumerate(idx)]
    written = [viz.reconstruction_grid(out / "reconstructions.png", model, x, attrs, names)]
    written += viz.write_turntables(out / "turntables", model, x, attrs, names)
    if len(idx) >= 2:
        written.append(viz.texture_swap_grid(out / "texture_swap.png", model, x, attrs))
    pred = {k: [r[k] for r in per_image] for k in
            ("azimuth", "elevation", "distance", "bias_x", "bias_y", "mean_abs_delta")}
    rows = [r for r in truth_rows if r is not None]
    gt = None
    if rows:
        gt = {"azimuth": [r["azimuth"] for r in rows], "elevation": [r["elevation"] for r in rows],
              "distance": [r["distance"] for r in rows], "bias_x": [r["bx"] for r in rows],
              "bias_y": [r["by"] for r in rows]}
    written.append(viz.camera_histograms(out / "histograms.png", pred, gt))
    evo = viz.template_evolution(out / "template_evolution.gif", run, model.template_init,
                                 model.faces, model.face_uvs)
    if evo is not None:
        written.append(evo)
    written += viz.export_meshes(out / "meshes", model, attrs, names)
    return sorted(str(pathlib.Path(p).relative_to(out)) for p in written)


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------
def _fmt(v, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.{digits}f}"


def _refine_line(r: dict) -> str:
    n = int(r.get("steps", 0))
    if n <= 0:
        return ("Reconstructions: the network's prediction (no test-time refinement, "
                "refine_steps 0).")
    return (f"Reconstructions: the network's prediction refined at test time, **refine_steps {n}** "
            f"per image (beyond the papers; Adam lr {_fmt(r.get('lr'), 3)} on "
            f"{', '.join(r.get('params', []))}; refinement loss mean {_fmt(r.get('loss_start_mean'), 4)}"
            f" → {_fmt(r.get('loss_end_mean'), 4)}; {_fmt(r.get('seconds_per_image'), 2)} s per image).")


def markdown_report(m: dict) -> str:
    """The metrics dict as a markdown document with tables."""
    d = m["data"]
    fd = m["fd"]
    name = fd["metric"]
    lines = [
        f"# CASL evaluation: {pathlib.Path(m['run_dir']).name}", "",
        f"Held-out split of `{d['root']}` (reader `{d['reader']}`): {d['n_images']} images at "
        f"{d['image_size'][0]}x{d['image_size'][1]}.", "",
        _refine_line(m.get("refine") or {"steps": 0}), "",
        "| metric | value | N | notes |", "|---|---:|---:|---|",
        f"| MaskIoU (%) | {_fmt(m['mask_iou_pct'])} | {d['n_images']} | soft IoU, rendered soft "
        f"silhouette vs GT mask |",
        f"| SSIM (%) | {_fmt(m['ssim_pct'])} | {d['n_images']} | Gaussian 11x11, sigma 1.5, K1 0.01, "
        f"K2 0.03, range 1; both on white with the GT mask |",
    ]
    notes = {"recon": "inputs vs reconstructions", "novel": "inputs vs random azimuth and +90 deg",
             "90": "inputs vs predicted azimuth +-90 deg"}
    for key in ("recon", "novel", "90"):
        e = fd[key]
        lines.append(f"| {name}_{key} | {_fmt(e['value'])} | {e['n_real']} / {e['n_fake']} | "
                     f"{notes[key]} |")
    lines.append("")
    if fd["reports_fid"]:
        lines.append("FID: pytorch-fid Inception pool3 features (user-supplied weights); "
                     "biased at small N.")
    else:
        lines.append(f"{name}: Fréchet distance of {fd['dims']}-d features of a fixed seeded random "
                     f"CNN ({fd['extractor']}); **not FID**, not comparable to published numbers, "
                     f"only between runs with the same extractor. Biased at small N.")
    s = m.get("synthpeople")
    if s:
        c, cam = s["chamfer_l2"], s["camera"]
        lines += [
            "", f"## SynthPeople 3D truth ({s['n_images']} images)", "",
            "| metric | value | notes |", "|---|---:|---|",
            f"| Chamfer-L2, prediction (mean / median) | {_fmt(c['prediction_mean'], 4)} / "
            f"{_fmt(c['prediction_median'], 4)} | each mesh in its camera frame, centred, unit GT "
            f"diagonal |",
            f"| Chamfer-L2, initial template at true camera | {_fmt(c['template_init_mean'], 4)} | "
            f"baseline |",
            f"| Chamfer-L2, learned template at true camera | {_fmt(c['template_final_mean'], 4)} | "
            f"baseline |",
            f"| Chamfer-L2, prediction not centred (mean) | {_fmt(c['prediction_placed_mean'], 4)} | "
            f"predicted distance and look-at count too |",
            f"| azimuth error (deg), median / mean | {_fmt(cam['azimuth_median_deg'], 1)} / "
            f"{_fmt(cam['azimuth_mean_deg'], 1)} | wrapped to [0, 180] |",
            f"| elevation error (deg), median / mean | {_fmt(cam['elevation_median_deg'], 1)} / "
            f"{_fmt(cam['elevation_mean_deg'], 1)} | |",
            f"| distance error (relative), median / mean | {_fmt(cam['distance_rel_median'], 3)} / "
            f"{_fmt(cam['distance_rel_mean'], 3)} | abs(d - d_true) / d_true |",
            f"| novel-view MaskIoU at true azimuth +90 (%) | {_fmt(s['novel_view_mask_iou_pct'])} | "
            f"hard silhouettes, true camera otherwise |",
        ]
    p = m["predicted"]
    lines += ["", "## Predicted parameters", "", "| parameter | min | max | mean | median |",
              "|---|---:|---:|---:|---:|"]
    for k, v in p.items():
        lines.append(f"| {k} | {_fmt(v['min'], 3)} | {_fmt(v['max'], 3)} | {_fmt(v['mean'], 3)} | "
                     f"{_fmt(v['median'], 3)} |")
    if m.get("pictures"):
        lines += ["", "## Pictures", ""] + [f"- `{p}`" for p in m["pictures"]]
    return "\n".join(lines) + "\n"
