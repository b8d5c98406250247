"""CLI command ``eval-casl`` (thin; see :mod:`mirror3d.models.casl.evaluate`).

    python -m mirror3d eval-casl RUN_DIR [--data.root DIR] [--max-images N] [--no-pictures]
"""

from __future__ import annotations

import argparse

_DATA = "data_override:"


class EvalCaslCommand:
    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run_dir", metavar="RUN_DIR", help="a train-casl run directory")
        parser.add_argument("--max-images", type=int, default=0, metavar="N",
                            help="evaluate at most N held-out images (0 = all; replaces the run's data.max_test)")
        parser.add_argument("--batch-size", type=int, default=16, metavar="B")
        parser.add_argument("--seed", type=int, default=0, help="seed of the random novel views")
        parser.add_argument("--samples", type=int, default=6, metavar="K",
                            help="test images shown in the pictures (turntables, meshes, grids)")
        parser.add_argument("--chamfer-points", type=int, default=10000, metavar="N",
                            help="surface points per mesh for the SynthPeople Chamfer distance")
        parser.add_argument("--no-pictures", action="store_true", help="metrics only")
        parser.add_argument("--fid-model", default=None, metavar="FILE",
                            help="TorchScript file of the pytorch-fid TF-Inception pool3 network "
                                 "(then the distances are reported as FID, else as FD_randcnn)")
        parser.add_argument("--progress", action="store_true", help="show a progress bar")
        from mirror3d.utils.config import config_fields
        from mirror3d.platform.casl_trainer import CaslDataConfig

        group = parser.add_argument_group(
            "data (overrides of the run's data config; default: as trained)")
        for f in config_fields(CaslDataConfig):
            kwargs = {"dest": _DATA + f.key, "metavar": f.metavar, "default": argparse.SUPPRESS,
                      "help": " ".join(x for x in (f.help, f"[{f.describe()}]") if x).replace("%", "%%")}
            if f.is_bool:
                kwargs.update(nargs="?", const="true")
            group.add_argument(f"--data.{f.key}", **kwargs)
        parser.set_defaults(overrides=[])

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from mirror3d.models.casl.evaluate import EvalCaslOptions, evaluate_casl

        opts = EvalCaslOptions(max_images=args.max_images, batch_size=args.batch_size,
                               seed=args.seed, samples=args.samples,
                               chamfer_points=args.chamfer_points, pictures=not args.no_pictures,
                               fid_model=args.fid_model)
        tokens = [f"--data.{dest[len(_DATA):]}={value}" for dest, value in vars(args).items()
                  if dest.startswith(_DATA)]
        m = evaluate_casl(args.run_dir, tokens + list(args.overrides), opts, progress=args.progress)
        fd = m["fd"]
        name = fd["metric"]

        def f(v):
            return "n/a" if v is None else f"{v:.2f}"

        line = (f"eval-casl: N={m['data']['n_images']} MaskIoU {m['mask_iou_pct']:.1f}% "
                f"SSIM {m['ssim_pct']:.1f}% {name} recon/novel/90 {f(fd['recon']['value'])}/"
                f"{f(fd['novel']['value'])}/{f(fd['90']['value'])}")
        s = m.get("synthpeople")
        if s:
            line += (f"; SynthPeople: Chamfer {s['chamfer_l2']['prediction_mean']:.4f} "
                     f"(initial template {s['chamfer_l2']['template_init_mean']:.4f}), median "
                     f"azimuth error {s['camera']['azimuth_median_deg']:.1f} deg, novel-view "
                     f"MaskIoU {s['novel_view_mask_iou_pct']:.1f}%")
        print(line)
        print(f"eval-casl: wrote {m['run_dir']}/eval")
        return 0
