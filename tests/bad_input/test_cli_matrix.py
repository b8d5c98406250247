"""The bad-input matrix through the command line (``mirror3d.cli.main``), issue 16.

Each case gives one job one bad input (a path, a layout, a checkpoint, an output location, an
existing run, a config value) and asserts what a user can rely on: exit code ≠ 0 (2 for config
values and for an existing run name, 1 for the rest), exactly ONE line on stderr
(``mirror3d <job>: error: ...``, no traceback) naming the thing that is wrong, nothing written
(the case's folder and the shared inputs are byte-identical before and after: no run dir, no
shard, no settings file) and no Ray started (the error comes from the driver's checks, before
any Ray work; conftest.py makes ``ray.init`` raise). Every case is otherwise a valid command:
without its one bad input it would run (the trainers and lifting would start Ray).
"""

from __future__ import annotations

import pathlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
from PIL import Image

import dataset_fixtures as fx
from bad_input.bad_fixtures import (Inputs, changes, corrupt_file, malicious_checkpoint,
                                    one_error_line, snapshot)
from mirror3d.cli import main
from mirror3d.utils.checkpoint import save_checkpoint


@dataclass
class Case:
    """One bad command line and what its error line must say.

    Attributes:
        argv: the command line (after ``mirror3d``).
        code: the exit code (2: a config value or an existing run name, a ``ConfigError``;
            1: any other user error).
        words: what the error line must contain (case-insensitive): the key and/or the path.
        not_words: what it must not contain (a wrong explanation).
        forbidden: ``(module, attribute)`` of functions the job must not reach (e.g. the
            evaluation, when an output location is bad).
        any_of: the line must contain at least one of these (e.g. one of several bad files).
    """

    argv: list[str]
    code: int
    words: tuple[str, ...]
    not_words: tuple[str, ...] = ()
    forbidden: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    any_of: tuple[str, ...] = ()


CASES: dict[str, Callable[[Inputs, pathlib.Path], Case]] = {}


def case(name: str):
    """Register a case builder ``fn(inputs, work) -> Case`` under ``name``."""
    def register(fn):
        assert name not in CASES
        CASES[name] = fn
        return fn
    return register


# ---------------------------------------------------------------------------- helpers
def occupied(work: pathlib.Path) -> pathlib.Path:
    """A plain file where a folder is expected."""
    p = work / "occupied.txt"
    p.write_text("a file, not a folder\n")
    return p


def lift(inputs: Inputs, work: pathlib.Path, *extra: str, root: pathlib.Path | None = None
         ) -> list[str]:
    """A valid flat lift (Ray mode) plus ``extra``: only what ``extra`` breaks can fail."""
    return ["lift", "--root", str(root or inputs.market), "--out", str(work / "out"),
            "--runs_root", str(work / "runs"), "--name", "t", "--progress", "false",
            "--preview", "0", "--image_size", "8,16", "--num_points", "64", "--min_points", "0",
            *extra]


def lift_casl(inputs: Inputs, work: pathlib.Path, *extra: str) -> list[str]:
    """A valid casl-visible lift (masks from the Market-HQ-style tree) plus ``extra``."""
    masks = work / "masks"
    if not masks.exists():
        for img in sorted(inputs.market.rglob("*.jpg")):
            _, m = fx.person_pair(8, 16, (0.5, 0.8))
            fx.write_mask(masks / f"{img.stem}.png", m.astype(np.uint8) * 255)
    return lift(inputs, work, "--mode", "casl-visible", "--mask_dir", str(masks), *extra)


def casl(inputs: Inputs, work: pathlib.Path, *extra: str, root: pathlib.Path | None = None
         ) -> list[str]:
    """A valid tiny train-casl (Ray Train) plus ``extra``."""
    return ["train-casl", "--smoke", "--data.root", str(root or inputs.hq),
            "--data.image_size", "16,32", "--data.ratio_range", "0,1", "--data.clean_range",
            "0,1", "--optim.batch_size", "2", "--out_dir", str(work / "runs" / "casl"),
            "--name", "t", "--tracking.mlflow", "false", *extra]


def reid(inputs: Inputs, work: pathlib.Path, *extra: str) -> list[str]:
    """A valid tiny train-reid of OG-Net on the flat shards (Ray Train) plus ``extra``."""
    return ["train-reid", "--smoke", "--data.shards", str(inputs.shards),
            "--data.images", str(inputs.market), "--out_dir", str(work / "runs" / "ognet"),
            "--name", "t", "--tracking.mlflow", "false", *extra]


def hq_copy(inputs: Inputs, work: pathlib.Path) -> pathlib.Path:
    return pathlib.Path(shutil.copytree(inputs.hq, work / "hq"))


def earlier_run(folder: pathlib.Path, checkpoint: pathlib.Path | None = None) -> pathlib.Path:
    """A finished-looking run directory ``folder`` (config, metrics, final model)."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("name: earlier-run\n")
    (folder / "metrics.jsonl").write_text('{"epoch": 0, "loss": 1.0}\n{"epoch": 1, "loss": 0.5}\n')
    if checkpoint is not None:
        shutil.copy(checkpoint, folder / "model_final.pt")
    return folder


# ---------------------------------------------------------------------------- config values
@case("config-unknown-key")
def _(inputs, work):
    return Case(lift(inputs, work, "--num_point", "5"), 2, ("num_point",))


@case("config-wrong-type")
def _(inputs, work):
    return Case(lift(inputs, work, "--num_points", "many"), 2, ("num_points", "many"))


@case("config-unknown-preset")
def _(inputs, work):
    return Case(["train-casl", "--preset", "no-such-preset"], 2, ("no-such-preset",))


@case("config-file-missing")
def _(inputs, work):
    return Case(["train-reid", "--config", str(work / "absent.yaml")], 2, ("absent.yaml",))


@case("lift-shard-size-zero")
def _(inputs, work):
    return Case(lift(inputs, work, "--shard_size", "0"), 2, ("shard_size",))


@case("lift-shard-size-negative")
def _(inputs, work):
    return Case(lift(inputs, work, "--shard_size", "-3"), 2, ("shard_size",))


@case("lift-image-size-zero")
def _(inputs, work):
    return Case(lift(inputs, work, "--image_size", "0,0"), 2, ("image_size",))


@case("lift-max-pixels-zero")
def _(inputs, work):
    return Case(lift(inputs, work, "--max_pixels", "0"), 2, ("max_pixels",))


@case("lift-mask-mismatch-unknown")
def _(inputs, work):
    return Case(lift(inputs, work, "--mask_mismatch", "stretch"), 2, ("mask_mismatch", "stretch"))


@case("lift-unknown-reader")
def _(inputs, work):
    return Case(lift(inputs, work, "--reader", "viper"), 2, ("reader", "viper"))


@case("synth-zero-ids")
def _(inputs, work):
    return Case(["synth", "--smoke", "--out", str(work / "sp"), "--ids", "0"], 2, ("ids",))


# ---------------------------------------------------------------------------- lift: inputs
@case("lift-root-missing")
def _(inputs, work):
    return Case(lift(inputs, work, root=work / "no-such-dataset"), 1, ("no-such-dataset",))


@case("lift-root-is-file")
def _(inputs, work):
    return Case(lift(inputs, work, root=occupied(work)), 1, ("occupied.txt",))


@case("lift-root-wrong-layout")
def _(inputs, work):
    other = work / "holiday-photos"
    fx.write_rgb(other / "beach.jpg")
    return Case(lift(inputs, work, root=other), 1, ("holiday-photos",))


@case("lift-split-folders-empty")
def _(inputs, work):
    root = work / "Market-empty"
    for folder in ("bounding_box_train", "query", "bounding_box_test"):
        (root / folder).mkdir(parents=True)
    return Case(lift(inputs, work, root=root), 1, ("Market-empty",))


@case("lift-mask-dir-missing")
def _(inputs, work):
    return Case(lift(inputs, work, "--mode", "casl-visible", "--reconstructor", "oracle-template",
                     "--mask_dir", str(work / "no-masks-here")), 1, ("mask_dir", "no-masks-here"))


@case("lift-mask-dir-without-masks")
def _(inputs, work):
    (work / "empty-masks").mkdir()
    return Case(lift(inputs, work, "--mode", "casl-visible", "--reconstructor", "oracle-template",
                     "--mask_dir", str(work / "empty-masks")), 1, ("mask_dir", "empty-masks"))


@case("lift-casl-mode-without-masks")
def _(inputs, work):
    return Case(lift(inputs, work, "--mode", "casl-visible", "--reconstructor",
                     "oracle-template"), 1, ("mask_dir",))


@case("lift-checkpoint-missing")
def _(inputs, work):
    return Case(lift_casl(inputs, work, "--checkpoint", str(work / "absent.pt")), 1,
                ("checkpoint", "absent.pt"))


@case("lift-checkpoint-empty")
def _(inputs, work):
    return Case(lift_casl(inputs, work), 1, ("checkpoint",))


@case("lift-checkpoint-reid")
def _(inputs, work):
    """Issue: a re-id checkpoint given to jobs/lift.py --checkpoint failed inside Ray."""
    return Case(lift_casl(inputs, work, "--checkpoint", str(inputs.reid_ckpt)), 1,
                ("checkpoint", "casl", "reid"))


@case("lift-checkpoint-reid-run-dir")
def _(inputs, work):
    return Case(lift_casl(inputs, work, "--checkpoint", str(inputs.reid_run)), 1,
                ("checkpoint", "casl", "reid"))


@case("lift-checkpoint-corrupt")
def _(inputs, work):
    bad = corrupt_file(work / "broken.pt", b"PK\x03\x04")
    return Case(lift_casl(inputs, work, "--checkpoint", str(bad)), 1, ("checkpoint", "broken.pt"))


@case("lift-checkpoint-malicious-pickle")
def _(inputs, work):
    """A pickle posing as a checkpoint never runs (its payload would create a file in the
    case's folder, which the no-output check would see)."""
    bad = malicious_checkpoint(work / "evil.pt", work / "payload-ran")
    return Case(lift_casl(inputs, work, "--checkpoint", str(bad)), 1, ("checkpoint", "evil.pt"))


@case("lift-checkpoint-without-config")
def _(inputs, work):
    """Issue: the right tag but no config raised KeyError instead of CheckpointError."""
    bad = save_checkpoint(work / "noconfig.pt", "casl", {"model": {}})
    return Case(lift_casl(inputs, work, "--checkpoint", str(bad)), 1,
                ("noconfig.pt", "config"))


@case("lift-checkpoint-run-dir-empty")
def _(inputs, work):
    (work / "casl-run-without-model").mkdir()
    return Case(lift_casl(inputs, work, "--checkpoint", str(work / "casl-run-without-model")), 1,
                ("casl-run-without-model",))


@case("lift-reconstructor-unknown")
def _(inputs, work):
    return Case(lift_casl(inputs, work, "--reconstructor", "no_such_module:make"), 1,
                ("no_such_module",))


@case("lift-synth-truth-not-synthpeople")
def _(inputs, work):
    return Case(lift_casl(inputs, work, "--reconstructor", "synth-truth"), 1, ("synth",))


# ---------------------------------------------------------------------------- lift: outputs
@case("lift-out-is-file")
def _(inputs, work):
    out = occupied(work)
    argv = lift(inputs, work)
    argv[argv.index("--out") + 1] = str(out)
    return Case(argv, 1, ("occupied.txt",))


@case("lift-out-under-file")
def _(inputs, work):
    out = occupied(work) / "shards"
    argv = lift(inputs, work)
    argv[argv.index("--out") + 1] = str(out)
    return Case(argv, 1, ("occupied.txt",))


@case("lift-runs-root-is-file")
def _(inputs, work):
    argv = lift(inputs, work)
    argv[argv.index("--runs_root") + 1] = str(occupied(work))
    return Case(argv, 1, ("occupied.txt",))


@case("lift-existing-run-name")
def _(inputs, work):
    """An existing run name is refused without --overwrite (it was replaced). A lift run
    (summary, skipped list, pictures) is not continued: its shards resume by themselves."""
    earlier_run(work / "runs" / "lift" / "earlier-run")
    argv = lift(inputs, work)
    argv[argv.index("--name") + 1] = "earlier-run"
    return Case(argv, 2, ("earlier-run", "overwrite"))


# ---------------------------------------------------------------------------- train-casl
@case("casl-root-missing")
def _(inputs, work):
    return Case(casl(inputs, work, root=work / "no-such-hq"), 1, ("no-such-hq",))


@case("casl-root-is-file")
def _(inputs, work):
    return Case(casl(inputs, work, root=occupied(work)), 1, ("occupied.txt",))


@case("casl-root-wrong-layout")
def _(inputs, work):
    """A re-id tree given as a reconstruction (Market-HQ) tree."""
    return Case(casl(inputs, work, root=inputs.market), 1, ("Market-1501-v15.09.15",))


@case("casl-corrupt-images")
def _(inputs, work):
    """Issue: a corrupt image in a training set failed after 17-30 s inside Ray workers."""
    hq = hq_copy(inputs, work)
    names = []
    for img in sorted((hq / "pytorch" / "train_all").rglob("*.png")):
        corrupt_file(img, b"\x89PNG\r\n\x1a\n")
        names.append(img.name)
    return Case(casl(inputs, work, root=hq), 1, (), any_of=tuple(names))


@case("casl-masks-wrong-size")
def _(inputs, work):
    """Issue: a mask of the wrong size in a training set failed inside Ray workers."""
    hq = hq_copy(inputs, work)
    names = []
    for m in sorted((hq / "seg_hmr" / "train_all").rglob("*.png")):
        with Image.open(m) as im:
            values = np.asarray(im)
        fx.write_mask(m, np.pad(values, ((0, 3), (0, 2))))
        names += [m.name, m.name.rsplit("_", 1)[0]]
    return Case(casl(inputs, work, root=hq), 1, (), any_of=tuple(names))


@case("casl-images-without-masks")
def _(inputs, work):
    """Issue: images missing their masks were left out of CASL training with no count. Four of
    the five training images lose their mask: 20 % usable, below min_usable_fraction 0.5."""
    hq = hq_copy(inputs, work)
    masks = sorted((hq / "seg_hmr" / "train_all").rglob("*.png"))
    for m in masks[1:]:
        m.unlink()
    return Case(casl(inputs, work, root=hq), 1, ("no mask", "min_usable_fraction"))


@case("casl-min-usable-fraction-out-of-range")
def _(inputs, work):
    return Case(casl(inputs, work, "--data.min_usable_fraction", "1.5"), 2,
                ("min_usable_fraction",))


@case("casl-batch-larger-than-data")
def _(inputs, work):
    argv = casl(inputs, work)
    argv[argv.index("--optim.batch_size") + 1] = "64"
    return Case(argv, 1, ("batch_size",))


@case("casl-existing-run-name")
def _(inputs, work):
    """Issue: train-casl with an existing --name retrained into the same run dir."""
    earlier_run(work / "runs" / "casl" / "earlier-run", inputs.casl_ckpt)
    argv = casl(inputs, work)
    argv[argv.index("--name") + 1] = "earlier-run"
    return Case(argv, 2, ("earlier-run", "resume", "overwrite"))


@case("casl-resume-reid-checkpoint")
def _(inputs, work):
    return Case(casl(inputs, work, "--resume", str(inputs.reid_ckpt)), 1, ("casl", "reid"))


@case("casl-resume-missing")
def _(inputs, work):
    return Case(casl(inputs, work, "--resume", str(work / "absent-run")), 1, ("absent-run",))


@case("casl-out-dir-is-file")
def _(inputs, work):
    argv = casl(inputs, work)
    argv[argv.index("--out_dir") + 1] = str(occupied(work))
    return Case(argv, 1, ("occupied.txt",))


@case("casl-out-dir-under-file")
def _(inputs, work):
    argv = casl(inputs, work)
    argv[argv.index("--out_dir") + 1] = str(occupied(work) / "casl")
    return Case(argv, 1, ("occupied.txt",))


# ---------------------------------------------------------------------------- train-reid
@case("reid-shards-missing")
def _(inputs, work):
    argv = reid(inputs, work)
    argv[argv.index("--data.shards") + 1] = str(work / "no-such-shards")
    return Case(argv, 1, ("no-such-shards",))


@case("reid-shards-empty-folder")
def _(inputs, work):
    (work / "empty-shards").mkdir()
    argv = reid(inputs, work)
    argv[argv.index("--data.shards") + 1] = str(work / "empty-shards")
    return Case(argv, 1, ("empty-shards",))


@case("reid-shards-corrupt-parquet")
def _(inputs, work):
    shards = pathlib.Path(shutil.copytree(inputs.shards, work / "shards"))
    corrupt_file(shards / "train-00000.parquet", b"PAR1")
    argv = reid(inputs, work)
    argv[argv.index("--data.shards") + 1] = str(shards)
    return Case(argv, 1, ("train-00000.parquet",))


@case("reid-images-missing")
def _(inputs, work):
    argv = reid(inputs, work, "--model.name", "cnn2d-small")
    argv[argv.index("--data.images") + 1] = str(work / "no-such-images")
    return Case(argv, 1, ("no-such-images",))


@case("reid-2d-corrupt-training-images")
def _(inputs, work):
    """The 2D baseline's training images, all corrupt: found in the driver, named."""
    market = pathlib.Path(shutil.copytree(inputs.market, work / "Market-1501"))
    names = []
    for img in sorted((market / "bounding_box_train").glob("*.jpg")):
        corrupt_file(img)
        names.append(img.name)
    argv = reid(inputs, work, "--model.name", "cnn2d-small", "--data.image_size", "16,32")
    argv[argv.index("--data.images") + 1] = str(market)
    return Case(argv, 1, ("data.images",), any_of=tuple(names))


@case("reid-existing-run-name")
def _(inputs, work):
    earlier_run(work / "runs" / "ognet" / "earlier-run", inputs.reid_ckpt)
    argv = reid(inputs, work)
    argv[argv.index("--name") + 1] = "earlier-run"
    return Case(argv, 2, ("earlier-run", "resume", "overwrite"))


@case("reid-resume-casl-checkpoint")
def _(inputs, work):
    return Case(reid(inputs, work, "--resume", str(inputs.casl_ckpt)), 1, ("casl", "reid"))


@case("reid-out-dir-is-file")
def _(inputs, work):
    argv = reid(inputs, work)
    argv[argv.index("--out_dir") + 1] = str(occupied(work))
    return Case(argv, 1, ("occupied.txt",))


# ---------------------------------------------------------------------------- eval-casl
@case("eval-casl-checkpoint-file")
def _(inputs, work):
    """Issue: eval-casl given a checkpoint FILE said the run directory "does not exist"."""
    return Case(["eval-casl", str(inputs.casl_ckpt)], 1, ("model_final.pt",),
                not_words=("does not exist",))


@case("eval-casl-run-missing")
def _(inputs, work):
    return Case(["eval-casl", str(work / "no-such-run")], 1, ("no-such-run",))


@case("eval-casl-reid-run")
def _(inputs, work):
    return Case(["eval-casl", str(inputs.reid_run)], 1, ("casl", "reid"))


@case("eval-casl-empty-run-dir")
def _(inputs, work):
    (work / "unfinished-run").mkdir()
    return Case(["eval-casl", str(work / "unfinished-run")], 1, ("unfinished-run",))


# ---------------------------------------------------------------------------- eval-reid
_EVALUATE = (("mirror3d.jobs.eval_reid", "evaluate_model"),
             ("mirror3d.engine.reid_train", "evaluate_model"))


@case("eval-reid-run-missing")
def _(inputs, work):
    return Case(["eval-reid", str(work / "no-such-run")], 1, ("no-such-run",))


@case("eval-reid-casl-run")
def _(inputs, work):
    return Case(["eval-reid", str(inputs.casl_run)], 1, ("casl", "reid"))


@case("eval-reid-out-is-file")
def _(inputs, work):
    """Issue: eval-reid found a bad output location only after the whole evaluation."""
    return Case(["eval-reid", str(inputs.reid_run), "--out", str(occupied(work))], 1,
                ("occupied.txt",), forbidden=_EVALUATE)


@case("eval-reid-out-under-file")
def _(inputs, work):
    return Case(["eval-reid", str(inputs.reid_run), "--out", str(occupied(work) / "eval")], 1,
                ("occupied.txt",), forbidden=_EVALUATE)


@case("eval-reid-images-missing")
def _(inputs, work):
    return Case(["eval-reid", str(inputs.reid_run), "--images", str(work / "no-such-tree"),
                 "--out", str(work / "eval")], 1, ("no-such-tree",), forbidden=_EVALUATE)


# ---------------------------------------------------------------------------- synth, sweep
@case("synth-out-is-file")
def _(inputs, work):
    return Case(["synth", "--smoke", "--out", str(occupied(work))], 1, ("occupied.txt",))


@case("synth-out-under-file")
def _(inputs, work):
    return Case(["synth", "--smoke", "--out", str(occupied(work) / "sp")], 1, ("occupied.txt",))


@case("synth-out-foreign-folder")
def _(inputs, work):
    (work / "my-documents").mkdir()
    (work / "my-documents" / "thesis.txt").write_text("do not delete\n")
    return Case(["synth", "--smoke", "--out", str(work / "my-documents")], 1, ("my-documents",))


@case("turntable-out-dir-is-file")
def _(inputs, work):
    return Case(["turntable", "--smoke", "--out_dir", str(occupied(work))], 1, ("occupied.txt",))


# ---------------------------------------------------------------------------- pipeline, ablation
@case("pipeline-synth-out-is-file")
def _(inputs, work):
    return Case(["pipeline", "--smoke", "--synth.out", str(occupied(work)),
                 "--out_dir", str(work / "runs" / "pipeline")], 1, ("synth.out", "occupied.txt"))


@case("pipeline-out-dir-is-file")
def _(inputs, work):
    return Case(["pipeline", "--smoke", "--out_dir", str(occupied(work))], 1,
                ("out_dir", "occupied.txt"))


@case("ablate-casl-out-dir-is-file")
def _(inputs, work):
    return Case(["ablate-casl", "--smoke", "--base.data.root", str(inputs.hq),
                 "--out_dir", str(occupied(work))], 1, ("out_dir", "occupied.txt"))


# ---------------------------------------------------------------------------- serve
@case("serve-casl-is-a-reid-run")
def _(inputs, work):
    return Case(["serve", "--casl", str(inputs.reid_run), "--reid", str(inputs.reid_run)], 1,
                ("casl", "re-id"))


@case("serve-casl-run-missing")
def _(inputs, work):
    return Case(["serve", "--casl", str(work / "no-such-run"), "--reid", str(inputs.reid_run)],
                1, ("no-such-run",))


@case("sweep-unknown-spec")
def _(inputs, work):
    return Case(["sweep", "no_such_spec"], 2, ("no_such_spec",))


# ---------------------------------------------------------------------------- the test
@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_before_ray_and_leaves_nothing(name, inputs, work, capsys,
                                                             monkeypatch):
    c = CASES[name](inputs, work)
    for module, attr in c.forbidden:
        def reached(*args, _what=f"{module}.{attr}", **kwargs):
            raise AssertionError(f"{_what} was reached: the bad input must be found first")
        monkeypatch.setattr(f"{module}.{attr}", reached)
    capsys.readouterr()
    before = snapshot(work, inputs.root)
    code = main(c.argv)
    out, err = capsys.readouterr()
    prog = c.argv[0]
    line = one_error_line(err, prog)
    assert code == c.code, f"exit {code}, expected {c.code}: {line}"
    low = line.lower()
    for word in c.words:
        assert word.lower() in low, f"{word!r} not named in: {line}"
    for word in c.not_words:
        assert word.lower() not in low, f"{word!r} in: {line}"
    if c.any_of:
        assert any(w.lower() in low for w in c.any_of), f"none of {c.any_of[:3]} named in: {line}"
    assert changes(before, snapshot(work, inputs.root)) == []


def test_the_matrix_is_large_enough():
    assert len(CASES) >= 40
